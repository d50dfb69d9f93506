"""The Arm protocol the controller drives, its state type and its fault types. No franky here."""
from __future__ import annotations

import dataclasses
from typing import Protocol

import numpy as np


class ArmError(RuntimeError):
    """Base class of arm faults."""


class ArmNotConnectedError(ArmError):
    """A command or state read on an arm that is not connected."""


class ArmFaultError(ArmError):
    """The robot reported a fault (a franky ControlException, reflex, ...). `recover()` may clear it."""


class ArmPlannerError(ArmFaultError):
    """The motion's trajectory generator failed (franky: "Motion planner failed with error code N", a ruckig
    result): the motion stopped, the robot reported no reflex. `recover()` clears it."""


class GripperFaultError(ArmError):
    """The gripper reported a fault."""


@dataclasses.dataclass(frozen=True)
class ArmState:
    """One reading of the arm. Positions in the base frame (m), orientation as a matrix and (x, y, z, w)."""

    position_m: np.ndarray  # (3,) TCP position
    rotation: np.ndarray  # (3, 3) TCP orientation
    q_rad: np.ndarray  # (7,)
    dq_rad_s: np.ndarray  # (7,)
    gripper_width_m: float
    in_motion: bool = False
    time_s: float | None = None  # the robot's own clock at this reading (franky: RobotState.time); None = unknown
    commanded_position_m: np.ndarray | None = None  # (3,) TCP position the motion generator commands now


class Arm(Protocol):
    """What the controller needs from an arm. Every motion call returns at once (asynchronous)."""

    def connect(self) -> None:
        """Connect (idempotent). Raises ArmError when the robot cannot be reached."""

    def close(self) -> None:
        """Stop motion and disconnect."""

    @property
    def connected(self) -> bool: ...

    def state(self) -> ArmState:
        """Current state. Raises ArmNotConnectedError."""

    def move_to(self, position_m: np.ndarray, rotation: np.ndarray) -> None:
        """Start moving the TCP to an absolute pose; replaces any running Cartesian target. Non-blocking."""

    def start_joint_motion(self, q_rad: np.ndarray) -> None:
        """Start moving to joint positions (homing). Non-blocking: `poll()` turns False when it is done. Refused
        (ArmFaultError) while another motion runs: `stop()` that one and wait for `poll()` first."""

    def poll(self) -> bool:
        """Whether a motion is running; raises ArmFaultError for a fault stored by a finished motion."""

    def stop(self) -> None:
        """Stop motion at once (e-stop path)."""

    def set_speed_limits(self, translation_m_s: float, rotation_rad_s: float, joint_rad_s) -> None:
        """Cap the arm's own trajectory generator: TCP translation (m/s, per axis) and rotation (rad/s) of Cartesian
        motions, joint speeds (7 values, rad/s) of joint motions. Takes effect at the next motion started while no
        motion runs (franky may only change limits then); applied again on every connect."""

    def set_gripper(self, open_: bool) -> None:
        """Open or close the gripper without blocking arm motion."""

    def poll_gripper(self) -> None:
        """Raise GripperFaultError for a failed gripper command, once."""

    def recover(self) -> bool:
        """Clear faults (automatic error recovery). Returns whether it succeeded."""

"""`FrankyArm`: the Arm protocol over franky (libfranka). The only module of the package that imports franky.

Works the same against a real FR3 (realtime_config "enforce") and franky-sim (realtime_config "ignore").
"""
from __future__ import annotations

import dataclasses
import functools
import gc
import os
import threading

import numpy as np

from ..core.geometry import matrix_to_quat, quat_to_matrix
from .arm import ArmError, ArmFaultError, ArmNotConnectedError, ArmPlannerError, ArmState, GripperFaultError

_REALTIME = ("enforce", "ignore")


@dataclasses.dataclass(frozen=True)
class FrankyArmConfig:
    robot_host: str = dataclasses.field(default="127.0.0.1", metadata={"help": "robot FCI address (franky-sim: loopback)"})
    realtime_config: str = dataclasses.field(
        default="enforce", metadata={"help": "franky RealtimeConfig: enforce (real robot, RT kernel), ignore (sim)"})
    relative_dynamics_factor: float = dataclasses.field(
        default=0.2, metadata={"help": "scales franky's velocity/acceleration/jerk limits, in (0, 1]"})
    gripper_speed_m_s: float = dataclasses.field(default=0.05, metadata={"help": "gripper finger speed (m/s)"})
    gripper_force_n: float = dataclasses.field(default=40.0, metadata={"help": "grasp force (N)"})
    gripper_open_width_m: float = dataclasses.field(default=0.08, metadata={"help": "width when opened (m)"})
    use_gripper: bool = dataclasses.field(default=True, metadata={"help": "connect the Franka Hand"})

    def __post_init__(self) -> None:
        if self.realtime_config not in _REALTIME:
            raise ValueError(f"realtime_config={self.realtime_config!r} must be one of {_REALTIME}")
        if not 0 < self.relative_dynamics_factor <= 1:
            raise ValueError(f"relative_dynamics_factor={self.relative_dynamics_factor} must be in (0, 1]")
        if not 0 < self.gripper_speed_m_s <= 0.1:
            raise ValueError(f"gripper_speed_m_s={self.gripper_speed_m_s} must be in (0, 0.1]")
        if not 0 < self.gripper_force_n <= 140:
            raise ValueError(f"gripper_force_n={self.gripper_force_n} must be in (0, 140]")
        if not 0 < self.gripper_open_width_m <= 0.08:
            raise ValueError(f"gripper_open_width_m={self.gripper_open_width_m} must be in (0, 0.08]")


def _fault_type(exc: Exception) -> type[ArmFaultError]:
    """franky raises its MotionPlannerException as a plain RuntimeError: tell it apart by its message."""
    return ArmPlannerError if "Motion planner failed" in str(exc) else ArmFaultError


def requires_connection(method):
    """Raise ArmNotConnectedError instead of touching a robot that is not connected, and turn franky's own
    exceptions (NetworkException, ControlException, ...) into ArmFaultError so callers handle one family."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        if self._robot is None:
            raise ArmNotConnectedError(f"{method.__name__}: arm at {self.config.robot_host} is not connected")
        try:
            return method(self, *args, **kwargs)
        except ArmError:
            raise
        except Exception as exc:
            # franky's exception types, and RuntimeError for libfranka errors pybind11 passes through
            # untranslated (e.g. "Net Exception" when a state read races a motion start)
            if not (type(exc).__module__.startswith("franky") or type(exc) is RuntimeError):
                raise
            raise ArmFaultError(f"{method.__name__}: {type(exc).__name__}: {exc}") from exc

    return wrapper


class FrankyArm:
    """Arm over franky. Cartesian targets are absolute TCP poses sent as asynchronous CartesianMotions;
    a new target replaces the running one (franky replans with Ruckig). The gripper runs on its own futures."""

    def __init__(self, config: FrankyArmConfig = FrankyArmConfig()) -> None:
        self.config = config
        self._robot = None
        self._gripper = None
        self._gripper_future = None
        self._last_width_m = 0.0
        self._gripper_open: bool | None = None  # the last state sent to the hand
        self._gripper_wanted: bool | None = None  # the last state asked for
        self._lock = threading.Lock()  # franky's Robot is not documented as thread-safe
        self._speed_limits: tuple | None = None  # (translation m/s, rotation rad/s, joints (7,) rad/s)
        self._limits_applied = False
        self._defaults = None  # franky's own limits (the robot's maxima), read at the first application

    @property
    def connected(self) -> bool:
        return self._robot is not None

    def connect(self) -> None:
        import franky

        if self._robot is not None:
            return
        realtime = {"enforce": franky.RealtimeConfig.Enforce,
                    "ignore": franky.RealtimeConfig.Ignore}[self.config.realtime_config]
        try:
            robot = franky.Robot(self.config.robot_host, realtime_config=realtime)
            if self.config.realtime_config == "ignore":
                # libfranka raises the constructing thread to SCHED_FIFO 99 whenever it may (always as root),
                # even with Ignore; threads started later inherit it, and a busy FIFO-99 thread starves the
                # rest of the machine (the simulator first). Without a realtime kernel RT buys nothing.
                os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
            robot.relative_dynamics_factor = self.config.relative_dynamics_factor
            robot.recover_from_errors()
            gripper = franky.Gripper(self.config.robot_host) if self.config.use_gripper else None
        except Exception as exc:  # franky raises its own exception types (NetworkException, ...)
            raise ArmFaultError(f"cannot connect to the robot at {self.config.robot_host}: {exc}") from exc
        self._robot, self._gripper = robot, gripper
        self._defaults = None
        self._limits_applied = False
        self._apply_speed_limits()

    def set_speed_limits(self, translation_m_s: float, rotation_rad_s: float, joint_rad_s) -> None:
        """See Arm.set_speed_limits. franky scales its limits by relative_dynamics_factor, so the value set is
        limit / factor (capped at the robot's own maximum, which franky holds as the limit's default)."""
        joints = np.broadcast_to(np.asarray(joint_rad_s, float), (7,)).copy()
        values = np.concatenate([[translation_m_s, rotation_rad_s], joints])
        if not (np.all(np.isfinite(values)) and np.all(values > 0)):
            raise ValueError(f"speed limits must be finite and > 0, got translation_m_s={translation_m_s}, "
                             f"rotation_rad_s={rotation_rad_s}, joint_rad_s={joints.tolist()}")
        self._speed_limits = (float(translation_m_s), float(rotation_rad_s), joints)
        self._limits_applied = False
        if self._robot is not None:
            self._apply_speed_limits()

    def _apply_speed_limits(self) -> None:
        """Write the limits into franky; only possible while no motion runs, so retried before each motion."""
        if self._speed_limits is None or self._limits_applied or self._robot is None:
            return
        r = self._robot
        if r.is_in_control:
            return  # a motion runs: franky refuses to change limits now
        if self._defaults is None:
            self._defaults = (r.translation_velocity_limit.get(), r.rotation_velocity_limit.get(),
                              np.array(r.joint_velocity_limit.get(), float))
        factor = float(r.relative_dynamics_factor.velocity)
        translation, rotation, joints = self._speed_limits
        top_t, top_r, top_q = self._defaults
        try:
            r.translation_velocity_limit.set(min(translation / factor, top_t))
            r.rotation_velocity_limit.set(min(rotation / factor, top_r))
            r.joint_velocity_limit.set(np.minimum(joints / factor, top_q).tolist())
        except Exception as exc:  # noqa: BLE001  (franky: "cannot be set while the robot is in control")
            raise ArmFaultError(f"cannot set the arm's speed limits: {exc}") from exc
        self._limits_applied = True

    def close(self, release: bool = True) -> None:
        """Stop the arm, let a running gripper command finish (dropping its future mid-flight crashes the
        client when the server goes away), then release franky's objects.

        release=False keeps franky's objects: their C++ destructors can block for good when the robot (or
        franky-sim) is already gone, so a process that is about to exit skips them (see the controller node)."""
        if self._robot is not None:
            try:
                self._robot.stop()
            except Exception:
                pass
        if self._gripper_future is not None:
            try:
                self._gripper_future.wait(3.0)
            except Exception:
                pass
            if release:
                self._gripper_future = None
        if release:
            self._robot = None
            self._gripper = None
            gc.collect()

    @requires_connection
    def state(self) -> ArmState:
        import franky

        with self._lock:
            rs = self._robot.state  # one reading: pose, joints and the robot's clock belong together
            # The TCP pose from the measured joints through the robot's own kinematic model. franky-sim's O_T_EE
            # is not the measured pose: it returns pinocchio's frame placement by reference, which the desired-pose
            # computation overwrites, so it reports the kinematics of q_d (the IK target) while the arm lags or is
            # blocked. On a real FR3 both agree.
            pose = self._robot.model.pose(franky.Frame.EndEffector, rs)
        commanded = rs.O_T_EE_c
        width = self._gripper_width()
        return ArmState(position_m=np.array(pose.translation, float), rotation=quat_to_matrix(np.array(pose.quaternion)),
                        q_rad=np.array(rs.q, float), dq_rad_s=np.array(rs.dq, float), gripper_width_m=width,
                        time_s=rs.time.to_sec(), commanded_position_m=np.array(commanded.translation, float))

    def _gripper_width(self) -> float:
        """Measured finger width; the last good one when a read fails (a UDP timeout while the hand is busy
        must not cost the arm's state)."""
        if self._gripper is None:
            return 0.0
        try:
            self._last_width_m = float(self._gripper.width)
        except Exception:  # noqa: BLE001
            pass
        return self._last_width_m

    @requires_connection
    def move_to(self, position_m: np.ndarray, rotation: np.ndarray) -> None:
        import franky

        target = franky.Affine(np.asarray(position_m, float), matrix_to_quat(np.asarray(rotation, float)))
        motion = franky.CartesianMotion(target, franky.ReferenceType.Absolute)
        with self._lock:
            try:
                self._apply_speed_limits()
                self._robot.move(motion, asynchronous=True)
            except Exception as exc:
                raise _fault_type(exc)(f"move_to {np.round(position_m, 4).tolist()} failed: {exc}") from exc

    @requires_connection
    def start_joint_motion(self, q_rad: np.ndarray) -> None:
        import franky

        with self._lock:
            try:
                if not self._robot.poll_motion():  # a JointMotion may not replace a Cartesian one in flight
                    raise ArmFaultError("cannot start a joint motion while another motion runs; stop it first")
                self._apply_speed_limits()
                self._robot.move(franky.JointMotion([float(v) for v in q_rad]), asynchronous=True)
            except ArmFaultError:
                raise
            except Exception as exc:
                raise ArmFaultError(f"joint motion failed: {exc}") from exc

    @requires_connection
    def poll(self) -> bool:
        with self._lock:
            try:
                return not self._robot.poll_motion()  # franky: True once no motion runs (join_motion(0))
            except Exception as exc:
                raise _fault_type(exc)(f"motion fault: {exc}") from exc

    @requires_connection
    def stop(self) -> None:
        with self._lock:
            try:
                self._robot.stop()
            except Exception as exc:
                raise ArmFaultError(f"stop failed: {exc}") from exc

    @requires_connection
    def set_gripper(self, open_: bool) -> None:
        """Ask for open/closed. Never blocks: the hand runs one command at a time (a second command sent while
        one is in flight hangs the client on franky-sim), so a change waits until the running one finishes
        and is sent by `poll_gripper`."""
        if self._gripper is None:
            return
        self._gripper_wanted = bool(open_)
        self._dispatch_gripper()

    def _dispatch_gripper(self) -> None:
        if self._gripper_wanted is None or self._gripper_wanted == self._gripper_open:
            return
        if self._gripper_future is not None:
            if not self._gripper_future.wait(0):
                return  # still running; poll_gripper sends the change when it finishes
            self._collect_gripper()
        c = self.config
        try:
            if self._gripper_wanted:
                self._gripper_future = self._gripper.move_async(c.gripper_open_width_m, c.gripper_speed_m_s)
            else:  # wide epsilons: "closed" succeeds on any object up to the open width, or on nothing
                self._gripper_future = self._gripper.grasp_async(0.0, c.gripper_speed_m_s, c.gripper_force_n,
                                                                 epsilon_inner=0.1, epsilon_outer=0.1)
        except Exception as exc:
            raise GripperFaultError(f"gripper {'open' if self._gripper_wanted else 'close'} failed: {exc}") from exc
        self._gripper_open = self._gripper_wanted

    def _collect_gripper(self) -> None:
        future, self._gripper_future = self._gripper_future, None
        try:
            future.get()
        except Exception as exc:
            raise GripperFaultError(f"gripper command failed: {exc}") from exc

    @property
    def gripper_open_commanded(self) -> bool:
        """The last state asked for (True before any request)."""
        return True if self._gripper_wanted is None else self._gripper_wanted

    def poll_gripper(self) -> None:
        """Surface a failed gripper command (GripperFaultError) and send a change that was waiting."""
        if self._gripper_future is not None and self._gripper_future.wait(0):
            self._collect_gripper()
        self._dispatch_gripper()

    @requires_connection
    def recover(self) -> bool:
        with self._lock:
            try:
                return bool(self._robot.recover_from_errors())
            except Exception:
                return False

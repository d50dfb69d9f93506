"""Plain data types shared by the core, the runtime and the nodes (no ROS types here)."""
from __future__ import annotations

import dataclasses
import enum

import numpy as np

ACTION_SPACE_DELTA_EE = "franka_delta_ee"
DELTA_EE_DIM_NAMES = ("dx_m", "dy_m", "dz_m", "droll_rad", "dpitch_rad", "dyaw_rad", "gripper")
# State vector fed to the policy (8): end-effector position, orientation as extrinsic XYZ angles,
# measured gripper width, and the last commanded gripper state (1 = open, 0 = closed).
# roll_rad is wrapped to [0, 2*pi), not (-pi, pi]: a Franka works with its tool pointing down (roll = pi), where
# the usual convention jumps between +pi and -pi on sensor noise; a learned policy would see a 6.28 rad step in
# one input for no motion at all. Messages (RobotState.ee_rpy_rad) keep the usual (-pi, pi] convention.
STATE_DIM_NAMES = ("x_m", "y_m", "z_m", "roll_rad", "pitch_rad", "yaw_rad", "gripper_width_m", "gripper_open")


class TaskState(enum.IntEnum):
    """Mirrors the constants of vla_jepa_interfaces/TaskStatus."""

    IDLE = 0
    RUNNING = 1
    SUCCEEDED = 2
    FAILED = 3
    CANCELED = 4
    ABORTED = 5

    @property
    def is_terminal(self) -> bool:
        return self not in (TaskState.IDLE, TaskState.RUNNING)


@dataclasses.dataclass(frozen=True)
class Observation:
    """What a policy sees at one instant.

    images: camera name -> (H, W, 3) uint8 RGB; image_stamps_s: camera name -> capture time (s).
    state: (8,) float32 in STATE_DIM_NAMES order, or None when the robot state is unknown.
    extras: simulator ground truth for scripted policies (never used by a learned model).
    """

    images: dict[str, np.ndarray]
    image_stamps_s: dict[str, float]
    state: np.ndarray | None
    instruction: str
    task_id: str = ""
    extras: dict = dataclasses.field(default_factory=dict)

    @property
    def stamp_s(self) -> float:
        """Capture time of the oldest frame used (the chunk's stamp); 0 when there are no images."""
        return min(self.image_stamps_s.values()) if self.image_stamps_s else 0.0


@dataclasses.dataclass(frozen=True)
class ActionChunk:
    """A chunk of actions in robot units. actions: (horizon, action_dim) float32, row-major."""

    actions: np.ndarray
    step_period_s: float
    dim_names: tuple[str, ...] = DELTA_EE_DIM_NAMES
    action_space: str = ACTION_SPACE_DELTA_EE
    stamp_s: float = 0.0
    task_id: str = ""
    sequence: int = 0
    inference_ms: float = 0.0
    model_id: str = ""

    def __post_init__(self) -> None:
        if self.actions.ndim != 2:
            raise ValueError(f"actions must be (horizon, action_dim), got shape {self.actions.shape}")
        if self.actions.shape[1] != len(self.dim_names):
            raise ValueError(
                f"actions have {self.actions.shape[1]} columns but {len(self.dim_names)} dim_names {self.dim_names}")
        if not self.step_period_s > 0:
            raise ValueError(f"step_period_s must be > 0, got {self.step_period_s}")

    @property
    def horizon(self) -> int:
        return int(self.actions.shape[0])

    @property
    def action_dim(self) -> int:
        return int(self.actions.shape[1])


def robot_state_vector(ee_position_m, ee_rpy_rad, gripper_width_m: float, gripper_open: bool) -> np.ndarray:
    """The policy's 8-d state (STATE_DIM_NAMES order) from RobotState-like fields, roll wrapped to [0, 2*pi)
    (see STATE_DIM_NAMES). -> (8,) float32."""
    roll_rad, pitch_rad, yaw_rad = (float(a) for a in ee_rpy_rad)
    return np.array([*ee_position_m, roll_rad % (2 * np.pi), pitch_rad, yaw_rad, gripper_width_m,
                     1.0 if gripper_open else 0.0], dtype=np.float32)

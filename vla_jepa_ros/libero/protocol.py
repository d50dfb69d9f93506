"""The paper's LIBERO evaluation protocol as pure functions (numpy + OpenCV; no LIBERO, no torch).

VLA-JEPA's `examples/LIBERO/eval_libero.py` + `model2libero_interface.py`, as summarised in
docs/model.md section 3:
  * both cameras (agentview, wrist) are rendered upside down by LIBERO: rotate 180 degrees, then resize to
    224 px with INTER_AREA (the "client" size; the policy then resizes to its own input size);
  * state = eef_pos (3) + axis-angle of eef_quat (3) + gripper_qpos (2), raw;
  * the 7-step chunk runs open loop, then the model is queried again;
  * the model's chunk is de-normalised by the bundle (clip [-1, 1], min-max inverse, gripper snapped to {0, 1},
    1 = open); LIBERO's gripper command is then 1 - 2 * (g > 0.5): -1 opens, +1 closes;
  * 10 no-op steps first (objects settle), then at most `max_steps` policy steps per suite.

Two unit conventions for the six motion dims (`Units`):
  * "libero" (default, the released checkpoint and our collected LIBERO demonstrations): the model speaks
    LIBERO's controller units directly, a value in [-1, 1] per dim (1 = 0.05 m or 0.5 rad per 20 Hz step),
    state in the paper's layout above;
  * "robot" (a bundle trained on this stack's Franka data, DESIGN.md conventions): dx/dy/dz in metres and
    droll/dpitch/dyaw as extrinsic XYZ angles in radians, state as STATE_DIM_NAMES. They are converted to LIBERO's
    axis-angle controller units (divided by the full scale, clipped to [-1, 1]).
"""
from __future__ import annotations

import dataclasses
import math

import cv2
import numpy as np

from ..core.geometry import matrix_to_rotvec, matrix_to_rpy, quat_to_matrix, rpy_to_matrix
from ..core.types import robot_state_vector

CAMERAS = ("agentview", "robot0_eye_in_hand")  # LIBERO camera names, in the model's view order
IMAGE_KEYS = tuple(f"{c}_image" for c in CAMERAS)
CONTROL_RATE_HZ = 20.0
STEP_PERIOD_S = 1.0 / CONTROL_RATE_HZ
FULL_SCALE_POS_M = 0.05  # LIBERO OSC_POSE: an action of 1.0 moves 5 cm in one step
FULL_SCALE_ROT_RAD = 0.5  # ... or rotates 0.5 rad
NUM_WAIT_STEPS = 10
CLIENT_IMAGE_PX = 224
CHUNK_STEPS = 7
# Conventional max policy steps per suite (OpenVLA / VLA-JEPA eval scripts); LIBERO-PRO variants inherit them.
MAX_STEPS = {"libero_spatial": 220, "libero_object": 280, "libero_goal": 300, "libero_10": 520, "libero_90": 400}
PRO_SUFFIXES = ("_lan", "_object", "_swap", "_task")
INSTRUCTION_FROM_ENV = ("_lan", "_task")  # suites whose perturbed instruction lives only in the env
UNITS = ("libero", "robot")
# LIBERO-Plus table columns (paper) and which LIBERO-PRO suffix measures each here (None: not available offline).
PLUS_COLUMNS = (("Camera", None), ("Robot", None), ("Language", "_lan"), ("Light", None), ("Background", None),
                ("Noise", None), ("Layout", "_swap"), ("Object", "_object"), ("Task", "_task"))
LIBERO_STATE_NAMES = ("eef_x_m", "eef_y_m", "eef_z_m", "eef_axis_angle_x", "eef_axis_angle_y", "eef_axis_angle_z",
                      "gripper_qpos_left_m", "gripper_qpos_right_m")
LIBERO_ACTION_NAMES = ("dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper_open")


def base_suite(suite: str) -> str:
    """'libero_spatial_lan' -> 'libero_spatial'; unknown suites raise naming the known ones."""
    for s in MAX_STEPS:
        if suite == s or (suite.startswith(s + "_") and suite[len(s):] in PRO_SUFFIXES):
            return s
    raise ValueError(f"unknown LIBERO suite {suite!r}; known: {sorted(MAX_STEPS)} and their LIBERO-PRO variants "
                     f"with suffixes {PRO_SUFFIXES}")


def perturbation(suite: str) -> str:
    """'' for an original suite, else the LIBERO-PRO suffix ('_lan', '_object', '_swap', '_task')."""
    return suite[len(base_suite(suite)):]


def max_steps_for(suite: str) -> int:
    return MAX_STEPS[base_suite(suite)]


# ------------------------------------------------------------------------------------------------ observations

def upright(img: np.ndarray) -> np.ndarray:
    """LIBERO renders (H, W, 3) images upside down (OpenGL origin): rotate 180 degrees = flip both axes."""
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) image, got shape {img.shape}")
    return np.ascontiguousarray(img[::-1, ::-1])


def client_image(img: np.ndarray, size_px: int = CLIENT_IMAGE_PX) -> np.ndarray:
    """Raw LIBERO frame -> upright (size_px, size_px, 3) uint8, INTER_AREA as the reference client does."""
    if img.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got {img.dtype}")
    img = upright(img)
    if img.shape[:2] == (size_px, size_px):
        return img
    return cv2.resize(img, (size_px, size_px), interpolation=cv2.INTER_AREA)


def quat_xyzw_to_axis_angle(quat: np.ndarray) -> np.ndarray:
    """(4,) quaternion (x, y, z, w) -> (3,) axis-angle (robosuite's quat2axisangle, as the reference uses)."""
    q = np.asarray(quat, dtype=np.float64).reshape(4)
    w = min(max(q[3], -1.0), 1.0)
    den = math.sqrt(1.0 - w * w)
    if math.isclose(den, 0.0):
        return np.zeros(3)
    return q[:3] * 2.0 * math.acos(w) / den


def libero_state(obs: dict) -> np.ndarray:
    """Paper state (8,) float32: eef_pos (3), axis-angle (3), gripper_qpos (2)."""
    return np.concatenate([np.asarray(obs["robot0_eef_pos"], np.float64),
                           quat_xyzw_to_axis_angle(obs["robot0_eef_quat"]),
                           np.asarray(obs["robot0_gripper_qpos"], np.float64)]).astype(np.float32)


def robot_state(obs: dict, gripper_open: float) -> np.ndarray:
    """Stack state (8,) float32 in STATE_DIM_NAMES order: xyz, extrinsic XYZ angles (roll in [0, 2*pi), as
    core.types.robot_state_vector), finger width, commanded open."""
    rpy = matrix_to_rpy(quat_to_matrix(np.asarray(obs["robot0_eef_quat"], np.float64)))
    qpos = np.asarray(obs["robot0_gripper_qpos"], np.float64)
    return robot_state_vector(obs["robot0_eef_pos"], rpy, float(abs(qpos[0] - qpos[1])), gripper_open >= 0.5)


def observation_state(obs: dict, units: str, gripper_open: float = 1.0) -> np.ndarray:
    if units == "libero":
        return libero_state(obs)
    if units == "robot":
        return robot_state(obs, gripper_open)
    raise ValueError(f"units={units!r} must be one of {UNITS}")


# ------------------------------------------------------------------------------------------------ actions

def gripper_command(gripper_open: np.ndarray | float) -> np.ndarray:
    """Model gripper (1 = open, 0 = closed, thresholded at 0.5) -> LIBERO command 1 - 2 * (g > 0.5): -1 open, +1 close."""
    g = np.asarray(gripper_open, dtype=np.float64)
    return 1.0 - 2.0 * (g > 0.5)


def to_libero_actions(actions: np.ndarray, units: str = "libero") -> np.ndarray:
    """(H, 7) de-normalised chunk -> (H, 7) LIBERO env actions in [-1, 1] (float64, what env.step takes).

    units "libero": motion dims pass through (clipped to [-1, 1]); "robot": metres / extrinsic-XYZ radians are
    converted to LIBERO's axis-angle deltas and divided by the full scale (0.05 m, 0.5 rad), then clipped.
    """
    a = np.asarray(actions, dtype=np.float64)
    if a.ndim != 2 or a.shape[1] != 7:
        raise ValueError(f"expected a (horizon, 7) chunk, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"chunk has {int((~np.isfinite(a)).sum())} non-finite values")
    out = np.empty_like(a)
    if units == "libero":
        out[:, :6] = a[:, :6]
    elif units == "robot":
        out[:, :3] = a[:, :3] / FULL_SCALE_POS_M
        out[:, 3:6] = np.stack([rpy_to_rotvec(r) for r in a[:, 3:6]]) / FULL_SCALE_ROT_RAD
    else:
        raise ValueError(f"units={units!r} must be one of {UNITS}")
    out[:, :6] = np.clip(out[:, :6], -1.0, 1.0)
    out[:, 6] = gripper_command(a[:, 6])
    return out


def from_libero_action(action: np.ndarray) -> np.ndarray:
    """A LIBERO env action (7,) (gripper -1 open / +1 close) -> the dataset's action in "libero" units
    (motion dims as they are, gripper 1 = open, 0 = closed). Inverse of to_libero_actions for units "libero"."""
    a = np.asarray(action, dtype=np.float64).reshape(7)
    return np.concatenate([a[:6], [1.0 if a[6] < 0 else 0.0]]).astype(np.float32)


def rpy_to_rotvec(rpy: np.ndarray) -> np.ndarray:
    """Extrinsic XYZ angles (3,) -> rotation vector (3,) of the same rotation."""
    return matrix_to_rotvec(rpy_to_matrix(np.asarray(rpy, dtype=np.float64)))


@dataclasses.dataclass(frozen=True)
class ProtocolConfig:
    """Everything that decides one episode's rollout (the CLI's flags)."""

    suite: str = "libero_spatial"
    max_steps: int = 0  # 0: the suite's conventional value
    num_wait_steps: int = NUM_WAIT_STEPS
    camera_px: int = 256  # LIBERO render size
    client_image_px: int = CLIENT_IMAGE_PX  # reference client resize (INTER_AREA) before the policy
    execute_steps: int = CHUNK_STEPS  # open loop: run this many steps of each chunk, then re-query
    executor: bool = False  # run chunks through the stack's ChunkExecutor on sim time instead
    units: str = "libero"
    cheap_rendering: bool = True  # MSAA, reflections and shadows off
    hard_reset: bool = False

    def __post_init__(self) -> None:
        base_suite(self.suite)
        if self.max_steps < 0 or self.num_wait_steps < 0:
            raise ValueError(f"max_steps={self.max_steps} and num_wait_steps={self.num_wait_steps} must be >= 0")
        if self.camera_px < 16 or self.client_image_px < 16:
            raise ValueError(f"camera_px={self.camera_px} and client_image_px={self.client_image_px} must be >= 16")
        if self.execute_steps < 1:
            raise ValueError(f"execute_steps={self.execute_steps} must be >= 1")
        if self.units not in UNITS:
            raise ValueError(f"units={self.units!r} must be one of {UNITS}")

    @property
    def steps(self) -> int:
        return self.max_steps or max_steps_for(self.suite)

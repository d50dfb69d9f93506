"""The safety envelope: pure functions that turn a requested delta end-effector step into the target
actually sent, and say what was clipped and why.

franky-sim simulates no reflexes, joint limits or errors, so in simulation this envelope is the only guard;
on a real FR3 it sits in front of the robot's own reflexes. Order of the checks (each may clip):
  1. translation step length  <= min(max_step_m, max_speed_m_s * step_period_s)
  2. rotation step angle       <= min(max_step_rad, max_angular_speed_rad_s * step_period_s)
  3. target inside the workspace box, and z >= table_height_m + min_height_above_table_m
  4. target within max_lead_m of the *measured* position (the command can never run far ahead of the arm)
  5. tool axis within max_tilt_rad of pointing straight down (when max_tilt_rad < pi)
  6. tool heading (the yaw of its x axis about the vertical) inside yaw_range_rad (when narrower than the circle).
     The FR3's last joint turns with the heading: from the home pose (q7 = 0.785 rad) it reaches its limit near
     -128 deg (a real FR3 stops there with a joint-limit reflex; franky-sim just stalls the wrist). A learned policy
     that keeps turning one way winds it into the limit; the range stops the turn first. A target already outside
     the range may move back towards it but not further out.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from .geometry import matrix_to_rotvec, rotation_angle, rotvec_to_matrix, rpy_to_matrix


@dataclasses.dataclass(frozen=True)
class SafetyConfig:
    """Limits of the envelope. Positions in the robot base frame (m), angles in rad."""

    workspace_min_m: tuple[float, ...] = dataclasses.field(
        default=(0.2, -0.45, 0.0), metadata={"help": "workspace box lower corner x, y, z (base frame, m)"})
    workspace_max_m: tuple[float, ...] = dataclasses.field(
        default=(0.8, 0.45, 0.65), metadata={"help": "workspace box upper corner x, y, z (base frame, m)"})
    table_height_m: float = dataclasses.field(default=0.0, metadata={"help": "table top height (base frame, m)"})
    min_height_above_table_m: float = dataclasses.field(
        default=0.005, metadata={"help": "lowest allowed end-effector (TCP) height above the table (m)"})
    max_step_m: float = dataclasses.field(default=0.03, metadata={"help": "largest translation per step (m)"})
    max_step_rad: float = dataclasses.field(default=0.2, metadata={"help": "largest rotation per step (rad)"})
    max_speed_m_s: float = dataclasses.field(
        default=0.25, metadata={"help": "largest translation speed: step length / step_period_s (m/s)"})
    max_angular_speed_rad_s: float = dataclasses.field(
        default=1.5, metadata={"help": "largest rotation speed: step angle / step_period_s (rad/s)"})
    max_lead_m: float = dataclasses.field(
        default=0.05, metadata={"help": "largest distance between a target and the measured position (m)"})
    max_tilt_rad: float = dataclasses.field(
        default=np.pi, metadata={"help": "largest angle between the tool axis and straight down (rad; pi = off)"})
    yaw_range_rad: tuple[float, ...] = dataclasses.field(
        default=(-np.pi, np.pi), metadata={"help": "allowed tool heading: yaw of the tool x axis about the vertical, "
                                                   "min and max in [-pi, pi] (rad; [-pi, pi] = off)"})

    def __post_init__(self) -> None:
        lo, hi = np.asarray(self.workspace_min_m, float), np.asarray(self.workspace_max_m, float)
        if lo.shape != (3,) or hi.shape != (3,):
            raise ValueError(f"workspace_min_m={self.workspace_min_m} and workspace_max_m={self.workspace_max_m} "
                             "need 3 values each")
        if not np.all(lo < hi):
            raise ValueError(f"workspace_min_m={self.workspace_min_m} must be below workspace_max_m="
                             f"{self.workspace_max_m} on every axis")
        floor = self.table_height_m + self.min_height_above_table_m
        if not floor < hi[2]:
            raise ValueError(f"table floor {floor} m (table_height_m + min_height_above_table_m) must be below "
                             f"workspace_max_m z={hi[2]}")
        for name in ("max_step_m", "max_step_rad", "max_speed_m_s", "max_angular_speed_rad_s", "max_lead_m"):
            value = getattr(self, name)
            if not (np.isfinite(value) and value > 0):
                raise ValueError(f"{name}={value} must be a finite number > 0")
        if not 0 < self.max_tilt_rad <= np.pi:
            raise ValueError(f"max_tilt_rad={self.max_tilt_rad} must be in (0, pi]")
        yaw = np.asarray(self.yaw_range_rad, float)
        if yaw.shape != (2,) or not (-np.pi <= yaw[0] < yaw[1] <= np.pi):
            raise ValueError(f"yaw_range_rad={self.yaw_range_rad} must be [min, max] with -pi <= min < max <= pi")
        if self.min_height_above_table_m < 0:
            raise ValueError(f"min_height_above_table_m={self.min_height_above_table_m} must be >= 0")

    @property
    def floor_z_m(self) -> float:
        return max(self.table_height_m + self.min_height_above_table_m, self.workspace_min_m[2])


@dataclasses.dataclass(frozen=True)
class SafeTarget:
    """The command actually sent. position_m (3,), rotation (3, 3) in the base frame; `reasons` lists every
    clip applied (empty when the request passed unchanged); requested_* is what the step asked for."""

    position_m: np.ndarray
    rotation: np.ndarray
    requested_position_m: np.ndarray
    requested_rotation: np.ndarray
    reasons: tuple[str, ...] = ()

    @property
    def clipped(self) -> bool:
        return bool(self.reasons)


def clip_norm(v: np.ndarray, limit: float) -> tuple[np.ndarray, bool]:
    """Scale `v` down so that its norm is at most `limit`; returns (v, whether it was scaled)."""
    n = float(np.linalg.norm(v))
    if n <= limit:
        return v, False
    return v * (limit / n), True


def within_workspace(position_m: np.ndarray, config: SafetyConfig) -> bool:
    """Whether a TCP position lies in the workspace box and above the table floor."""
    p = np.asarray(position_m, float)
    lo = np.array(config.workspace_min_m, float)
    lo[2] = config.floor_z_m
    return bool(np.all(p >= lo - 1e-9) and np.all(p <= np.asarray(config.workspace_max_m) + 1e-9))


def clamp_to_workspace(position_m: np.ndarray, config: SafetyConfig) -> tuple[np.ndarray, list[str]]:
    """Clamp a position into the box and above the table floor; returns (position, reasons)."""
    p = np.asarray(position_m, float).copy()
    lo = np.array(config.workspace_min_m, float)
    hi = np.array(config.workspace_max_m, float)
    reasons = []
    for i, axis in enumerate("xyz"):
        if p[i] < lo[i]:
            reasons.append(f"{axis}={p[i]:.3f} m below workspace min {lo[i]:.3f} m")
            p[i] = lo[i]
        elif p[i] > hi[i]:
            reasons.append(f"{axis}={p[i]:.3f} m above workspace max {hi[i]:.3f} m")
            p[i] = hi[i]
    floor = config.floor_z_m
    if p[2] < floor:
        reasons.append(f"z={p[2]:.3f} m below table floor {floor:.3f} m")
        p[2] = floor
    return p, reasons


def limit_tilt(rotation: np.ndarray, max_tilt_rad: float) -> tuple[np.ndarray, str | None]:
    """Rotate a tool orientation back so that its z axis is within `max_tilt_rad` of straight down."""
    z = rotation[:, 2]
    down = np.array([0.0, 0.0, -1.0])
    tilt = float(np.arccos(np.clip(z @ down, -1.0, 1.0)))
    if tilt <= max_tilt_rad + 1e-9:
        return rotation, None
    axis = np.cross(z, down)
    norm = np.linalg.norm(axis)
    axis = axis / norm if norm > 1e-9 else np.array([1.0, 0.0, 0.0])
    correction = rotvec_to_matrix(axis * (tilt - max_tilt_rad))
    return correction @ rotation, f"tool tilt {tilt:.3f} rad > max {max_tilt_rad:.3f} rad"


def tool_heading_rad(rotation: np.ndarray) -> float | None:
    """Yaw of the tool x axis about the base vertical (rad, in (-pi, pi]); None when that axis is vertical."""
    x = rotation[:, 0]
    if np.hypot(x[0], x[1]) < 1e-6:
        return None
    return float(np.arctan2(x[1], x[0]))


def _outside_by(heading: float, lo: float, hi: float) -> float:
    """How far (rad) a heading lies outside [lo, hi], around the shorter way; 0 inside."""
    if lo <= heading <= hi:
        return 0.0
    return min((heading - hi) % (2 * np.pi), (lo - heading) % (2 * np.pi))


def limit_heading(rotation: np.ndarray, base_rotation: np.ndarray, yaw_range_rad: tuple[float, float]
                  ) -> tuple[np.ndarray, str | None]:
    """Turn a tool orientation about the vertical so that its heading is inside `yaw_range_rad` (to the nearer
    end), or, when `base_rotation` is already outside, no further outside than it is."""
    lo, hi = float(yaw_range_rad[0]), float(yaw_range_rad[1])
    heading = tool_heading_rad(rotation)
    out = 0.0 if heading is None else _outside_by(heading, lo, hi)
    if out == 0.0:
        return rotation, None
    base = tool_heading_rad(base_rotation)
    if base is not None and _outside_by(base, lo, hi) > 0.0:
        if out <= _outside_by(base, lo, hi) + 1e-9:
            return rotation, None  # on its way back
        goal = base
    else:
        goal = hi if (heading - hi) % (2 * np.pi) <= (lo - heading) % (2 * np.pi) else lo
    turn = (goal - heading + np.pi) % (2 * np.pi) - np.pi
    return (rotvec_to_matrix(np.array([0.0, 0.0, turn])) @ rotation,
            f"tool heading {heading:.3f} rad outside yaw_range_rad [{lo:.3f}, {hi:.3f}]")


def check_action(action: np.ndarray, action_dim: int = 7) -> str | None:
    """Reason a delta-EE action row cannot be used (wrong size, NaN/Inf), or None when it can."""
    a = np.asarray(action)
    if a.shape != (action_dim,):
        return f"action has shape {a.shape}, expected ({action_dim},)"
    if not np.all(np.isfinite(a)):
        bad = [i for i in range(a.size) if not np.isfinite(a[i])]
        return f"action has non-finite values at dims {bad}"
    return None


class SafetyEnvelope:
    """Applies `SafetyConfig` to one delta end-effector step. Stateless apart from its config."""

    def __init__(self, config: SafetyConfig = SafetyConfig()) -> None:
        self.config = config

    def apply(self, measured_position_m: np.ndarray, base_position_m: np.ndarray, base_rotation: np.ndarray,
              delta: np.ndarray, step_period_s: float) -> SafeTarget:
        """Clip one step.

        measured_position_m (3,): where the TCP is now. base_position_m (3,), base_rotation (3, 3): the pose the
        delta applies to (the previous target while streaming, else the measured pose). delta (6,): dx, dy, dz
        (m, base frame), droll, dpitch, dyaw (rad, extrinsic XYZ, applied in the base frame: R = R_d @ R_base).
        Raises ValueError for non-finite input or a non-positive step period.
        """
        c = self.config
        delta = np.asarray(delta, float)
        if delta.shape != (6,) or not np.all(np.isfinite(delta)):
            raise ValueError(f"delta must be 6 finite values, got {delta}")
        if not (np.isfinite(step_period_s) and step_period_s > 0):
            raise ValueError(f"step_period_s={step_period_s} must be > 0")
        for name, v in (("measured_position_m", measured_position_m), ("base_position_m", base_position_m),
                        ("base_rotation", base_rotation)):
            if not np.all(np.isfinite(v)):
                raise ValueError(f"{name} is not finite: {v}")
        base_p = np.asarray(base_position_m, float)
        base_r = np.asarray(base_rotation, float)
        reasons: list[str] = []

        r_delta = rpy_to_matrix(delta[3:])
        requested_p = base_p + delta[:3]
        requested_r = r_delta @ base_r

        step_limit = min(c.max_step_m, c.max_speed_m_s * step_period_s)
        dp, scaled = clip_norm(delta[:3], step_limit)
        if scaled:
            reasons.append(f"translation step {np.linalg.norm(delta[:3]):.4f} m > limit {step_limit:.4f} m")
        rot_limit = min(c.max_step_rad, c.max_angular_speed_rad_s * step_period_s)
        angle = rotation_angle(r_delta)
        if angle > rot_limit:
            reasons.append(f"rotation step {angle:.4f} rad > limit {rot_limit:.4f} rad")
            r_delta = rotvec_to_matrix(matrix_to_rotvec(r_delta) * (rot_limit / angle))

        position, box_reasons = clamp_to_workspace(base_p + dp, c)
        reasons += box_reasons
        measured = np.asarray(measured_position_m, float)
        lead, scaled = clip_norm(position - measured, c.max_lead_m)
        if scaled:
            reasons.append(f"target {np.linalg.norm(position - measured):.4f} m ahead of the arm > max_lead_m "
                           f"{c.max_lead_m:.4f} m")
            position, more = clamp_to_workspace(measured + lead, c)
            reasons += more
        rotation = r_delta @ base_r
        if c.max_tilt_rad < np.pi:
            rotation, why = limit_tilt(rotation, c.max_tilt_rad)
            if why:
                reasons.append(why)
        if tuple(c.yaw_range_rad) != (-np.pi, np.pi):
            rotation, why = limit_heading(rotation, base_r, c.yaw_range_rad)
            if why:
                reasons.append(why)
        return SafeTarget(position, rotation, requested_p, requested_r, tuple(reasons))

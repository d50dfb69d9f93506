"""The safety envelope and the measured-state monitor: pure code that turns a requested delta end-effector
step into a goal, the goal into the command actually sent each control tick, and watches the measured arm.

franky-sim simulates no reflexes, joint limits or errors, so in simulation this code is the only guard; on a
real FR3 it sits in front of the robot's own reflexes. Three layers (docs/safety.md says what each guarantees):

`SafetyEnvelope.apply` turns one chunk step into a *goal*. Order of the checks (each may clip):
  1. translation step length  <= min(max_step_m, max_speed_m_s * step_period_s)
  2. rotation step angle       <= min(max_step_rad, max_angular_speed_rad_s * step_period_s)
  3. target inside the workspace box, z >= table_height_m + min_height_above_table_m, and within max_reach_m
     of the base's vertical axis (farther, the FR3 cannot hold the tool pointing down)
  4. target within max_lead_m of the *measured* position (the command can never run far ahead of the arm)
  5. tool axis within max_tilt_rad of pointing straight down (when max_tilt_rad < pi)
  6. tool heading (the yaw of its x axis about the vertical) inside yaw_range_rad (when narrower than the circle).
     The FR3's last joint turns with the heading: from the home pose (q7 = 0.785 rad) it reaches its limit near
     -128 deg (a real FR3 stops there with a joint-limit reflex; franky-sim just stalls the wrist). A learned policy
     that keeps turning one way winds it into the limit; the range stops the turn first. A target already outside
     the range may move back towards it but not further out.

`limit_motion` turns the goal into the *command* sent at each control tick: it moves from the previous command
towards the goal by at most max_speed_m_s (less within max_speed_m_s * approach_time_s of a box face or the floor) and
max_angular_speed_rad_s times the time elapsed on the controller's
clock since that command (at most max_command_dt_s), and never leads the measured TCP by more than max_lead_m.
How chunks arrive, replace each other or what step period they declare cannot make the command faster.

`StateMonitor` checks the *measured* TCP every tick: box and floor (plus monitor_margin_m), reach, measured speed
(over monitor_speed_window_s of robot time, on two readings in a row), tilt and heading (plus
monitor_margin_rad). A breach is a protective stop for the controller, never a clip.
"""
from __future__ import annotations

import collections
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
    max_lead_rad: float = dataclasses.field(
        default=0.3, metadata={"help": "largest angle between the commanded and the measured orientation (rad)"})
    max_tilt_rad: float = dataclasses.field(
        default=np.pi, metadata={"help": "largest angle between the tool axis and straight down (rad; pi = off)"})
    yaw_range_rad: tuple[float, ...] = dataclasses.field(
        default=(-np.pi, np.pi), metadata={"help": "allowed tool heading: yaw of the tool x axis about the vertical, "
                                                   "min and max in [-pi, pi] (rad; [-pi, pi] = off)"})
    max_reach_m: float = dataclasses.field(
        default=0.8, metadata={"help": "largest horizontal distance of the TCP from the base's vertical axis (m); "
                                       "targets beyond are pulled in (the FR3 cannot reach them with the tool down)"})
    max_command_dt_s: float = dataclasses.field(
        default=0.05, metadata={"help": "most controller time one command may be credited with (s): after a stalled "
                                        "control loop the command still moves by at most max_speed_m_s * this"})
    approach_time_s: float = dataclasses.field(
        default=0.1, metadata={"help": "moving towards a box face or the floor, the command slows to the distance left "
                                       "/ this (s): the arm eases onto the face instead of overshooting it"})
    monitor_margin_m: float = dataclasses.field(
        default=0.01,
        metadata={"help": "measured TCP this far outside the box, floor or reach is a protective stop (m)"})
    monitor_speed_factor: float = dataclasses.field(
        default=1.6, metadata={"help": "measured TCP speed above this times max_speed_m_s, or rotation speed above "
                                       "this times max_angular_speed_rad_s, is a protective stop (>= 1)"})
    monitor_margin_rad: float = dataclasses.field(
        default=0.15, metadata={"help": "measured tilt or heading this far beyond max_tilt_rad / yaw_range_rad is a "
                                        "protective stop (rad)"})
    monitor_speed_window_s: float = dataclasses.field(
        default=0.03, metadata={"help": "measured speed is the displacement over at least this much robot time (s)"})

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
        for name in ("max_step_m", "max_step_rad", "max_speed_m_s", "max_angular_speed_rad_s", "max_lead_m",
                     "max_lead_rad", "max_reach_m", "max_command_dt_s", "approach_time_s", "monitor_margin_m",
                     "monitor_margin_rad",
                     "monitor_speed_window_s"):
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
        if not (np.isfinite(self.monitor_speed_factor) and self.monitor_speed_factor >= 1):
            raise ValueError(f"monitor_speed_factor={self.monitor_speed_factor} must be a finite number >= 1")
        if not np.hypot(*np.clip(0.0, lo[:2], hi[:2])) < self.max_reach_m:  # the box point nearest the axis
            raise ValueError(f"max_reach_m={self.max_reach_m} leaves no part of the workspace box "
                             f"{self.workspace_min_m}..{self.workspace_max_m} reachable")

    @property
    def monitor_max_speed_m_s(self) -> float:
        return self.monitor_speed_factor * self.max_speed_m_s

    @property
    def monitor_max_angular_speed_rad_s(self) -> float:
        return self.monitor_speed_factor * self.max_angular_speed_rad_s

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


def within_workspace(position_m: np.ndarray, config: SafetyConfig, margin_m: float = 0.0) -> bool:
    """Whether a TCP position lies in the workspace box, above the table floor and within max_reach_m of the
    base axis, each widened by `margin_m`."""
    return workspace_breach(position_m, config, margin_m) is None


def workspace_breach(position_m: np.ndarray, config: SafetyConfig, margin_m: float = 0.0) -> str | None:
    """How a TCP position lies outside the box / floor / reach widened by `margin_m` (value and limit), or None."""
    p = np.asarray(position_m, float)
    lo = np.array(config.workspace_min_m, float)
    lo[2] = config.floor_z_m
    hi = np.asarray(config.workspace_max_m, float)
    tol = margin_m + 1e-9
    for i, axis in enumerate("xyz"):
        if p[i] < lo[i] - tol:
            what = "table floor" if i == 2 and config.floor_z_m > config.workspace_min_m[2] else "workspace min"
            return f"{axis}={p[i]:.4f} m below {what} {lo[i]:.4f} m - margin {margin_m:.4f} m"
        if p[i] > hi[i] + tol:
            return f"{axis}={p[i]:.4f} m above workspace max {hi[i]:.4f} m + margin {margin_m:.4f} m"
    reach = float(np.hypot(p[0], p[1]))
    if reach > config.max_reach_m + tol:
        return f"reach {reach:.4f} m beyond max_reach_m {config.max_reach_m:.4f} m + margin {margin_m:.4f} m"
    return None


def clamp_to_workspace(position_m: np.ndarray, config: SafetyConfig) -> tuple[np.ndarray, list[str]]:
    """Clamp a position into the box, above the table floor and within max_reach_m of the base's vertical axis
    (pulled in horizontally); returns (position, reasons). Box and reach cylinder are convex, so a straight move
    between two clamped positions stays inside both."""
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
    reach = float(np.hypot(p[0], p[1]))
    if reach > config.max_reach_m:
        reasons.append(f"reach {reach:.3f} m beyond max_reach_m {config.max_reach_m:.3f} m")
        p[:2] *= config.max_reach_m / reach
        p[:2] = np.clip(p[:2], lo[:2], hi[:2])  # pulling in may leave the box on an axis: back onto its face
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


def tilt_rad(rotation: np.ndarray) -> float:
    """Angle between the tool z axis and straight down (rad)."""
    return float(np.arccos(np.clip(-rotation[2, 2], -1.0, 1.0)))


def rotate_towards(rotation: np.ndarray, goal: np.ndarray, max_angle_rad: float) -> tuple[np.ndarray, float]:
    """Turn `rotation` (3, 3) towards `goal` (3, 3) about their shortest axis by at most `max_angle_rad`;
    returns (rotation, the angle that was left between them before turning)."""
    turn = matrix_to_rotvec(goal @ rotation.T)
    angle = float(np.linalg.norm(turn))
    if angle <= max_angle_rad:
        return goal, angle
    return rotvec_to_matrix(turn * (max_angle_rad / angle)) @ rotation, angle


def distance_to_boundary_m(position_m: np.ndarray, direction: np.ndarray, config: SafetyConfig) -> float:
    """Distance (m) from `position_m` (3,) along `direction` (3,) to the first face of the box or the floor
    (inf when the direction is zero)."""
    n = float(np.linalg.norm(direction))
    if n < 1e-12:
        return np.inf
    u = np.asarray(direction, float) / n
    lo = np.array(config.workspace_min_m, float)
    lo[2] = config.floor_z_m
    hi = np.asarray(config.workspace_max_m, float)
    p = np.asarray(position_m, float)
    out = np.inf
    for i in range(3):
        if u[i] > 1e-12:
            out = min(out, max(hi[i] - p[i], 0.0) / u[i])
        elif u[i] < -1e-12:
            out = min(out, max(p[i] - lo[i], 0.0) / -u[i])
    return out


def limit_motion(goal_position_m: np.ndarray, goal_rotation: np.ndarray, previous_position_m: np.ndarray,
                 previous_rotation: np.ndarray, measured_position_m: np.ndarray, elapsed_s: float,
                 config: SafetyConfig, measured_rotation: np.ndarray | None = None
                 ) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """The command for this control tick: from the previous command towards the goal, no faster than the limits.

    goal_* (3,), (3, 3): where the envelope wants the TCP. previous_* : the last command (the measured pose when
    there is none). elapsed_s: controller time since that command (credited up to max_command_dt_s; negative or
    non-finite counts as 0). Returns (position (3,), rotation (3, 3), reasons for every limit that bound).
    The position also stays within max_lead_m of the measured TCP and inside the box, floor and reach; the
    rotation within max_lead_rad of `measured_rotation` (3, 3) when given.
    """
    c = config
    dt = float(elapsed_s) if np.isfinite(elapsed_s) else 0.0
    dt = min(max(dt, 0.0), c.max_command_dt_s)
    prev_p = np.asarray(previous_position_m, float)
    reasons = []
    to_goal = np.asarray(goal_position_m, float) - prev_p
    speed = min(c.max_speed_m_s, distance_to_boundary_m(prev_p, to_goal, c) / c.approach_time_s)
    move, scaled = clip_norm(to_goal, speed * dt)
    if scaled and speed >= c.max_speed_m_s:
        reasons.append(f"speed: {c.max_speed_m_s} m/s over {dt:.4f} s")
    position = prev_p + move
    measured = np.asarray(measured_position_m, float)
    lead, scaled = clip_norm(position - measured, c.max_lead_m)
    if scaled:
        reasons.append(f"command {np.linalg.norm(position - measured):.4f} m ahead of the arm > max_lead_m "
                       f"{c.max_lead_m:.4f} m")
        position = measured + lead
    position, box = clamp_to_workspace(position, c)
    rotation, angle = rotate_towards(np.asarray(previous_rotation, float), np.asarray(goal_rotation, float),
                                     c.max_angular_speed_rad_s * dt)
    if angle > c.max_angular_speed_rad_s * dt:
        reasons.append(f"angular speed: {c.max_angular_speed_rad_s} rad/s over {dt:.4f} s")
    if measured_rotation is not None:
        measured_r = np.asarray(measured_rotation, float)
        held, ahead = rotate_towards(measured_r, rotation, c.max_lead_rad)
        if ahead > c.max_lead_rad:
            reasons.append(f"command {ahead:.4f} rad ahead of the arm > max_lead_rad {c.max_lead_rad:.4f} rad")
            rotation = held
    return position, rotation, tuple(reasons + box)


class StateMonitor:
    """Watches the measured TCP (the protective-stop check). Feed it every reading with `check`; it keeps the
    last monitor_speed_window_s of readings to measure speed. Times are the robot's own clock when the arm
    reports one (franky: RobotState.time), so controller jitter does not fake or hide speed."""

    def __init__(self, config: SafetyConfig) -> None:
        self.config = config
        self._samples: collections.deque = collections.deque()  # (time_s, position (3,), rotation (3, 3))
        self.peak_speed_m_s = 0.0
        self.peak_angular_speed_rad_s = 0.0
        self._fast = 0  # consecutive readings over a speed limit

    def reset(self) -> None:
        """Forget the readings (e.g. after the arm was stopped and a fresh motion starts)."""
        self._samples.clear()
        self._fast = 0

    def speeds(self) -> tuple[float, float] | None:
        """(m/s, rad/s) over the window, or None while the window is not yet filled."""
        if len(self._samples) < 2:
            return None
        (t0, p0, r0), (t1, p1, r1) = self._samples[0], self._samples[-1]
        dt = t1 - t0
        if dt < self.config.monitor_speed_window_s - 1e-9:
            return None
        return float(np.linalg.norm(p1 - p0)) / dt, rotation_angle(r1 @ r0.T) / dt

    def check(self, position_m: np.ndarray, rotation: np.ndarray, time_s: float, homing: bool = False) -> str | None:
        """The breach (value and limit) of one reading, or None. While `homing`, the pose checks are off (the
        joint motion brings an arm back from wherever a breach left it): only its speed is checked."""
        c = self.config
        p = np.asarray(position_m, float)
        r = np.asarray(rotation, float)
        if not (np.all(np.isfinite(p)) and np.all(np.isfinite(r))):
            return f"measured pose is not finite: {p}"
        if self._samples and time_s <= self._samples[-1][0]:
            if time_s < self._samples[-1][0]:  # a clock that runs backwards (a restarted robot or sim): start over
                self._samples.clear()
            else:
                self._samples.pop()  # the same reading time again: keep the newer sample
        self._samples.append((float(time_s), p, r))
        while len(self._samples) > 2 and time_s - self._samples[1][0] >= c.monitor_speed_window_s:
            self._samples.popleft()
        speeds = self.speeds()
        if speeds is not None:
            v, w = speeds
            self.peak_speed_m_s = max(self.peak_speed_m_s, v)
            self.peak_angular_speed_rad_s = max(self.peak_angular_speed_rad_s, w)
            # a single reading over the limit can be a glitch of the reading; a real jump stays in the window
            self._fast = self._fast + 1 if (v > c.monitor_max_speed_m_s or w > c.monitor_max_angular_speed_rad_s) else 0
            if self._fast < 2:
                pass
            elif v > c.monitor_max_speed_m_s:
                return (f"measured TCP speed {v:.3f} m/s > {c.monitor_max_speed_m_s:.3f} m/s (monitor_speed_factor "
                        f"{c.monitor_speed_factor} x max_speed_m_s {c.max_speed_m_s})")
            elif w > c.monitor_max_angular_speed_rad_s:
                return (f"measured TCP rotation speed {w:.3f} rad/s > {c.monitor_max_angular_speed_rad_s:.3f} rad/s "
                        f"(monitor_speed_factor {c.monitor_speed_factor} x max_angular_speed_rad_s "
                        f"{c.max_angular_speed_rad_s})")
        if homing:
            return None
        why = workspace_breach(p, c, c.monitor_margin_m)
        if why:
            return f"measured TCP {why}"
        if c.max_tilt_rad < np.pi:
            tilt = tilt_rad(r)
            if tilt > c.max_tilt_rad + c.monitor_margin_rad:
                return (f"measured tool tilt {tilt:.3f} rad > max_tilt_rad {c.max_tilt_rad:.3f} rad + margin "
                        f"{c.monitor_margin_rad:.3f} rad")
        lo, hi = float(c.yaw_range_rad[0]), float(c.yaw_range_rad[1])
        if (lo, hi) != (-np.pi, np.pi):
            heading = tool_heading_rad(r)
            if heading is not None and _outside_by(heading, lo, hi) > c.monitor_margin_rad:
                return (f"measured tool heading {heading:.3f} rad outside yaw_range_rad [{lo:.3f}, {hi:.3f}] + margin "
                        f"{c.monitor_margin_rad:.3f} rad")
        return None


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

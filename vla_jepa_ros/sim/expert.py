"""`ScriptedExpertPolicy`: a policy backend that solves the tabletop tasks from simulator ground truth.

It reads object poses from `observation.extras["object_poses"]` (name -> (position (3,), quaternion xyzw)) and
the robot state from `observation.state` (STATE_DIM_NAMES), and returns a 7x7 `franka_delta_ee` chunk, exactly
like the learned policy will. Each call decides the phase afresh from the observation (no hidden plan), so it
recovers from slips: approach above the cube, align yaw, descend, close, lift; then hold (pick up) or carry over
the bowl, lower, open and retreat (put in bowl).

With `aim_noise_m` > 0 it aims off target on purpose (DART, Laskey et al. 2017): every xy point it steers to (above
the cube, the grasp, over the bowl) is shifted by an offset drawn afresh every `aim_noise_period_s` of sim time,
so the recorded episodes visit the near-misses a learned policy ends up in. Such bags are for
`bags-to-dataset --relabel-expert`, which labels every step with the exact expert's action (the way back).
"""
from __future__ import annotations

import dataclasses
import time
import zlib

import numpy as np

from ..core.geometry import matrix_to_quat, matrix_to_rpy, quat_to_matrix, rpy_to_matrix, rotvec_to_matrix, \
    matrix_to_rotvec, wrap_angle
from ..core.types import ActionChunk, Observation
from .tasks import PICK_UP, SuccessConfig, TaskSpec, condition_met, parse_instruction
from .world import BOWL_NAME

GRIPPER_OPEN, GRIPPER_CLOSED = 1.0, 0.0


@dataclasses.dataclass(frozen=True)
class ExpertConfig:
    horizon: int = 7
    step_period_s: float = 0.1
    max_step_m: float = 0.02  # per step; the envelope allows 0.03
    max_step_rad: float = 0.12
    cube_size_m: float = 0.04
    approach_height_m: float = 0.10  # above the cube centre before descending
    grasp_offset_m: float = -0.005  # TCP height relative to the cube centre when closing
    carry_height_m: float = 0.16  # TCP height while carrying over the table
    lift_height_m: float = 0.20  # pick up: TCP height to hold the cube at
    release_height_m: float = 0.075  # put in bowl: TCP height above the bowl base when opening
    xy_tolerance_m: float = 0.008
    z_tolerance_m: float = 0.008
    yaw_tolerance_rad: float = 0.08
    open_width_m: float = 0.075  # measured width above this counts as open
    aim_noise_m: float = 0.0  # DART: std of the xy offset added to every aim point (0 = exact)
    aim_noise_period_s: float = 1.5  # a new offset every this long (sim time)
    aim_noise_exact_fraction: float = 0.3  # share of periods with no offset (so every episode can still finish)
    aim_noise_seed: int = 0

    def __post_init__(self) -> None:
        if self.horizon < 1 or not self.step_period_s > 0:
            raise ValueError(f"horizon={self.horizon} must be >= 1 and step_period_s={self.step_period_s} > 0")
        if not 0.0 <= self.aim_noise_m <= 0.05:
            raise ValueError(f"aim_noise_m={self.aim_noise_m} must be in [0, 0.05] m (the cube is 0.04 m wide)")
        if not self.aim_noise_period_s > 0 or not 0.0 <= self.aim_noise_exact_fraction <= 1.0:
            raise ValueError(f"aim_noise_period_s={self.aim_noise_period_s} must be > 0 and aim_noise_exact_fraction="
                             f"{self.aim_noise_exact_fraction} in [0, 1]")


def _down_rotation(yaw: float) -> np.ndarray:
    """Tool pointing straight down, rotated by `yaw` about the base z axis (FR3 TCP: rpy = (pi, 0, yaw))."""
    return rpy_to_matrix(np.array([np.pi, 0.0, yaw]))


def _cube_yaw(quat_xyzw: np.ndarray) -> float:
    r = quat_to_matrix(quat_xyzw)
    return float(np.arctan2(r[1, 0], r[0, 0]))


class ScriptedExpertPolicy:
    """`infer(observation) -> ActionChunk`, reading ground truth from `observation.extras`."""

    def __init__(self, config: ExpertConfig = ExpertConfig()) -> None:
        self.config = config
        self.model_id = "scripted-expert" + (f"+aim-noise-{config.aim_noise_m * 1e3:g}mm" if config.aim_noise_m else "")
        self.success = SuccessConfig(cube_size_m=config.cube_size_m)
        self._sequence = 0
        self.last_phase = ""

    def infer(self, observation: Observation) -> ActionChunk:
        t0 = time.perf_counter()
        actions, self.last_phase = self.plan(observation)
        self._sequence += 1
        return ActionChunk(actions=actions.astype(np.float32), step_period_s=self.config.step_period_s,
                           stamp_s=observation.stamp_s, task_id=observation.task_id, sequence=self._sequence,
                           inference_ms=(time.perf_counter() - t0) * 1e3, model_id=self.model_id)

    def aim_offset_m(self, task_id: str, stamp_s: float) -> np.ndarray:
        """(2,) xy offset of the aim points at sim time `stamp_s` (zeros without aim noise). Stateless: the same
        task and period always give the same offset."""
        c = self.config
        if c.aim_noise_m == 0.0:
            return np.zeros(2)
        period = int(np.floor(stamp_s / c.aim_noise_period_s))
        rng = np.random.default_rng([c.aim_noise_seed, zlib.crc32(task_id.encode()), max(period, 0)])
        if rng.random() < c.aim_noise_exact_fraction:
            return np.zeros(2)
        return rng.normal(0.0, c.aim_noise_m, 2)

    # ------------------------------------------------------------------ planning
    def plan(self, obs: Observation) -> tuple[np.ndarray, str]:
        """(horizon, 7) actions and the name of the phase chosen."""
        c = self.config
        if obs.state is None:
            return self._hold(GRIPPER_OPEN), "no state: hold"
        ee = np.asarray(obs.state[:3], float)
        rot = rpy_to_matrix(obs.state[3:6])
        width, open_cmd = float(obs.state[6]), float(obs.state[7]) >= 0.5
        poses = obs.extras.get("object_poses", {})
        spec = parse_instruction(obs.instruction)
        if spec is None or spec.object_name not in poses or BOWL_NAME not in poses:
            return self._hold(GRIPPER_OPEN if open_cmd else GRIPPER_CLOSED), "unknown task: hold"
        cube_p, cube_q = poses[spec.object_name]
        cube_p = np.asarray(cube_p, float)
        bowl_p = np.asarray(poses[BOWL_NAME][0], float)
        offset = self.aim_offset_m(obs.task_id, obs.stamp_s)  # (2,)
        aim_p = cube_p + np.array([*offset, 0.0])  # where it steers to; `near`/`holding` use the true cube
        bowl_p = bowl_p + np.array([*offset, 0.0])
        yaw_now = float(matrix_to_rpy(rot)[2])
        # The cube is symmetric under 90 degree turns: pick the grasp yaw closest to the current one.
        cube_yaw = _cube_yaw(np.asarray(cube_q, float))
        grasp_yaw = yaw_now + ((cube_yaw - yaw_now + np.pi / 4) % (np.pi / 2) - np.pi / 4)

        # Loose on purpose: object poses and robot state arrive on different topics, tens of ms apart, while
        # the arm moves at up to 0.2 m/s; a tight test would call a firm grasp a slip and re-open.
        near = np.linalg.norm(cube_p[:2] - ee[:2]) < 0.03 and abs(cube_p[2] - ee[2] - c.grasp_offset_m) < 0.04
        # Holding: closed with the fingers stopped at about the cube's width, and the cube close to the TCP.
        holding = (not open_cmd and c.cube_size_m - 0.012 < width < c.cube_size_m + 0.004
                   and np.linalg.norm(cube_p - ee) < 0.06)
        closing = not open_cmd and near and width > c.cube_size_m + 0.004

        if spec.family != PICK_UP and condition_met(spec, poses, self.success):
            # Done: the cube rests in the bowl. Open and retreat upwards.
            return self._toward(ee, rot, np.array([*ee[:2], max(ee[2], c.carry_height_m)]), rot, GRIPPER_OPEN), "done: retreat"
        if closing:
            return self._hold(GRIPPER_CLOSED), "closing"
        if holding:
            if spec.family == PICK_UP:
                return self._toward(ee, rot, np.array([*ee[:2], c.lift_height_m]), rot, GRIPPER_CLOSED), "lift"
            above_bowl = np.array([bowl_p[0], bowl_p[1], c.carry_height_m])
            if ee[2] < c.carry_height_m - 0.03 and np.linalg.norm(ee[:2] - bowl_p[:2]) > 0.03:
                return self._toward(ee, rot, np.array([*ee[:2], c.carry_height_m]), rot, GRIPPER_CLOSED), "lift to carry"
            if np.linalg.norm(ee[:2] - bowl_p[:2]) > c.xy_tolerance_m * 1.5:
                return self._toward(ee, rot, above_bowl, rot, GRIPPER_CLOSED), "carry"
            release = np.array([bowl_p[0], bowl_p[1], bowl_p[2] + c.release_height_m])
            if ee[2] > release[2] + c.z_tolerance_m:
                return self._toward(ee, rot, release, rot, GRIPPER_CLOSED), "lower into bowl"
            return self._hold(GRIPPER_OPEN), "release"
        if not open_cmd:  # closed on nothing (missed) or after a slip: open and back off upwards
            up = np.array([*ee[:2], max(ee[2], cube_p[2] + c.approach_height_m)])
            return self._toward(ee, rot, up, rot, GRIPPER_OPEN), "re-open"
        target_rot = _down_rotation(grasp_yaw)
        above = np.array([aim_p[0], aim_p[1], cube_p[2] + c.approach_height_m])
        xy_err = float(np.linalg.norm(aim_p[:2] - ee[:2]))
        if xy_err > c.xy_tolerance_m or abs(wrap_angle(grasp_yaw - yaw_now)) > c.yaw_tolerance_rad:
            if ee[2] < cube_p[2] + 0.04 and xy_err > 0.02:  # low and off to the side: rise before moving over
                return self._toward(ee, rot, np.array([*ee[:2], above[2]]), target_rot, GRIPPER_OPEN), "rise"
            return self._toward(ee, rot, np.array([*above[:2], max(min(ee[2], above[2] + 0.1), above[2]) if xy_err > 0.03 else ee[2]]),
                                target_rot, GRIPPER_OPEN), "approach"
        if width < c.open_width_m:
            return self._hold(GRIPPER_OPEN), "wait for open"
        grasp = np.array([aim_p[0], aim_p[1], cube_p[2] + c.grasp_offset_m])
        if ee[2] > grasp[2] + c.z_tolerance_m:
            return self._toward(ee, rot, grasp, target_rot, GRIPPER_OPEN), "descend"
        return self._hold(GRIPPER_CLOSED), "close"

    def _hold(self, gripper: float) -> np.ndarray:
        a = np.zeros((self.config.horizon, 7))
        a[:, 6] = gripper
        return a

    def _toward(self, p: np.ndarray, r: np.ndarray, p_goal: np.ndarray, r_goal: np.ndarray, gripper: float) -> np.ndarray:
        """Straight-line steps of at most max_step_m / max_step_rad from (p, r) toward (p_goal, r_goal)."""
        c = self.config
        a = np.zeros((c.horizon, 7))
        a[:, 6] = gripper
        for i in range(c.horizon):
            d = p_goal - p
            n = np.linalg.norm(d)
            dp = d if n <= c.max_step_m else d * (c.max_step_m / n)
            rv = matrix_to_rotvec(r_goal @ r.T)
            angle = np.linalg.norm(rv)
            if angle > c.max_step_rad:
                rv = rv * (c.max_step_rad / angle)
            r_delta = rotvec_to_matrix(rv)
            a[i, :3] = dp
            a[i, 3:6] = matrix_to_rpy(r_delta)
            p, r = p + dp, r_delta @ r
        return a

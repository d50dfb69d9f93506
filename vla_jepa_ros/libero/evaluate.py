"""`vla-jepa libero-eval`: a model bundle on LIBERO (and LIBERO-PRO) under the paper's protocol.

Writes to out_dir: results.json (schema in results.py), results.md (per task / per suite / average with 95 %
Wilson intervals, and the robustness table when a LIBERO-PRO suite ran) and videos/ (the first episode of each
task, agentview | wrist, upright). Runs inside .venv-libero (`make libero`).
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
import sys
import time
import zlib
from pathlib import Path

from .pool import Job, JobDone, run_jobs
from .protocol import PRO_SUFFIXES, ProtocolConfig, base_suite
from .results import SCHEMA_VERSION, EpisodeResult, format_table, robustness_table, summarize, validate_results
from .rollout import PolicySpec, make_runner


def episode_seed(suite: str, task_id: int, episode: int) -> int:
    """Noise seed of one episode: stable across runs, worker counts and scheduling."""
    return zlib.crc32(f"{suite}/{task_id}/{episode}".encode())


def expand_suites(suites: list[str], pro: bool) -> list[str]:
    out: list[str] = []
    for s in suites:
        base_suite(s)  # validates
        out.append(s)
        if pro and s == base_suite(s):
            out += [s + p for p in PRO_SUFFIXES]
    return list(dict.fromkeys(out))


def worker_env(threads: int) -> dict[str, str]:
    n = str(max(threads, 1))
    return {"OMP_NUM_THREADS": n, "MKL_NUM_THREADS": n, "OPENBLAS_NUM_THREADS": n,
            "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl"), "PYOPENGL_PLATFORM": os.environ.get("MUJOCO_GL", "egl")}


def _model_id(spec: PolicySpec) -> str:
    if spec.bundle is None:
        return f"factory:{spec.factory}"
    from ..runtime.bundle import load_bundle

    return load_bundle(spec.bundle, verify_hashes=False).manifest.model_id


def run_eval(spec: PolicySpec, suites: list[str], out_dir: str | Path, episodes_per_task: int = 50,
             tasks: list[int] | None = None, workers: int = 1, protocol: ProtocolConfig | None = None,
             video: bool = True, first_init_state: int = 0, progress: bool = True) -> dict:
    """Evaluate; -> the results dict (also written to out_dir/results.json and results.md)."""
    from tqdm import tqdm

    from .env import suite_tasks

    if episodes_per_task < 1:
        raise ValueError(f"episodes_per_task={episodes_per_task} must be >= 1")
    protocol = protocol or ProtocolConfig(suite=suites[0])
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    video_dir = str(out_dir / "videos") if video else None
    model_id = _model_id(spec)

    jobs, infos = [], {}
    for suite in suites:
        all_tasks = suite_tasks(suite)
        chosen = range(len(all_tasks)) if not tasks else tasks
        for tid in chosen:
            if not 0 <= tid < len(all_tasks):
                raise ValueError(f"task {tid} outside [0, {len(all_tasks)}) for suite {suite}")
            task = all_tasks[tid]
            if first_init_state + episodes_per_task > task.num_init_states:
                raise ValueError(f"{suite} task {tid} has {task.num_init_states} init states; episodes "
                                 f"{first_init_state}..{first_init_state + episodes_per_task - 1} asked")
            for ep in range(episodes_per_task):
                key = (suite, tid, ep)
                infos[key] = task
                jobs.append(Job(key, (task, ep, first_init_state + ep, episode_seed(suite, tid, ep),
                                      video and ep == 0)))
    # The protocol's suite decides max steps: one ProtocolConfig per suite, one pool per suite.
    results: list[EpisodeResult] = []
    t0 = time.perf_counter()
    bar = tqdm(total=len(jobs), desc=f"libero-eval {model_id}", unit="ep", disable=not progress, file=sys.stderr)
    wins = 0
    for suite in suites:
        suite_protocol = dataclasses.replace(protocol, suite=suite)
        suite_jobs = [j for j in jobs if j.key[0] == suite]

        def on_result(out, _suite=suite):
            nonlocal wins
            task = infos[out.key]
            if isinstance(out, JobDone):
                v = out.value
                wins += bool(v["success"])
                res = EpisodeResult(suite=_suite, task_id=task.task_id, task_name=task.name,
                                    instruction=v["instruction"], episode=out.key[2],
                                    init_state=first_init_state + out.key[2], success=bool(v["success"]),
                                    steps=int(v["steps"]), wall_s=float(v["wall_s"]), attempts=out.attempts,
                                    queries=int(v["queries"]), error=None, video=v["video"])
                if out.errors:
                    bar.write(f"[libero-eval] {out.key} crashed once and succeeded on retry; first error: "
                              f"{out.errors[0].strip().splitlines()[-1]}")
            else:
                res = EpisodeResult(suite=_suite, task_id=task.task_id, task_name=task.name,
                                    instruction=task.language, episode=out.key[2],
                                    init_state=first_init_state + out.key[2], success=False, steps=0, wall_s=0.0,
                                    attempts=out.attempts, error=out.error)
                bar.write(f"[libero-eval] {out.key} CRASHED twice, not counted: "
                          f"{out.error.strip().splitlines()[-1]}")
            results.append(res)
            bar.update(1)
            counted = sum(r.error is None for r in results)
            bar.set_postfix(success=f"{wins}/{counted}")

        run_jobs(suite_jobs, functools.partial(make_runner, spec, suite_protocol, video_dir), workers=workers,
                 on_result=on_result, worker_env=worker_env(spec.threads))
    bar.close()
    wall_s = time.perf_counter() - t0
    results.sort(key=lambda r: (suites.index(r.suite), r.task_id, r.episode))
    summary = summarize(results)
    report = {"schema_version": SCHEMA_VERSION, "kind": "libero_eval", "model_id": model_id,
              "bundle": spec.bundle or "", "policy": dataclasses.asdict(spec),
              "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "protocol": dataclasses.asdict(protocol), "suites_run": suites, "episodes_per_task": episodes_per_task,
              "workers": workers, "wall_s": wall_s, "episodes_per_min": 60.0 * len(results) / max(wall_s, 1e-9),
              "episodes": [r.to_dict() for r in results], **summary}
    validate_results(report)
    (out_dir / "results.json").write_text(json.dumps(report, indent=2))
    md = [f"# LIBERO evaluation of {model_id}", "", format_table(summary)]
    if any(base_suite(s) != s for s in suites):
        md += ["", "## Robustness (LIBERO-Plus table shape; LIBERO-PRO perturbations)", "",
               robustness_table(summary, model_id)]
    md += ["", f"{len(results)} episodes in {wall_s:.0f} s with {workers} worker(s): "
               f"{report['episodes_per_min']:.2f} episodes/min"]
    (out_dir / "results.md").write_text("\n".join(md) + "\n")
    return report

"""Episodes in parallel worker processes, with crash accounting (no LIBERO import here).

Each worker builds its runner once (`make_runner()`: loads the policy, caches the env of the task it ran last) and
then takes jobs from a queue. A job that raises, or whose worker process dies (segfault in the renderer, OOM
kill), is reported and retried once; a job that fails twice comes back as a `JobFailure`, never as a result.
With workers=0 the jobs run in this process (debugging; a hard crash then ends the run).
"""
from __future__ import annotations

import dataclasses
import multiprocessing as mp
import os
import queue
import time
import traceback
from typing import Any, Callable, Iterable

MAX_ATTEMPTS = 2  # the first try and one retry


@dataclasses.dataclass(frozen=True)
class Job:
    key: tuple  # unique, hashable (suite, task_id, episode)
    payload: Any = None


@dataclasses.dataclass
class JobFailure:
    key: tuple
    attempts: int
    errors: list[str]

    @property
    def error(self) -> str:
        return self.errors[-1]


@dataclasses.dataclass
class JobDone:
    key: tuple
    attempts: int
    value: Any
    errors: list[str]  # errors of earlier attempts (reported even when the retry succeeded)


Runner = Callable[[Job], Any]


def _worker(worker_id: int, make_runner: Callable[[], Runner], jobs, results, env: dict) -> None:
    os.environ.update(env)
    try:
        runner = make_runner()
    except BaseException:  # noqa: BLE001 - reported to the parent, which stops the run
        results.put(("init_error", worker_id, None, traceback.format_exc()))
        return
    results.put(("ready", worker_id, None, None))
    while True:
        job = jobs.get()
        if job is None:
            break
        results.put(("start", worker_id, job.key, None))
        try:
            value = runner(job)
        except Exception:  # noqa: BLE001 - any episode error is reported and retried by the parent
            results.put(("error", worker_id, job.key, traceback.format_exc()))
            continue
        results.put(("done", worker_id, job.key, value))
    close = getattr(runner, "close", None)
    if close is not None:
        close()


class WorkerInitError(RuntimeError):
    """A worker could not build its runner (bad bundle, missing package); nothing ran."""


def run_jobs(jobs: Iterable[Job], make_runner: Callable[[], Runner], workers: int = 1,
             on_result: Callable[[JobDone | JobFailure], None] | None = None,
             worker_env: dict[str, str] | None = None, poll_s: float = 0.5) -> list[JobDone | JobFailure]:
    """Run every job, each at most MAX_ATTEMPTS times; -> outcomes in completion order.

    make_runner must be picklable (a module-level function or functools.partial of one) for workers > 0.
    worker_env: environment variables set in each worker before its runner is built (thread limits, MUJOCO_GL).
    """
    jobs = list(jobs)
    keys = [j.key for j in jobs]
    if len(set(keys)) != len(keys):
        raise ValueError("job keys must be unique")
    on_result = on_result or (lambda _: None)
    if workers < 0:
        raise ValueError(f"workers={workers} must be >= 0")
    if workers == 0:
        return _run_inline(jobs, make_runner, on_result)

    ctx = mp.get_context("spawn")  # no forked GL contexts or torch thread pools
    job_q, result_q = ctx.Queue(), ctx.Queue()
    env = dict(worker_env or {})
    by_key = {j.key: j for j in jobs}
    attempts = {j.key: 0 for j in jobs}
    errors: dict[tuple, list[str]] = {j.key: [] for j in jobs}
    outcomes: list[JobDone | JobFailure] = []
    running: dict[int, tuple | None] = {}
    procs: dict[int, Any] = {}
    next_id = 0

    def spawn() -> None:
        nonlocal next_id
        p = ctx.Process(target=_worker, args=(next_id, make_runner, job_q, result_q, env), daemon=True)
        p.start()
        procs[next_id] = p
        running[next_id] = None
        next_id += 1

    def fail_or_retry(key: tuple, error: str) -> None:
        errors[key].append(error)
        if attempts[key] < MAX_ATTEMPTS:
            job_q.put(by_key[key])
        else:
            out = JobFailure(key, attempts[key], errors[key])
            outcomes.append(out)
            on_result(out)

    for j in jobs:
        job_q.put(j)
    for _ in range(min(workers, len(jobs))):
        spawn()
    try:
        while len(outcomes) < len(jobs):
            try:
                kind, wid, key, value = result_q.get(timeout=poll_s)
            except queue.Empty:
                kind = None
            if kind == "init_error":
                raise WorkerInitError(f"worker {wid} could not build its policy/env:\n{value}")
            if kind == "start":
                running[wid] = key
                attempts[key] += 1
            elif kind == "error":
                running[wid] = None
                fail_or_retry(key, value)
            elif kind == "done":
                running[wid] = None
                out = JobDone(key, attempts[key], value, errors[key])
                outcomes.append(out)
                on_result(out)
            # a dead worker: its job (if any) crashed; replace the worker
            for wid, p in list(procs.items()):
                if not p.is_alive() and len(outcomes) < len(jobs):
                    _drain(result_q, running, attempts, errors, outcomes, by_key, on_result, fail_or_retry)
                    key = running.pop(wid, None)
                    procs.pop(wid)
                    if key is not None:
                        fail_or_retry(key, f"worker process died (exit code {p.exitcode}) while running {key}")
                    elif next_id >= workers + 2 * len(jobs):
                        raise WorkerInitError(f"workers keep dying before running a job (last exit code "
                                              f"{p.exitcode}); {next_id} started")
                    spawn()
    finally:
        for _ in procs:
            job_q.put(None)
        deadline = time.monotonic() + 10
        for p in procs.values():
            p.join(max(0.1, deadline - time.monotonic()))
            if p.is_alive():
                p.terminate()
                p.join(2)
    return outcomes


def _drain(result_q, running, attempts, errors, outcomes, by_key, on_result, fail_or_retry) -> None:
    """Read messages a dead worker sent before dying (its 'start' may still be queued)."""
    while True:
        try:
            kind, wid, key, value = result_q.get_nowait()
        except queue.Empty:
            return
        if kind == "start":
            running[wid] = key
            attempts[key] += 1
        elif kind == "error":
            running[wid] = None
            fail_or_retry(key, value)
        elif kind == "done":
            running[wid] = None
            out = JobDone(key, attempts[key], value, errors[key])
            outcomes.append(out)
            on_result(out)


def _run_inline(jobs: list[Job], make_runner: Callable[[], Runner], on_result) -> list:
    runner = make_runner()
    outcomes = []
    try:
        for job in jobs:
            errs: list[str] = []
            for attempt in range(1, MAX_ATTEMPTS + 1):
                try:
                    out = JobDone(job.key, attempt, runner(job), errs)
                    break
                except Exception:  # noqa: BLE001
                    errs.append(traceback.format_exc())
            else:
                out = JobFailure(job.key, MAX_ATTEMPTS, errs)
            outcomes.append(out)
            on_result(out)
    finally:
        close = getattr(runner, "close", None)
        if close is not None:
            close()
    return outcomes

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


def _worker(worker_id: int, make_runner: Callable[[], Runner], jobs, conn, env: dict) -> None:
    """Worker loop. Messages go through this worker's own pipe with synchronous sends, so a 'start' is in the
    parent's hands before the job runs, even if the process dies inside it."""
    os.environ.update(env)
    try:
        runner = make_runner()
    except BaseException:  # noqa: BLE001 - reported to the parent, which stops the run
        conn.send(("init_error", worker_id, None, traceback.format_exc()))
        return
    while True:
        job = jobs.get()
        if job is None:
            break
        conn.send(("start", worker_id, job.key, None))
        try:
            value = runner(job)
        except Exception:  # noqa: BLE001 - any episode error is reported and retried by the parent
            conn.send(("error", worker_id, job.key, traceback.format_exc()))
            continue
        conn.send(("done", worker_id, job.key, value))
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
    from multiprocessing.connection import wait

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
    job_q = ctx.Queue()
    env = dict(worker_env or {})
    by_key = {j.key: j for j in jobs}
    attempts = {j.key: 0 for j in jobs}
    errors: dict[tuple, list[str]] = {j.key: [] for j in jobs}
    outcomes: list[JobDone | JobFailure] = []
    running: dict[int, tuple | None] = {}
    procs: dict[int, Any] = {}
    conns: dict[int, Any] = {}
    next_id = 0

    def spawn() -> None:
        nonlocal next_id
        reader, writer = ctx.Pipe(duplex=False)
        p = ctx.Process(target=_worker, args=(next_id, make_runner, job_q, writer, env), daemon=True)
        p.start()
        writer.close()  # the child holds the only writer: EOF on the reader once it is gone
        procs[next_id], conns[next_id], running[next_id] = p, reader, None
        next_id += 1

    def finish(out) -> None:
        outcomes.append(out)
        on_result(out)

    def fail_or_retry(key: tuple, error: str) -> None:
        errors[key].append(error)
        if attempts[key] < MAX_ATTEMPTS:
            job_q.put(by_key[key])
        else:
            finish(JobFailure(key, attempts[key], errors[key]))

    def handle(kind: str, wid: int, key, value) -> None:
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
            finish(JobDone(key, attempts[key], value, errors[key]))

    for j in jobs:
        job_q.put(j)
    for _ in range(min(workers, len(jobs))):
        spawn()
    try:
        while len(outcomes) < len(jobs):
            ready = wait(list(conns.values()), timeout=poll_s)
            for wid, conn in list(conns.items()):
                if conn not in ready:
                    continue
                try:
                    handle(*conn.recv())
                    continue
                except EOFError:
                    pass
                # the worker is gone (its pipe closed): the job it had started crashed; replace the worker
                p = procs.pop(wid)
                conns.pop(wid).close()
                p.join(5)
                key = running.pop(wid, None)
                if key is not None:
                    fail_or_retry(key, f"worker process died (exit code {p.exitcode}) while running {key}")
                elif next_id >= workers + 2 * len(jobs):
                    raise WorkerInitError(f"workers keep dying before running a job (last exit code "
                                          f"{p.exitcode}); {next_id} started")
                if len(outcomes) < len(jobs):
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
        for c in conns.values():
            c.close()
    return outcomes


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

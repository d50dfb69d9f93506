"""Chunk executor: timing, replacement, watchdog, staleness, validation, e-stop (pure, fast)."""
import numpy as np
import pytest

from vla_jepa_ros.core.chunk_executor import ChunkExecutor, ExecutorConfig, Mode, Verdict
from vla_jepa_ros.core.types import ActionChunk

CFG = ExecutorConfig(chunk_timeout_s=1.0, max_chunk_age_s=0.5)


def chunk(task="t1", seq=1, stamp=0.0, horizon=7, period=0.1, fill=None, **kw):
    a = np.tile(np.arange(horizon, dtype=np.float32)[:, None], (1, 7)) if fill is None else np.full((horizon, 7), fill, np.float32)
    return ActionChunk(actions=a, step_period_s=period, stamp_s=stamp, task_id=task, sequence=seq, **kw)


def running(now=0.0):
    ex = ChunkExecutor(CFG)
    ex.set_task("t1", now)
    return ex


def run(ex, t0, t1, dt=0.01):
    """Tick from t0 to t1; return [(time, step value)] of every executed step."""
    out = []
    for t in np.arange(t0, t1, dt):
        d = ex.step(float(t))
        if d.action is not None:
            out.append((round(float(t), 3), float(d.action[0])))
    return out


def test_steps_follow_the_step_period():
    ex = running()
    assert ex.submit(chunk(stamp=0.0), 0.05).verdict is Verdict.ACCEPTED
    steps = run(ex, 0.05, 1.0)
    assert [v for _, v in steps] == [0, 1, 2, 3, 4, 5, 6]
    times = np.array([t for t, _ in steps])
    np.testing.assert_allclose(np.diff(times), 0.1, atol=0.011)
    assert ex.step(1.0).mode is Mode.HOLDING  # exhausted -> hold


def test_newer_chunk_replaces_rest_of_older():
    ex = running()
    ex.submit(chunk(seq=1, fill=1.0), 0.0)
    first = run(ex, 0.0, 0.25)
    assert [v for _, v in first] == [1.0, 1.0, 1.0]
    assert ex.submit(chunk(seq=2, stamp=0.2, fill=2.0), 0.25).verdict is Verdict.ACCEPTED
    after = run(ex, 0.25, 2.0)
    assert [v for _, v in after] == [2.0] * 7  # nothing of chunk 1 is left


def test_out_of_order_sequence_rejected():
    ex = running()
    ex.submit(chunk(seq=5), 0.0)
    r = ex.submit(chunk(seq=4), 0.01)
    assert r.verdict is Verdict.REJECTED and "not newer" in r.reason


def test_watchdog_holds_without_fresh_chunks():
    ex = ChunkExecutor(ExecutorConfig(chunk_timeout_s=0.35, max_chunk_age_s=0.5))
    ex.set_task("t1", 0.0)
    ex.submit(chunk(horizon=20), 0.0)  # 2 s of steps, but fresh for only 0.35 s
    steps = run(ex, 0.0, 1.0)
    assert len(steps) == 4  # steps at 0.0, 0.1, 0.2, 0.3 then hold
    d = ex.step(1.0)
    assert d.mode is Mode.HOLDING and "chunk_timeout_s" in d.reason


def test_watchdog_runs_from_task_start():
    ex = running(now=10.0)
    assert "waiting for a chunk" in ex.step(10.5).reason
    assert "chunk_timeout_s" in ex.step(11.2).reason


def test_stale_chunk_dropped_and_counted():
    ex = running()
    r = ex.submit(chunk(stamp=1.0), 1.6)
    assert r.verdict is Verdict.STALE and "0.600 s old" in r.reason
    assert ex.stale == 1 and ex.accepted == 0
    assert ex.step(1.6).action is None


@pytest.mark.parametrize("make, reason", [
    (lambda: chunk(task="other"), "task_id 'other' != running task 't1'"),
    (lambda: chunk(fill=np.nan), "non-finite"),
    (lambda: chunk(action_space="joint_pos"), "action_space"),
    (lambda: ActionChunk(actions=np.zeros((7, 6), np.float32), step_period_s=0.1, task_id="t1", sequence=1,
                         dim_names=("a", "b", "c", "d", "e", "f")), "dim_names"),
    (lambda: chunk(period=5.0), "step_period_s 5.0 outside"),
])
def test_bad_chunks_rejected_with_reason(make, reason):
    ex = running()
    r = ex.submit(make(), 0.0)
    assert r.verdict is Verdict.REJECTED and reason in r.reason
    assert ex.rejected == 1 and ex.step(0.0).action is None


def test_no_task_no_motion():
    ex = ChunkExecutor(CFG)
    r = ex.submit(chunk(), 0.0)
    assert r.verdict is Verdict.REJECTED and "no task is running" in r.reason
    assert ex.step(0.0).mode is Mode.IDLE


def test_estop_stops_at_once_and_refuses_until_released():
    ex = running()
    ex.submit(chunk(seq=1), 0.0)
    assert ex.step(0.0).action is not None
    ex.set_estop(True)
    assert ex.step(0.1).mode is Mode.ESTOP and ex.step(0.2).action is None
    r = ex.submit(chunk(seq=2, stamp=0.2), 0.2)
    assert r.verdict is Verdict.REJECTED and "e-stop" in r.reason
    ex.set_estop(False)
    assert ex.step(0.3).action is None  # the old chunk does not come back
    assert ex.submit(chunk(seq=3, stamp=0.3), 0.3).verdict is Verdict.ACCEPTED
    assert ex.step(0.3).action is not None


def test_task_change_drops_chunk_and_resets_counters():
    ex = running()
    ex.submit(chunk(), 0.0)
    ex.step(0.0)
    ex.set_task("t2", 0.05)
    assert ex.steps_executed == 0 and ex.accepted == 0
    assert ex.step(0.1).action is None
    assert ex.submit(chunk(task="t1", seq=9), 0.1).verdict is Verdict.REJECTED


@pytest.mark.parametrize("kwargs, message", [
    ({"chunk_timeout_s": 0.0}, "chunk_timeout_s=0.0 must be > 0"),
    ({"action_space": "joint"}, "action_space='joint' is unknown"),
    ({"min_step_period_s": 0.5, "max_step_period_s": 0.1}, "min_step_period_s=0.5"),
])
def test_bad_config(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ExecutorConfig(**kwargs)


def test_skip_late_steps_starts_at_the_step_due_by_the_stamp():
    ex = ChunkExecutor(ExecutorConfig(chunk_timeout_s=1.0, max_chunk_age_s=0.5, skip_late_steps=True))
    ex.set_task("t1", 0.0)
    # captured at 1.0, arrives 0.107 s later: step 0 belonged at 1.0, step 1 at 1.1 -> start at step 1, at once
    assert ex.submit(chunk(stamp=1.0), 1.107).verdict is Verdict.ACCEPTED
    d = ex.step(1.107)
    assert d.new_chunk and float(d.action[0]) == 1.0
    steps = run(ex, 1.11, 2.0)
    assert [v for _, v in steps] == [2, 3, 4, 5, 6]
    np.testing.assert_allclose(np.diff([t for t, _ in steps]), 0.1, atol=0.011)


@pytest.mark.parametrize("age_s, first", [(0.0, 0), (0.049, 0), (0.051, 1), (0.26, 3), (0.49, 5)])
def test_late_steps_rounds_the_age_to_whole_steps(age_s, first):
    assert ChunkExecutor.late_steps(chunk(stamp=2.0), 2.0 + age_s) == first


def test_late_steps_always_keeps_the_last_step():
    c = chunk(stamp=0.0, horizon=3, period=0.05)
    assert ChunkExecutor.late_steps(c, 0.4) == 2  # 8 periods old, but only 3 steps
    ex = ChunkExecutor(ExecutorConfig(chunk_timeout_s=1.0, max_chunk_age_s=0.5, skip_late_steps=True))
    ex.set_task("t1", 0.0)
    ex.submit(c, 0.4)
    assert [v for _, v in run(ex, 0.4, 1.0)] == [2]


def test_without_skip_late_steps_a_late_chunk_starts_at_step_0():
    ex = running()
    ex.submit(chunk(stamp=1.0), 1.3)
    assert [v for _, v in run(ex, 1.3, 2.2)] == [0, 1, 2, 3, 4, 5, 6]

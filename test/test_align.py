"""Episode alignment: inputs never come from the future; targets are the commands executed at each step."""
import numpy as np
import pytest

from vla_jepa_ros.dataset.align import ChunkRecord, Stream, align_episode, command_at


def _chunk(received_s, first_value, rows=3, step=0.1, gripper=1.0):
    actions = np.zeros((rows, 7), np.float32)
    actions[:, 0] = first_value + np.arange(rows)  # dx encodes (chunk, row)
    actions[:, 6] = gripper
    return ChunkRecord(received_s, actions, step)


def test_known_timeline_gives_exact_samples():
    cams = {"front": Stream(np.array([0.00, 0.10, 0.20, 0.30]), ["f0", "f1", "f2", "f3"]),
            "wrist": Stream(np.array([0.05, 0.15, 0.25]), ["w0", "w1", "w2"])}
    state = Stream(np.array([0.02, 0.12, 0.22, 0.32]), np.arange(4))
    chunks = [_chunk(0.05, 10.0), _chunk(0.25, 20.0, gripper=0.0)]
    ep = align_episode(cams, state, chunks, period_s=0.1, end_s=0.45)
    np.testing.assert_allclose(ep.times_s, [0.05, 0.15, 0.25, 0.35, 0.45])
    assert list(ep.frame_indices["front"]) == [0, 1, 2, 3, 3]  # latest at or before t
    assert list(ep.frame_indices["wrist"]) == [0, 1, 2, 2, 2]
    assert list(ep.state_indices) == [0, 1, 2, 3, 3]
    # chunk 1 rows 0,1 at 0.05, 0.15; chunk 2 (received 0.25) replaces the rest: rows 0,1,2
    np.testing.assert_allclose(ep.actions[:, 0], [10, 11, 20, 21, 22])
    np.testing.assert_allclose(ep.actions[:, 6], [1, 1, 0, 0, 0])
    assert ep.covered.all()


def test_inputs_never_come_from_the_future():
    rng = np.random.default_rng(0)
    times = np.sort(rng.uniform(0, 5, 80))
    cams = {"front": Stream(times, list(range(80)))}
    state = Stream(np.sort(rng.uniform(0, 5, 200)), np.arange(200))
    chunks = [_chunk(t, 0.0, rows=7) for t in np.arange(0.3, 5, 0.7)]
    ep = align_episode(cams, state, chunks, period_s=0.1)
    for k, t in enumerate(ep.times_s):
        assert cams["front"].times_s[ep.frame_indices["front"][k]] <= t + 1e-12
        assert state.times_s[ep.state_indices[k]] <= t + 1e-12
        # and it is the LATEST such one
        nxt = ep.frame_indices["front"][k] + 1
        assert nxt == 80 or cams["front"].times_s[nxt] > t


def test_uncovered_steps_hold_with_last_gripper():
    chunks = [_chunk(1.0, 5.0, rows=2, gripper=0.0)]
    acts, covered = command_at(chunks, np.array([0.5, 1.0, 1.1, 1.2, 1.5]))
    np.testing.assert_allclose(acts[:, 0], [0, 5, 6, 0, 0])
    np.testing.assert_allclose(acts[:, 6], [1, 0, 0, 0, 0])  # open before any chunk, then the chunk's closed
    assert list(covered) == [False, True, True, False, False]


def test_missing_inputs_are_errors():
    with pytest.raises(ValueError, match="camera wrist has no messages"):
        align_episode({"wrist": Stream(np.array([]), [])}, Stream(np.array([0.0]), [0]), [_chunk(0, 0)], 0.1)
    with pytest.raises(ValueError, match="without action chunks"):
        command_at([], np.array([0.0]))
    with pytest.raises(ValueError, match="period_s=0"):
        align_episode({}, Stream(np.array([0.0]), [0]), [_chunk(0, 0)], 0.0)


def test_stream_sorted_and_validation():
    s = Stream.sorted([0.3, 0.1, 0.2], ["c", "a", "b"])
    assert s.values == ["a", "b", "c"]
    with pytest.raises(ValueError, match="non-decreasing"):
        Stream(np.array([0.2, 0.1]), [1, 2])

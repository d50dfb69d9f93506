"""core/camera_buffer.py and core/latency.py: staleness, skew, dropped frames, percentiles."""
import numpy as np
import pytest

from vla_jepa_ros.core.camera_buffer import CameraBuffer, CamerasNotReady
from vla_jepa_ros.core.latency import LatencyStats, RateMeter, StageTimer

IMG = np.zeros((4, 4, 3), np.uint8)


def _buffer():
    return CameraBuffer(("front", "wrist"), max_image_age_s=0.5, max_camera_skew_s=0.1)


def test_missing_camera_is_named():
    b = _buffer()
    b.put("front", IMG, 10.0)
    with pytest.raises(CamerasNotReady, match="no frame yet from camera\\(s\\) 'wrist'"):
        b.snapshot(10.0)


def test_fresh_frames_give_snapshot_with_oldest_stamp():
    b = _buffer()
    b.put("front", IMG, 10.00)
    b.put("wrist", IMG, 10.05)
    snap = b.snapshot(10.2)
    assert set(snap.images) == {"front", "wrist"} and snap.oldest_stamp_s == 10.0


def test_stale_frame_refused_then_resumes_when_fresh():
    b = _buffer()
    b.put("front", IMG, 10.0)
    b.put("wrist", IMG, 10.0)
    with pytest.raises(CamerasNotReady, match=r"camera 'front' frame is 0\.600 s old > max_image_age_s=0\.5"):
        b.snapshot(10.6)
    b.put("front", IMG, 10.55)
    b.put("wrist", IMG, 10.56)
    assert b.snapshot(10.6).oldest_stamp_s == 10.55


def test_skew_refused_naming_both_cameras():
    b = _buffer()
    b.put("front", IMG, 10.0)
    b.put("wrist", IMG, 10.3)
    with pytest.raises(CamerasNotReady, match=r"skewed by 0\.300 s \('front' at 10\.000 s, 'wrist' at 10\.300 s\) "
                                              r"> max_camera_skew_s=0\.1"):
        b.snapshot(10.3)


def test_dropped_frames_count_frames_never_used():
    b = _buffer()
    for t in (1.0, 1.1, 1.2):
        b.put("front", IMG, t)
    b.put("wrist", IMG, 1.2)
    b.snapshot(1.2)
    b.put("front", IMG, 1.3)  # replaces a used frame: not a drop
    assert b.frames_received == 5 and b.frames_dropped == 2


def test_frames_are_counted_per_camera_received_used_superseded():
    b = _buffer()
    for t in (1.0, 1.1, 1.2):
        b.put("front", IMG, t)
    b.put("wrist", IMG, 1.2)
    b.snapshot(1.2)
    b.snapshot(1.25)  # the same frames again: used once
    b.put("wrist", IMG, 1.3)
    assert b.received == {"front": 3, "wrist": 2}
    assert b.used == {"front": 1, "wrist": 1}
    assert b.superseded == {"front": 2, "wrist": 0}


def test_policy_diagnostics_carry_frame_counts_by_camera_and_reason():
    from vla_jepa_ros.runtime.policy_loop import PolicyLoop

    class NoPolicy:
        def infer(self, obs):
            raise ValueError("robot state unknown")

    loop = PolicyLoop(NoPolicy(), ("front", "wrist"), 0.5, 0.1)
    loop.put_frame("front", IMG, 1.0)
    loop.put_frame("front", IMG, 1.1)
    loop.put_frame("wrist", IMG, 1.1)
    loop.bad_frame("wrist", "wrong size")
    loop.lost_frames_reported("front", 3)
    loop.set_task("t1", "go", True)
    loop.step(1.1)
    v = loop.diagnostics(1.1).values
    assert (v["frames.front.received"], v["frames.front.used"], v["frames.front.dropped_superseded"],
            v["frames.front.lost_in_transport"], v["frames.wrist.dropped_bad"]) == ("2", "1", "1", "3", "1")


def test_bad_config_and_unknown_camera():
    with pytest.raises(ValueError, match="max_image_age_s=0"):
        CameraBuffer(("a",), 0, 0.1)
    with pytest.raises(ValueError, match="duplicates"):
        CameraBuffer(("a", "a"), 1, 0.1)
    with pytest.raises(ValueError, match="unknown camera 'side'"):
        _buffer().put("side", IMG, 0.0)


def test_latency_percentiles_and_window():
    s = LatencyStats(window=100)
    for v in range(1, 201):
        s.add(float(v))
    assert s.count == 200
    assert s.p50_ms == pytest.approx(np.percentile(np.arange(101, 201), 50))
    assert s.p99_ms == pytest.approx(np.percentile(np.arange(101, 201), 99))
    assert np.isnan(LatencyStats().p50_ms)
    t = StageTimer()
    t.add({"a_ms": 1.0, "b_ms": 2.0})
    t.add({"a_ms": 3.0})
    assert t.summary()["a_ms"]["p50_ms"] == 2.0 and t.summary()["b_ms"]["count"] == 1


def test_rate_meter():
    r = RateMeter(window_s=2.0)
    for i in range(21):
        r.tick(i * 0.1)  # 10 Hz for 2 s
    assert r.rate_hz(2.0) == pytest.approx(10.0)
    assert r.rate_hz(10.0) == 0.0  # everything fell out of the window

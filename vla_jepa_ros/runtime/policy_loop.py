"""`PolicyLoop`: everything the policy node does between messages and publishing, without ROS.

Callbacks hand it frames, bad frames, the robot state and the task; an inference thread calls `step(now_s)`,
which returns a chunk or None (the reason in `not_ready`). It keeps the statistics for /diagnostics.
Thread-safe: callbacks and the inference thread may call it concurrently.
"""
from __future__ import annotations

import collections
import dataclasses
import threading

import numpy as np

from ..core.camera_buffer import CameraBuffer, CamerasNotReady
from ..core.latency import RateMeter, StageTimer
from ..core.types import ActionChunk, Observation
from .policy import NonFiniteActionError, Policy


@dataclasses.dataclass(frozen=True)
class Diagnostics:
    level: str  # "ok" | "warn" | "error"
    message: str
    values: dict[str, str]


def frame_counts(cameras: CameraBuffer, bad: dict[str, int], lost: dict[str, int]) -> dict[str, str]:
    """Per camera, for /diagnostics: frames.<camera>.received | used | dropped_superseded (a newer frame came
    before an inference took it) | dropped_bad (undecodable, wrong size) | lost_in_transport (reported by DDS)."""
    values = {}
    for cam in cameras.cameras:
        values[f"frames.{cam}.received"] = str(cameras.received[cam])
        values[f"frames.{cam}.used"] = str(cameras.used[cam])
        values[f"frames.{cam}.dropped_superseded"] = str(cameras.superseded[cam])
        values[f"frames.{cam}.dropped_bad"] = str(bad.get(cam, 0))
        values[f"frames.{cam}.lost_in_transport"] = str(lost.get(cam, 0))
    return values


class PolicyLoop:
    def __init__(self, policy: Policy, cameras: tuple[str, ...], max_image_age_s: float,
                 max_camera_skew_s: float) -> None:
        self.policy = policy
        self.cameras = CameraBuffer(cameras, max_image_age_s, max_camera_skew_s) if cameras else None
        self._lock = threading.Lock()
        self._state: np.ndarray | None = None
        self._task: tuple[str, str] | None = None  # (task_id, instruction) while RUNNING
        self._extras: dict = {}
        self.timer = StageTimer(window=500)
        self.rate = RateMeter(window_s=5.0)
        self.bad_frames: collections.Counter[str] = collections.Counter()  # camera -> count
        self.lost_frames: collections.Counter[str] = collections.Counter()  # camera -> lost before delivery (DDS)
        self.last_bad_frame = ""
        self.chunks = 0
        self.not_ready = ""  # why the last step published nothing ("" after a chunk)
        self.not_ready_count = 0
        self.non_finite = 0

    # -- inputs (callbacks) ----------------------------------------------------------------------------
    def put_frame(self, camera: str, rgb: np.ndarray, stamp_s: float) -> None:
        if self.cameras is not None:
            self.cameras.put(camera, rgb, stamp_s)

    def bad_frame(self, camera: str, problem: str) -> str:
        """Count a frame that could not be used; returns the message to log (throttled by the caller)."""
        with self._lock:
            self.bad_frames[camera] += 1
            self.last_bad_frame = f"camera {camera!r}: {problem}"
            return f"{self.last_bad_frame} (bad frames from {camera!r}: {self.bad_frames[camera]}); frame skipped"

    def lost_frames_reported(self, camera: str, count: int) -> None:
        """Frames the middleware reports lost before they reached the node (DDS 'sample lost')."""
        with self._lock:
            self.lost_frames[camera] += count

    def set_state(self, state: np.ndarray | None) -> None:
        with self._lock:
            self._state = state

    def set_task(self, task_id: str, instruction: str, running: bool) -> None:
        with self._lock:
            self._task = (task_id, instruction) if running else None

    def set_extras(self, extras: dict) -> None:
        with self._lock:
            self._extras = extras

    # -- inference thread ------------------------------------------------------------------------------
    def step(self, now_s: float) -> ActionChunk | None:
        with self._lock:
            task, state, extras = self._task, self._state, self._extras
        if task is None:
            self.not_ready = "no running task"
            return None
        try:
            if self.cameras is not None:
                snap = self.cameras.snapshot(now_s)
                images, stamps = snap.images, snap.stamps_s
            else:
                images, stamps = {}, {"clock": now_s}
            obs = Observation(images=images, image_stamps_s=stamps, state=state, instruction=task[1],
                              task_id=task[0], extras=extras)
            chunk = self.policy.infer(obs)
        except CamerasNotReady as exc:
            return self._skip(str(exc))
        except NonFiniteActionError as exc:
            self.non_finite += 1
            return self._skip(str(exc))
        except ValueError as exc:  # e.g. robot state unknown, instruction too long
            return self._skip(str(exc))
        timings = dict(getattr(self.policy, "last_timings_ms", {}) or {"model_ms": chunk.inference_ms})
        timings["age_at_publish_ms"] = (now_s - chunk.stamp_s) * 1e3
        self.timer.add(timings)
        self.rate.tick(now_s)
        self.chunks += 1
        self.not_ready = ""
        return chunk

    def _skip(self, reason: str) -> None:
        self.not_ready = reason
        self.not_ready_count += 1
        return None

    # -- diagnostics -----------------------------------------------------------------------------------
    def diagnostics(self, now_s: float) -> Diagnostics:
        with self._lock:
            running = self._task is not None
            bad = dict(self.bad_frames)
            lost = dict(self.lost_frames)
        values = {"model_id": str(getattr(self.policy, "model_id", "")), "running": str(running),
                  "chunks": str(self.chunks), "rate_hz": f"{self.rate.rate_hz(now_s):.2f}",
                  "not_ready_count": str(self.not_ready_count), "non_finite_outputs": str(self.non_finite),
                  "bad_frames": str(sum(bad.values())), "last_bad_frame": self.last_bad_frame}
        for cam, n in bad.items():
            values[f"bad_frames.{cam}"] = str(n)
        if self.cameras is not None:
            values["frames_received"] = str(self.cameras.frames_received)
            values["dropped_frames"] = str(self.cameras.frames_dropped)
            values.update(frame_counts(self.cameras, bad, lost))
        for stage, s in self.timer.summary().items():
            values[f"{stage}.p50"] = f"{s['p50_ms']:.2f}"
            values[f"{stage}.p99"] = f"{s['p99_ms']:.2f}"
        if running and self.not_ready and self.not_ready != "no running task":
            return Diagnostics("warn", f"not inferring: {self.not_ready}", values)
        return Diagnostics("ok", "running" if running else "idle", values)

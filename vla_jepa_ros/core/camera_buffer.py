"""Latest frame per camera, with staleness and skew checks (pure Python; thread-safe).

Subscription callbacks `put()` frames; the inference thread takes a `snapshot(now_s)`, which refuses (raises
`CamerasNotReady`, message naming the camera, the value and the limit) when a camera has no frame yet, a frame is
older than `max_image_age_s`, or the cameras' capture times differ by more than `max_camera_skew_s`.
"""
from __future__ import annotations

import dataclasses
import threading

import numpy as np


class CamerasNotReady(RuntimeError):
    """The frames at hand must not be used for inference (the message says which camera and why)."""


@dataclasses.dataclass(frozen=True)
class CameraSnapshot:
    images: dict[str, np.ndarray]  # name -> (H, W, 3) uint8 RGB
    stamps_s: dict[str, float]  # name -> capture time (s)

    @property
    def oldest_stamp_s(self) -> float:
        return min(self.stamps_s.values())


class CameraBuffer:
    def __init__(self, cameras: tuple[str, ...], max_image_age_s: float, max_camera_skew_s: float) -> None:
        if not cameras:
            raise ValueError("cameras must name at least one camera")
        if len(set(cameras)) != len(cameras):
            raise ValueError(f"cameras {cameras} contain duplicates")
        if not max_image_age_s > 0:
            raise ValueError(f"max_image_age_s={max_image_age_s} must be > 0")
        if not max_camera_skew_s >= 0:
            raise ValueError(f"max_camera_skew_s={max_camera_skew_s} must be >= 0")
        self.cameras = tuple(cameras)
        self.max_image_age_s = max_image_age_s
        self.max_camera_skew_s = max_camera_skew_s
        self._lock = threading.Lock()
        self._frames: dict[str, tuple[np.ndarray, float]] = {}
        self._used: dict[str, bool] = {}
        # per camera: received (put), used (given to an inference), superseded (replaced by a newer frame
        # before any inference used it: normal when cameras run faster than inference)
        self.received = dict.fromkeys(self.cameras, 0)
        self.used = dict.fromkeys(self.cameras, 0)
        self.superseded = dict.fromkeys(self.cameras, 0)

    @property
    def frames_received(self) -> int:
        return sum(self.received.values())

    @property
    def frames_dropped(self) -> int:
        """Frames replaced by a newer one before any inference used them (all cameras)."""
        return sum(self.superseded.values())

    def put(self, camera: str, image: np.ndarray, stamp_s: float) -> None:
        if camera not in self.cameras:
            raise ValueError(f"unknown camera {camera!r} (configured: {', '.join(self.cameras)})")
        with self._lock:
            if camera in self._frames and not self._used[camera]:
                self.superseded[camera] += 1
            self._frames[camera] = (image, float(stamp_s))
            self._used[camera] = False
            self.received[camera] += 1

    def latest_stamp_s(self, camera: str) -> float | None:
        with self._lock:
            frame = self._frames.get(camera)
            return frame[1] if frame else None

    def snapshot(self, now_s: float) -> CameraSnapshot:
        """The latest frame of every camera, or CamerasNotReady naming the first problem found."""
        with self._lock:
            missing = [c for c in self.cameras if c not in self._frames]
            if missing:
                raise CamerasNotReady(f"no frame yet from camera(s) {', '.join(repr(c) for c in missing)}")
            stamps = {c: self._frames[c][1] for c in self.cameras}
            for c, t in stamps.items():
                age = now_s - t
                if age > self.max_image_age_s:
                    raise CamerasNotReady(f"camera {c!r} frame is {age:.3f} s old > max_image_age_s="
                                          f"{self.max_image_age_s}")
            newest = max(stamps, key=stamps.get)
            oldest = min(stamps, key=stamps.get)
            skew = stamps[newest] - stamps[oldest]
            if skew > self.max_camera_skew_s:
                raise CamerasNotReady(f"cameras skewed by {skew:.3f} s ({oldest!r} at {stamps[oldest]:.3f} s, "
                                      f"{newest!r} at {stamps[newest]:.3f} s) > max_camera_skew_s="
                                      f"{self.max_camera_skew_s}")
            for c in self.cameras:
                if not self._used[c]:
                    self.used[c] += 1
                self._used[c] = True
            return CameraSnapshot(images={c: self._frames[c][0] for c in self.cameras}, stamps_s=stamps)

"""Latency and rate statistics over a sliding window (pure Python + numpy, thread-safe)."""
from __future__ import annotations

import collections
import threading

import numpy as np


class LatencyStats:
    """Keeps the last `window` samples (ms) of one stage; p50/p99 over that window."""

    def __init__(self, window: int = 1000) -> None:
        if window < 1:
            raise ValueError(f"window={window} must be >= 1")
        self._samples: collections.deque[float] = collections.deque(maxlen=window)
        self._lock = threading.Lock()
        self.count = 0  # all samples ever added

    def add(self, value_ms: float) -> None:
        with self._lock:
            self._samples.append(float(value_ms))
            self.count += 1

    def values(self) -> np.ndarray:
        with self._lock:
            return np.asarray(self._samples, dtype=np.float64)

    def percentile(self, q: float) -> float:
        """q in [0, 100]; NaN when there are no samples yet."""
        if not 0.0 <= q <= 100.0:
            raise ValueError(f"percentile q={q} must be in [0, 100]")
        v = self.values()
        return float(np.percentile(v, q)) if v.size else float("nan")

    @property
    def p50_ms(self) -> float:
        return self.percentile(50.0)

    @property
    def p99_ms(self) -> float:
        return self.percentile(99.0)

    def summary(self) -> dict[str, float]:
        v = self.values()
        if not v.size:
            return {"count": 0, "p50_ms": float("nan"), "p99_ms": float("nan"), "mean_ms": float("nan")}
        p50, p99 = np.percentile(v, [50.0, 99.0])
        return {"count": self.count, "p50_ms": float(p50), "p99_ms": float(p99), "mean_ms": float(v.mean())}


class StageTimer:
    """One LatencyStats per named stage: `timer.add({"preprocess_ms": 1.2, ...})`."""

    def __init__(self, window: int = 1000) -> None:
        self._window = window
        self.stages: dict[str, LatencyStats] = {}

    def add(self, timings_ms: dict[str, float]) -> None:
        for name, value in timings_ms.items():
            self.stages.setdefault(name, LatencyStats(self._window)).add(value)

    def summary(self) -> dict[str, dict[str, float]]:
        return {name: s.summary() for name, s in self.stages.items()}


class RateMeter:
    """Achieved event rate (Hz) over the events within the last `window_s` seconds of the given clock."""

    def __init__(self, window_s: float = 5.0) -> None:
        if not window_s > 0:
            raise ValueError(f"window_s={window_s} must be > 0")
        self.window_s = window_s
        self._times: collections.deque[float] = collections.deque()
        self._lock = threading.Lock()

    def tick(self, now_s: float) -> None:
        with self._lock:
            self._times.append(now_s)
            self._trim(now_s)

    def _trim(self, now_s: float) -> None:
        while self._times and self._times[0] < now_s - self.window_s:
            self._times.popleft()

    def rate_hz(self, now_s: float) -> float:
        with self._lock:
            self._trim(now_s)
            if len(self._times) < 2:
                return 0.0
            span = self._times[-1] - self._times[0]
            return (len(self._times) - 1) / span if span > 0 else 0.0

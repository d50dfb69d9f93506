"""Turn one recorded episode's message streams into training samples on a fixed time grid (pure numpy).

Rules (no future leakage into inputs):
- sample k has time t_k = t_0 + k * period_s, where t_0 is the first instant at which every camera and
  the robot state have been seen;
- its inputs (one frame per camera, the robot state) are the LATEST ones stamped at or before t_k;
- its action target is the command the controller was executing at t_k, reconstructed from the action chunks:
  a chunk received at time r starts at r and its row i covers [r + i * step, r + (i + 1) * step); a newer chunk
  replaces the rest of an older one (the controller's rule). When no chunk covers t_k (before the first chunk,
  or after a chunk ran out) the target is "hold": zero motion with the last commanded gripper state.
  The training set builds chunks a_k .. a_{k+H-1} from these per-step targets, so targets come from at or
  after t_k while inputs come from at or before it.
"""
from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Stream:
    """Time-stamped values: times_s (N,) increasing, values: a list or array of N items."""

    times_s: np.ndarray
    values: list | np.ndarray

    def __post_init__(self) -> None:
        if len(self.times_s) != len(self.values):
            raise ValueError(f"{len(self.times_s)} times but {len(self.values)} values")
        if len(self.times_s) > 1 and np.any(np.diff(self.times_s) < 0):
            raise ValueError("stream times must be non-decreasing (sort by stamp first)")

    @staticmethod
    def sorted(times_s, values) -> "Stream":
        times = np.asarray(times_s, dtype=np.float64)
        order = np.argsort(times, kind="stable")
        vals = [values[i] for i in order] if isinstance(values, list) else np.asarray(values)[order]
        return Stream(times[order], vals)

    def latest_index_at(self, t_s: np.ndarray) -> np.ndarray:
        """Index of the latest item with time <= t (-1 where there is none). t_s: (K,) -> (K,) int."""
        return np.searchsorted(self.times_s, t_s, side="right") - 1


@dataclasses.dataclass(frozen=True)
class ChunkRecord:
    """One action chunk as the controller saw it: received at received_s, actions (H, D), step_period_s."""

    received_s: float
    actions: np.ndarray
    step_period_s: float


@dataclasses.dataclass(frozen=True)
class AlignedEpisode:
    times_s: np.ndarray            # (T,) sample times
    frame_indices: dict[str, np.ndarray]  # camera -> (T,) index into that camera's stream
    state_indices: np.ndarray      # (T,) index into the state stream
    actions: np.ndarray            # (T, D) per-step command targets (robot units)
    covered: np.ndarray            # (T,) bool: a chunk covered this step (False = hold)


def command_at(chunks: list[ChunkRecord], t_s: np.ndarray, gripper_dim: int | None = 6,
               initial_gripper: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Per-step command executed at each time in t_s (K,) -> (actions (K, D), covered (K,) bool).

    chunks must be sorted by received_s. Uncovered steps hold: zeros, with the last commanded gripper value.
    """
    if not chunks:
        raise ValueError("an episode without action chunks has no action targets")
    dim = chunks[0].actions.shape[1]
    received = np.array([c.received_s for c in chunks])
    if np.any(np.diff(received) < 0):
        raise ValueError("chunks must be sorted by received_s")
    out = np.zeros((len(t_s), dim), dtype=np.float32)
    covered = np.zeros(len(t_s), dtype=bool)
    gripper = initial_gripper
    for k, t in enumerate(t_s):
        ci = int(np.searchsorted(received, t, side="right")) - 1
        if ci >= 0:
            chunk = chunks[ci]
            row = int(np.floor((t - chunk.received_s) / chunk.step_period_s + 1e-9))
            if row < chunk.actions.shape[0]:
                out[k] = chunk.actions[row]
                covered[k] = True
                if gripper_dim is not None:
                    gripper = float(chunk.actions[row, gripper_dim])
                continue
            if gripper_dim is not None:  # ran out: hold the last row's gripper
                gripper = float(chunk.actions[-1, gripper_dim])
        if gripper_dim is not None:
            out[k, gripper_dim] = gripper
    return out, covered


def align_episode(cameras: dict[str, Stream], state: Stream, chunks: list[ChunkRecord], period_s: float,
                  end_s: float | None = None) -> AlignedEpisode:
    """Sample an episode on a grid of `period_s` from the first instant every input exists until end_s
    (default: the last chunk's end). Raises ValueError if the episode never has all inputs."""
    if period_s <= 0:
        raise ValueError(f"period_s={period_s} must be > 0")
    streams = {**{f"camera {n}": s for n, s in cameras.items()}, "state": state}
    for name, stream in streams.items():
        if len(stream.times_s) == 0:
            raise ValueError(f"{name} has no messages")
    t0 = max(float(s.times_s[0]) for s in streams.values())
    if end_s is None:
        last = chunks[-1]
        end_s = last.received_s + last.actions.shape[0] * last.step_period_s
    if end_s < t0:
        raise ValueError(f"episode ends at {end_s:.3f} s before every input exists ({t0:.3f} s)")
    n = int(np.floor((end_s - t0) / period_s + 1e-9)) + 1
    times = t0 + period_s * np.arange(n)
    actions, covered = command_at(chunks, times)
    return AlignedEpisode(times_s=times,
                          frame_indices={name: s.latest_index_at(times) for name, s in cameras.items()},
                          state_indices=state.latest_index_at(times), actions=actions, covered=covered)

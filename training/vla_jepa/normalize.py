"""Action normalisation (numpy only, so onnxruntime deployments need no torch).

Policy output -> robot units:
    a = clip(a_norm, -1, 1)
    a[:6] = (a[:6] + 1) / 2 * (max - min) + min          (min-max inverse on dx, dy, dz, droll, dpitch, dyaw)
    a[6]  = 1.0 if a[6] > 0.5 else 0.0                    (binary gripper, 1 = open)
Stats live in `dataset_statistics.json` next to the weights, keyed by embodiment tag like the public code:
    {"franka": {"action": {"min": [...], "max": [...], "mean": [...], "std": [...], "q01": [...], "q99": [...],
                "mask": [true x 6, false]}, "state": {...}, "num_transitions": N, "num_trajectories": M}}
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

GRIPPER_THRESHOLD = 0.5
EPS = 1e-8


def _summary(x: np.ndarray) -> dict:
    return {"min": x.min(0).tolist(), "max": x.max(0).tolist(), "mean": x.mean(0).tolist(),
            "std": x.std(0).tolist(), "q01": np.quantile(x, 0.01, axis=0).tolist(),
            "q99": np.quantile(x, 0.99, axis=0).tolist()}


def compute_stats(actions: np.ndarray, states: np.ndarray | None = None, num_trajectories: int = 0,
                  tag: str = "franka") -> dict:
    """actions (N, A) raw robot units (last dim = gripper), states (N, S) -> stats dict (JSON-able)."""
    actions = np.asarray(actions, dtype=np.float64)
    if actions.ndim != 2 or actions.shape[0] == 0:
        raise ValueError(f"actions must be a non-empty (N, A) array, got shape {actions.shape}")
    act = _summary(actions)
    act["mask"] = [True] * (actions.shape[1] - 1) + [False]
    out = {"action": act, "num_transitions": int(actions.shape[0]), "num_trajectories": int(num_trajectories)}
    if states is not None and len(states):
        out["state"] = _summary(np.asarray(states, dtype=np.float64))
    return {tag: out}


def _action_stats(stats: dict) -> dict:
    if "action" in stats:
        return stats["action"]
    if len(stats) != 1:
        raise ValueError(f"stats hold several embodiment tags {sorted(stats)}; pick one with stats[tag]")
    return next(iter(stats.values()))["action"]


def state_stats(stats: dict) -> dict | None:
    """The state summary (min/max/mean/std/...) of a one-tag stats dict, or None when it has none."""
    if "action" in stats:
        return stats.get("state")
    if len(stats) != 1:
        raise ValueError(f"stats hold several embodiment tags {sorted(stats)}; pick one with stats[tag]")
    return next(iter(stats.values())).get("state")


def normalize_actions(actions: np.ndarray, stats: dict) -> np.ndarray:
    """(..., A) raw -> (..., A) normalised: masked dims min-max to [-1, 1], gripper binarised to {0, 1}."""
    s = _action_stats(stats)
    lo, hi = np.asarray(s["min"]), np.asarray(s["max"])
    mask = np.asarray(s["mask"], dtype=bool)
    a = np.asarray(actions, dtype=np.float64)
    norm = 2 * (a - lo) / np.maximum(hi - lo, EPS) - 1
    out = np.where(mask, np.clip(norm, -1, 1), (a > GRIPPER_THRESHOLD).astype(np.float64))
    return out.astype(np.float32)


def unnormalize_actions(actions_norm: np.ndarray, stats: dict) -> np.ndarray:
    """(..., A) policy output -> robot units: clip to [-1, 1], min-max inverse, gripper snapped to {0, 1}."""
    s = _action_stats(stats)
    lo, hi = np.asarray(s["min"]), np.asarray(s["max"])
    mask = np.asarray(s["mask"], dtype=bool)
    a = np.clip(np.asarray(actions_norm, dtype=np.float64), -1, 1)
    raw = (a + 1) / 2 * (hi - lo) + lo
    out = np.where(mask, raw, (a > GRIPPER_THRESHOLD).astype(np.float64))
    return out.astype(np.float32)


def save_stats(stats: dict, path: str | Path) -> None:
    Path(path).write_text(json.dumps(stats, indent=2))


def load_stats(path: str | Path) -> dict:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: normalisation stats not found")
    stats = json.loads(path.read_text())
    _action_stats(stats)  # validates the layout
    return stats

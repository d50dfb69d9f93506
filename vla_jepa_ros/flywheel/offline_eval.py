"""`vla-jepa offline-eval BUNDLE DATASET`: does a bundle reproduce the demonstrated chunks of a dataset?

Closed-loop evaluation (`vla-jepa eval`) is the measure that counts, but it costs ~40 s of simulation per episode.
This check takes seconds and separates "the model has not fit its data" (large error on its own training set)
from "it fits but does not generalise or drifts in closed loop" (small error on the training set, large on
held-out demonstrations, e.g. a `vla-jepa collect --seed 500` dataset).

For every `stride`-th step t of each episode the recorded images, state and instruction go through the policy's
own inference path (`ModelPolicy.infer`: resize, tokenise, backend, de-normalise); the predicted chunk (H, 7) is
compared in robot units with the recorded actions t .. t+H-1 (clamped at the episode end, as in training).
Rows split the samples by phase: "reach" = before the first recorded gripper close, "after grasp" = the rest.

    xyz_mm        mean |error| of the translation per step (mm)
    zero_xyz_mm   the same for a policy that never moves: the scale against which xyz_mm is small or not
                  (= how far the demonstration moves per step)
    moved_xyz_mm  how far the model's chunk moves per step: well below zero_xyz_mm = it under-shoots (hesitates)
    yaw_deg       mean |error| of the yaw step (degrees)
    gripper_%     chunk steps whose open/closed command matches
    corr x/y/z    correlation of the model's steps with the demonstration's, per axis (1 = follows it, 0 = blind to
                  it): a model can score a fine xyz_mm on the large descending z steps and still not find the cube in x
    words_mm      how far the chunk moves per step when the same images and state come with another instruction of
                  the dataset (`instructions`): about 0 = the model does not read the instruction, and only the
                  trajectory so far tells it which object it is after (it will pick the wrong one in closed loop)
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from ..core.types import Observation

PHASES = ("all", "reach", "after grasp")


@dataclasses.dataclass
class PhaseErrors:
    samples: int = 0
    xyz_mm: float = 0.0
    zero_xyz_mm: float = 0.0
    moved_xyz_mm: float = 0.0
    yaw_deg: float = 0.0
    gripper_pct: float = 0.0
    axis_corr: tuple[float, float, float] = (float("nan"),) * 3  # x, y, z steps: model vs demonstration
    words_mm: float = float("nan")  # chunk change per step under another instruction (nan: one instruction only)

    @property
    def ratio_to_zero(self) -> float:
        return self.xyz_mm / self.zero_xyz_mm if self.zero_xyz_mm > 0 else float("nan")


def chunk_errors(predicted: np.ndarray, recorded: np.ndarray, gripper_threshold: float = 0.5) -> dict[str, float]:
    """predicted, recorded (H, 7) delta-EE chunks in robot units -> per-step mean errors of this sample."""
    if predicted.shape != recorded.shape:
        raise ValueError(f"predicted chunk {predicted.shape} and recorded chunk {recorded.shape} differ")
    return {"xyz_mm": float(np.linalg.norm(predicted[:, :3] - recorded[:, :3], axis=1).mean() * 1e3),
            "zero_xyz_mm": float(np.linalg.norm(recorded[:, :3], axis=1).mean() * 1e3),
            "moved_xyz_mm": float(np.linalg.norm(predicted[:, :3], axis=1).mean() * 1e3),
            "yaw_deg": float(np.degrees(np.abs(predicted[:, 5] - recorded[:, 5])).mean()),
            "gripper_pct": float(((predicted[:, 6] >= gripper_threshold) == (recorded[:, 6] >= gripper_threshold)).mean()
                                 * 100)}


def offline_eval(policy, episodes, cameras: list[str], stride: int = 3, seed: int = 0, total: int | None = None,
                 progress: bool = True, instructions: list[str] | None = None) -> dict[str, PhaseErrors]:
    """policy: anything with infer(Observation, noise=...) -> ActionChunk and `noise_shape` (ModelPolicy);
    episodes: iterable (loaded lazily, `total` of them) of objects with frames (T, V, H, W, 3), states (T, S),
    actions (T, 7), instruction;
    cameras: the dataset's camera names in view order;
    instructions: the dataset's instructions; with two or more, every sample is also run with the next one in
    sorted order (same noise) for `words_mm`. Returns phase -> PhaseErrors (means over samples)."""
    others = sorted(set(instructions or ()))
    swap = {a: others[(i + 1) % len(others)] for i, a in enumerate(others)} if len(others) > 1 else {}
    if stride < 1:
        raise ValueError(f"stride={stride} must be >= 1")
    rng = np.random.default_rng(seed)
    sums = {p: dict.fromkeys(("xyz_mm", "zero_xyz_mm", "moved_xyz_mm", "yaw_deg", "gripper_pct"), 0.0) for p in PHASES}
    counts = dict.fromkeys(PHASES, 0)
    words = {p: [] for p in PHASES}  # per sample: mean xyz change per step (mm) under another instruction
    steps: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {p: [] for p in PHASES}  # (predicted, recorded) (H, 3)
    from tqdm import tqdm

    for ep in tqdm(episodes, total=total, desc="episodes", unit="ep", disable=not progress):
        n = len(ep.actions)
        closed = np.nonzero(ep.actions[:, 6] < 0.5)[0]
        first_close = int(closed[0]) if len(closed) else n
        for t in range(0, n, stride):
            obs = Observation(images={c: ep.frames[t, v] for v, c in enumerate(cameras)}, image_stamps_s={},
                              state=ep.states[t], instruction=ep.instruction)
            scale = getattr(policy, "noise_scale", 1.0)
            noise = (rng.standard_normal(policy.noise_shape) * scale).astype(np.float32)
            predicted = np.asarray(policy.infer(obs, noise=noise).actions)
            recorded = ep.actions[np.minimum(np.arange(t, t + len(predicted)), n - 1)]
            errors = chunk_errors(predicted, recorded)
            other = swap.get(ep.instruction)
            if other is not None:
                swapped = np.asarray(policy.infer(dataclasses.replace(obs, instruction=other), noise=noise).actions)
                change_mm = float(np.linalg.norm(swapped[:, :3] - predicted[:, :3], axis=1).mean() * 1e3)
            for phase in ("all", "reach" if t < first_close else "after grasp"):
                counts[phase] += 1
                if other is not None:
                    words[phase].append(change_mm)
                steps[phase].append((predicted[:, :3], recorded[:, :3]))
                for k, v in errors.items():
                    sums[phase][k] += v
    return {p: PhaseErrors(samples=counts[p], axis_corr=axis_correlations(steps[p]),
                           words_mm=float(np.mean(words[p])) if words[p] else float("nan"),
                           **{k: v / counts[p] for k, v in sums[p].items()}) if counts[p]
            else PhaseErrors() for p in PHASES}


def axis_correlations(pairs: list[tuple[np.ndarray, np.ndarray]]) -> tuple[float, float, float]:
    """[(predicted (H, 3), recorded (H, 3))] -> Pearson correlation per axis over every step (nan where either
    side does not vary)."""
    predicted = np.concatenate([a for a, _ in pairs]).astype(np.float64)  # (N, 3)
    recorded = np.concatenate([b for _, b in pairs]).astype(np.float64)
    out = []
    for d in range(3):
        a, b = predicted[:, d] - predicted[:, d].mean(), recorded[:, d] - recorded[:, d].mean()
        denominator = np.sqrt((a * a).sum() * (b * b).sum())
        out.append(float((a * b).sum() / denominator) if denominator > 1e-18 else float("nan"))
    return tuple(out)


def format_table(report: dict[str, PhaseErrors]) -> str:
    rows = [f"{'phase':<12} {'samples':>7} {'xyz mm/step':>11} {'never-move':>10} {'ratio':>6} {'moves mm':>8} "
            f"{'yaw deg':>7} {'gripper %':>9} {'corr x/y/z':>14} {'words mm':>8}"]
    for phase, e in report.items():
        corr = "/".join(f"{c:.2f}" for c in e.axis_corr)
        rows.append(f"{phase:<12} {e.samples:>7} {e.xyz_mm:>11.2f} {e.zero_xyz_mm:>10.2f} {e.ratio_to_zero:>6.2f} "
                    f"{e.moved_xyz_mm:>8.2f} {e.yaw_deg:>7.2f} {e.gripper_pct:>9.1f} {corr:>14} {e.words_mm:>8.2f}")
    return "\n".join(rows)


def run(bundle_path: str, dataset: str, stride: int, max_episodes: int, backend: str, threads: int,
        out_json: str | None, noise_scale: float = 1.0) -> int:
    from vla_jepa.data import NativeEpisodeSource

    from ..runtime.factory import BackendParams, make_model_policy

    source = NativeEpisodeSource(dataset)
    cameras = list(json.loads((Path(dataset) / "meta.json").read_text())["cameras"])
    policy = make_model_policy(bundle_path, BackendParams(backend=backend, threads=threads, noise_scale=noise_scale))
    missing = [c for c in policy.manifest.cameras if c not in cameras]
    if missing:
        raise SystemExit(f"dataset {dataset} has cameras {cameras}; bundle needs {list(policy.manifest.cameras)}")
    count = len(source) if max_episodes <= 0 else min(max_episodes, len(source))
    instructions = [e["instruction"] for e in source.meta["episodes"]]
    report = offline_eval(policy, (source.load(i) for i in range(count)), cameras, stride=stride, total=count,
                          instructions=instructions)
    print(f"{policy.model_id} on {dataset} ({count} episodes, every {stride}. step, noise scale {noise_scale:g})\n"
          + format_table(report))
    if out_json:
        phases = {p: dataclasses.asdict(e) for p, e in report.items()}
        Path(out_json).write_text(json.dumps({"bundle": bundle_path, "dataset": dataset, "episodes": count,
                                              "stride": stride, "noise_scale": noise_scale, "phases": phases},
                                             indent=2))
    return 0

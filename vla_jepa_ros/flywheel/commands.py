"""`vla-jepa collect` and `vla-jepa eval`: demonstrations and closed-loop evaluation in franky-sim."""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

from .sim_episodes import (episode_instructions, episode_table, paired_table, run_sim_episodes,
                           same_layout_instructions, success_table)


def _save(results, path: Path, extra: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**extra, "episodes": [dataclasses.asdict(r) | {"success": r.success}
                                                      for r in results]}, indent=2))


def collect(out_dir: str, episodes_per_family: int, seed: int, families: tuple[str, ...],
            task_timeout_s: float, robot_host: str | None = None, aim_noise_m: float = 0.0,
            target: str = "random") -> int:
    """Scripted-expert episodes through the full sim graph, each recorded as an MCAP episode bag in out_dir.
    aim_noise_m > 0: the expert aims off target on purpose (DART); relabel those bags with the exact expert.
    target "near": each task names the cube nearest the robot in its layout (see episode_instructions)."""
    t0 = time.monotonic()
    instructions = episode_instructions(episodes_per_family, families, seed=seed, target=target)
    policy = {"policy": "expert", "expert_aim_noise_m": float(aim_noise_m), "expert_aim_noise_seed": int(seed)}
    results = run_sim_episodes(instructions, seed=seed, policy_params=policy, record_dir=out_dir,
                               task_timeout_s=task_timeout_s, robot_host=robot_host)
    print("\n" + episode_table(results) + "\n\n" + success_table(results))
    relabel = " --relabel-expert" if aim_noise_m else ""
    print(f"\n{len(results)} episodes recorded in {out_dir} ({time.monotonic() - t0:.0f} s); next: "
          f"vla-jepa bags-to-dataset {out_dir} DATASET{relabel}")
    _save(results, Path(out_dir) / "collect_summary.json",
          {"policy": "expert", "seed": seed, "aim_noise_m": float(aim_noise_m), "target": target})
    return 0


def evaluate(bundle: str, episodes_per_family: int, seed: int, families: tuple[str, ...], backend: str,
             threads: int, out_dir: str, record_dir: str | None, task_timeout_s: float,
             robot_host: str | None = None, noise_scale: float = 1.0, same_layouts: bool = False,
             target: str = "random", min_success_rate: float = 0.0) -> int:
    """A model bundle in the full sim graph (policy node on `backend`): success table with 95 % intervals.
    same_layouts: every family runs on layouts seed..seed+N-1 with the same cube (one graph per family), and a
    paired table compares the families layout by layout. target: which cube the tasks name (episode_instructions).
    Returns 1 when the overall success rate is below min_success_rate, else 0."""
    from ..runtime.bundle import load_bundle

    bundle_dir = Path(bundle).resolve()
    manifest = load_bundle(bundle_dir).manifest
    t0 = time.monotonic()
    policy = {"policy": "bundle", "bundle_path": str(bundle_dir), "backend": backend, "threads": threads,
              "noise_scale": noise_scale, "use_ground_truth": False, "cameras": list(manifest.cameras)}
    run = dict(seed=seed, policy_params=policy, record_dir=record_dir, task_timeout_s=task_timeout_s,
               robot_host=robot_host)
    if same_layouts:
        results = []
        schedule = same_layout_instructions(episodes_per_family, families, seed=seed, target=target)
        for family, instructions in schedule.items():
            results += run_sim_episodes(instructions, out_dir=Path(out_dir) / family, **run)
        results = [dataclasses.replace(r, episode=k) for k, r in enumerate(results)]
        last = seed + episodes_per_family - 1
    else:
        results = run_sim_episodes(episode_instructions(episodes_per_family, families, seed=seed, target=target),
                                   out_dir=out_dir, **run)
        last = seed + len(results) - 1
    print(f"\nmodel {manifest.model_id} ({backend}, noise scale {noise_scale:g}), layouts seeds {seed}..{last}"
          f"{' (the same for every family)' if same_layouts else ''}\n")
    print(episode_table(results) + "\n\n" + success_table(results))
    if same_layouts:
        print("\n" + paired_table(results))
    _save(results, Path(out_dir) / "eval_results.json",
          {"min_success_rate": min_success_rate, "model_id": manifest.model_id, "bundle": str(bundle_dir), "backend": backend, "seed": seed,
           "noise_scale": noise_scale, "same_layouts": same_layouts, "target": target, "wall_s": time.monotonic() - t0})
    print(f"\nimage strips and eval_results.json in {out_dir}")
    return success_exit_code(results, min_success_rate)


def success_exit_code(results, min_success_rate: float) -> int:
    """0 when the share of successful episodes reaches min_success_rate, else 1 (saying so on stderr)."""
    import sys

    rate = sum(r.success for r in results) / max(len(results), 1)
    if rate < min_success_rate:
        print(f"success rate {rate:.3f} ({sum(r.success for r in results)}/{len(results)}) is below "
              f"--min-success-rate {min_success_rate:g}", file=sys.stderr)
        return 1
    return 0

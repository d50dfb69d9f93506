"""Episodes per minute of `vla-jepa libero-eval` with 1, 2, ... workers (run inside .venv-libero).

    .venv-libero/bin/python benchmarks/bench_libero.py BUNDLE [--workers 1 2] [--episodes 4] [--max-steps 0]

Each worker count evaluates the same episodes (libero_spatial, tasks 0.., one episode each, full max steps unless
--max-steps); prints a table and writes bench_out/libero_eval.json.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from vla_jepa_ros.libero.evaluate import run_eval
from vla_jepa_ros.libero.protocol import ProtocolConfig
from vla_jepa_ros.libero.rollout import PolicySpec


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bundle")
    p.add_argument("--suite", default="libero_spatial")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--episodes", type=int, default=4, help="episodes per worker count (one per task)")
    p.add_argument("--max-steps", type=int, default=0)
    p.add_argument("--out", default="bench_out/libero_eval.json")
    args = p.parse_args()
    rows = []
    for k in args.workers:
        report = run_eval(PolicySpec(bundle=args.bundle), [args.suite], f"bench_out/libero_w{k}",
                          episodes_per_task=1, tasks=list(range(args.episodes)), workers=k,
                          protocol=ProtocolConfig(suite=args.suite, max_steps=args.max_steps), video=False)
        steps = sum(e["steps"] + 10 for e in report["episodes"])
        rows.append({"workers": k, "episodes": len(report["episodes"]), "wall_s": report["wall_s"],
                     "episodes_per_min": report["episodes_per_min"], "env_steps_per_s": steps / report["wall_s"],
                     "success": report["average"]["pooled_success_rate"]})
    print("| workers | episodes | wall s | episodes/min | env steps/s |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['workers']} | {r['episodes']} | {r['wall_s']:.0f} | {r['episodes_per_min']:.2f} | "
              f"{r['env_steps_per_s']:.1f} |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()

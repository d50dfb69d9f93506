"""Benchmarks for a preset: training throughput, eager inference latency, ONNX one graph vs prefix + head.

    vla-jepa-train-bench --preset tiny --threads 1
Prints a table; numbers are medians over `repeats` runs on random weights.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass

import numpy as np
import torch

from .config import get_config
from .data import InMemoryEpisodeSource, RobotDataset, collate, synthetic_episodes
from .model import make_model
from .normalize import compute_stats
from .vlm import count_params


@dataclass
class BenchArgs:
    preset: str = "tiny"
    threads: int = 1
    batch_size: int = 8
    repeats: int = 10
    onnx: bool = True


def bench(args: BenchArgs) -> dict[str, float]:
    torch.set_num_threads(args.threads)
    cfg = get_config(args.preset)
    torch.manual_seed(0)
    model = make_model(cfg)
    eps = synthetic_episodes(2, length=16, num_views=cfg.num_views, state_dim=max(cfg.state_dim, 1))
    stats = compute_stats(np.concatenate([e.actions for e in eps]))
    ds = RobotDataset(InMemoryEpisodeSource(eps), cfg, model.tokenizer, model.robot_layout, stats)
    batch = collate([ds[i % len(ds)] for i in range(args.batch_size)])
    batch["sample_seed"] = torch.arange(args.batch_size)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    model.train()
    times = []
    for i in range(args.repeats + 2):
        t = time.perf_counter()
        losses = model.robot_losses(batch)
        (losses["action_loss"] + 0.1 * losses["wm_loss"]).backward()
        opt.step()
        opt.zero_grad()
        if i >= 2:
            times.append(time.perf_counter() - t)
    out = {"train_samples_per_s": args.batch_size / float(np.median(times))}
    model.eval()
    policy = model.inference_module()
    from .export import example_inputs

    inputs = example_inputs(model)
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    with torch.no_grad():
        policy(*inputs)
        lat = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            policy(*inputs)
            lat.append(time.perf_counter() - t)
    torch.set_num_threads(prev)
    out["eager_inference_ms_1thread"] = 1000 * float(np.median(lat))
    for name in ("vlm", "action_model", "vj_predictor", "vj_encoder"):
        out[f"params_{name}_M"] = count_params(getattr(model, name)) / 1e6
    if args.onnx:
        from .export import export_onnx

        with tempfile.TemporaryDirectory() as d:
            (one,) = export_onnx(model, f"{d}/policy.onnx", threads=1, repeats=args.repeats)
            pre, head = export_onnx(model, f"{d}/policy.onnx", split=True, threads=1, repeats=args.repeats)
        out["ort_one_graph_ms"] = one.ort_ms
        out["ort_prefix_plus_head_ms"] = pre.ort_ms + head.ort_ms
        out["ort_one_graph_cosine"] = one.cosine
    return out


def main() -> None:
    import tyro

    res = bench(tyro.cli(BenchArgs, prog="vla-jepa-train-bench"))
    width = max(len(k) for k in res)
    for k, v in res.items():
        print(f"{k:<{width}}  {v:10.3f}")


if __name__ == "__main__":
    main()

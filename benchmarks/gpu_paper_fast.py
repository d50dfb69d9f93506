"""The faster-inference variants of the torch backend side by side, in one process, on the same inputs
(random weights: latency does not depend on them; accuracy on random weights is only a first check).

    python3 benchmarks/gpu_paper_fast.py --out OUT_DIR                       # paper preset, CUDA, bf16
    .venv/bin/python benchmarks/gpu_paper_fast.py --device cpu --preset tiny --iterations 5 --out /tmp/x  # dry run

Variants (CUDA: all bf16 + CUDA graphs; CPU: float32, no graphs, fp8 emulated):
  base           today's path (bf16, SDPA, CUDA graphs)            -> the reference chunk for cosine / max error
  fp8            FP8 E4M3 linears (--fp8 rules, per-channel scales) through torch._scaled_mm
  fused-head     Euler loop with its step-invariant work hoisted
  prefix-reuse   the prompt's per-task part computed once (padding left out)
  all            fp8 + fused-head + prefix-reuse
  base+compile / all+compile   the same with torch.compile (--compile-mode) under the graphs (with --compile)
Each row: first call (capture/compile), median and p99 of the prefix, head and whole call, ratio to base, chunk
cosine and max |error| to base, peak device memory. A variant that fails is reported and the others still run;
variants that would start after --budget-s are skipped (reported as such). Writes OUT_DIR/fast_<preset>.json;
benchmarks/gpu_fast_table.py turns result files into the markdown table.
"""
from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "training"))


def _stats(values) -> list[float]:
    v = np.asarray(values)
    return [float(np.median(v)), float(np.percentile(v, 99))]


def variants(cuda: bool, fp8: str, compile_: bool, compile_mode: str) -> list[tuple[str, dict]]:
    base = dict(dtype="bfloat16" if cuda else "float32", sdpa="flash" if cuda else "auto", cuda_graphs=cuda)
    rows = [("base", {}), ("fp8", dict(fp8=fp8)), ("fused-head", dict(fused_head=True)),
            ("prefix-reuse", dict(prefix_cache=True)),
            ("all", dict(fp8=fp8, fused_head=True, prefix_cache=True))]
    if compile_:
        rows += [("base+compile", dict(compile=True, compile_mode=compile_mode)),
                 ("all+compile", dict(fp8=fp8, fused_head=True, prefix_cache=True, compile=True,
                                      compile_mode=compile_mode))]
    return [(name, {**base, **extra}) for name, extra in rows]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="paper")
    p.add_argument("--device", default="cuda")
    p.add_argument("--iterations", type=int, default=100)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--fp8", default="all", help="FP8 rules: a vla_jepa.quant.FP8_PRESETS name or pattern=fp8,...")
    p.add_argument("--fp8-scaling", default="channel", choices=("channel", "tensor"))
    p.add_argument("--compile", action="store_true", help="add the torch.compile variants (minutes at paper size)")
    p.add_argument("--compile-mode", default="default")
    p.add_argument("--only", default="", help="comma-separated variant names to run (default: all)")
    p.add_argument("--budget-s", type=float, default=420.0, help="start no variant after this many seconds")
    p.add_argument("--out", default="", help="folder for fast_<preset>.json")
    p.add_argument("--tokenizer", default="", help="a tokenizer.json (e.g. Qwen3-VL's) instead of the presets' "
                   "byte-level one: the real prompt length, so the padding prefix-reuse leaves out")
    args = p.parse_args()

    import torch
    from vla_jepa.config import get_config
    from vla_jepa.model import make_model

    from vla_jepa_ros.runtime.export import compare, example_inputs
    from vla_jepa_ros.runtime.torch_backend import TorchBackend, TorchBackendConfig

    start = time.perf_counter()
    cuda = args.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        print("no CUDA device visible to torch", file=sys.stderr)
        return 1
    if not cuda:
        torch.set_num_threads(1)
    card = torch.cuda.get_device_name(0) if cuda else "CPU"
    cfg = get_config(args.preset)
    torch.manual_seed(0)
    tokenizer = None
    if args.tokenizer:
        from vla_jepa.prompt import load_tokenizer

        tokenizer = load_tokenizer(args.tokenizer, cfg.max_action_tokens)
    model = make_model(cfg, tokenizer, with_world_model=False, device=args.device).eval()
    n_params = sum(q.numel() for q in model.parameters())
    words = "put the red cube in the bowl".split()  # the byte-level tokenizer fits fewer words than Qwen's
    while True:
        try:
            inputs = example_inputs(cfg, model.tokenizer, seed=0, instruction=" ".join(words))
            break
        except ValueError:
            if len(words) == 1:
                raise
            words = words[:-1]
    prompt_tokens = int(inputs["attention_mask"].sum())
    head = {"card": card, "torch": torch.__version__, "preset": cfg.name, "params_m": n_params / 1e6,
            "views": cfg.num_views, "image_px": cfg.image_size, "prompt_len": cfg.max_prompt_len,
            "prompt_tokens_unpadded": prompt_tokens, "euler_steps": cfg.num_euler_steps,
            "iterations": args.iterations, "fp8_rules": args.fp8, "fp8_scaling": args.fp8_scaling,
            "tokenizer": Path(args.tokenizer).name if args.tokenizer else "byte-level"}
    print(json.dumps(head), flush=True)

    only = {v for v in args.only.split(",") if v}
    rows, reference = [], None
    for name, extra in variants(cuda, args.fp8, args.compile, args.compile_mode):
        if only and name not in only:
            continue
        if time.perf_counter() - start > args.budget_s:
            rows.append({"variant": name, "skipped": f"budget {args.budget_s:.0f} s spent"})
            print(json.dumps(rows[-1]), flush=True)
            continue
        backend = None
        try:
            if cuda:
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
            conf = TorchBackendConfig(device=args.device, fp8_scaling=args.fp8_scaling, **extra)
            backend = TorchBackend(model, conf)  # casts the shared model in place; fp8 quantises a copy
            t = time.perf_counter()
            out, first_stages = backend.run(inputs)
            first_s = time.perf_counter() - t
            for _ in range(args.warmup):
                backend.run(inputs)
            prefix, head_ms, total = [], [], []
            for _ in range(args.iterations):
                t = time.perf_counter()
                _, stages = backend.run(inputs)
                total.append((time.perf_counter() - t) * 1e3)
                prefix.append(stages["prefix_ms"])
                head_ms.append(stages["head_ms"])
            if reference is None:
                reference = out
            row = {"variant": name, "config": {k: v for k, v in extra.items()}, "first_call_s": first_s,
                   "prefix_ms": _stats(prefix), "head_ms": _stats(head_ms), "total_ms": _stats(total),
                   **compare(reference, out)}
            if "task_prefix_ms" in first_stages:
                row["task_prefix_ms"] = first_stages["task_prefix_ms"]
            if backend.fp8_plan:
                row["fp8_layers"] = sum(v == "fp8" for v in backend.fp8_plan.values())
                row["bf16_layers"] = sum(v != "fp8" for v in backend.fp8_plan.values())
            if cuda:
                row["peak_mem_gib"] = torch.cuda.max_memory_allocated() / 2**30
        except Exception as exc:  # noqa: BLE001 - report and go on with the other variants
            row = {"variant": name, "error": f"{type(exc).__name__}: {exc}"[:400]}
        del backend
        gc.collect()
        rows.append(row)
        print(json.dumps(row), flush=True)

    base = next((r["total_ms"][0] for r in rows if r["variant"] == "base" and "total_ms" in r), None)
    for r in rows:
        if "total_ms" in r and base:
            r["vs_base"] = r["total_ms"][0] / base
    result = {**head, "rows": rows, "wall_s": time.perf_counter() - start}
    from gpu_fast_table import table  # noqa: E402 - same folder

    print("\n" + table([result]), flush=True)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / f"fast_{cfg.name}.json").write_text(json.dumps(result, indent=2))
    return 0 if all("error" not in r for r in rows) else 2


if __name__ == "__main__":
    raise SystemExit(main())

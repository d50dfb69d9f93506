"""Paper-size VLA-JEPA policy latency with torch on CUDA (random weights: latency does not depend on them).

    .venv/bin/python benchmarks/gpu_paper_latency.py                    # paper preset, cuda, bf16
    .venv/bin/python benchmarks/gpu_paper_latency.py --compile          # also torch.compile variants
    .venv/bin/python benchmarks/gpu_paper_latency.py --preset tiny --device cpu --iterations 10   # smoke test

Variants (each in the same run, on the same inputs): eager fp32 (reference for parity), eager bf16 + SDPA with
flash preferred, bf16 + CUDA graphs (prefix and head captured separately), optionally bf16 + torch.compile.
Prints the card, one row per variant (median / p99 of prefix, head and total, ratio to eager bf16, cosine to
fp32 eager) and the host preprocessing time (2 x 640x480 -> image_size). Writes --json if given.
A variant that fails (e.g. CUDA-graph capture) is reported with its error and the others still run.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "training"))


def _stats(values):
    v = np.asarray(values)
    return float(np.median(v)), float(np.percentile(v, 99))


def _profile(model, inputs, device: str) -> None:
    """One eager bf16 call under torch.profiler: the top kernels by device time, attention kernels marked."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from vla_jepa_ros.runtime.torch_backend import TorchBackend, TorchBackendConfig

    backend = TorchBackend(model, TorchBackendConfig(device=device, dtype="bfloat16", sdpa="flash"))
    backend.run(inputs)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.startswith("cuda") else [])
    with profile(activities=activities) as prof:
        backend.run(inputs)
    sort = "cuda_time_total" if device.startswith("cuda") else "cpu_time_total"
    print(prof.key_averages().table(sort_by=sort, row_limit=15, max_name_column_width=70), flush=True)
    names = [e.key for e in prof.key_averages()]
    attention = sorted({n for n in names if any(k in n.lower() for k in ("flash", "fmha", "attention", "sdpa"))})
    print("attention kernels/ops seen:", attention, flush=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="paper")
    p.add_argument("--device", default="cuda")
    p.add_argument("--iterations", type=int, default=100)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--compile", action="store_true", help="add torch.compile variants (slow to compile)")
    p.add_argument("--compile-mode", default="default", help="torch.compile mode: default | max-autotune-no-cudagraphs")
    p.add_argument("--no-fp32", action="store_true", help="skip the fp32 reference (saves memory and time)")
    p.add_argument("--json", default="")
    p.add_argument("--profile", action="store_true",
                   help="profile one eager bf16 call and print its top kernels (shows which SDPA kernel ran)")
    args = p.parse_args()

    import torch
    from vla_jepa.config import get_config
    from vla_jepa.model import make_model

    from vla_jepa_ros.core.images import to_model_input
    from vla_jepa_ros.runtime.export import compare, example_inputs
    from vla_jepa_ros.runtime.torch_backend import TorchBackend, TorchBackendConfig

    cuda = args.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        print("no CUDA device visible to torch", file=sys.stderr)
        return 1
    card = torch.cuda.get_device_name(0) if cuda else "CPU"
    cfg = get_config(args.preset)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    model = make_model(cfg, with_world_model=False, device=args.device).eval()
    n_params = sum(p.numel() for p in model.parameters())
    print(f"{card} | torch {torch.__version__} | preset {cfg.name}: {n_params / 1e6:.0f} M params (VLM + head), "
          f"{cfg.num_views} x {cfg.image_size} px, prompt {cfg.max_prompt_len} tokens, horizon {cfg.horizon}, "
          f"{cfg.num_euler_steps} Euler steps; built in {time.perf_counter() - t0:.1f} s", flush=True)
    # Shapes are static (the prompt is padded to max_prompt_len), so latency does not depend on the instruction.
    # Without the Qwen tokenizer the presets use a byte-level one (a token per character), which fits fewer words.
    words = "put the red cube in the bowl".split()
    while True:
        try:
            inputs = example_inputs(cfg, model.tokenizer, seed=0, instruction=" ".join(words))
            break
        except ValueError:
            if len(words) == 1:
                raise
            words = words[:-1]
    print(f"instruction {' '.join(words)!r} padded to {cfg.max_prompt_len} tokens", flush=True)

    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (480, 640, 3), dtype=np.uint8) for _ in range(cfg.num_views)]
    pre = []
    for _ in range(50):
        t = time.perf_counter()
        to_model_input(frames, cfg.image_size)
        pre.append((time.perf_counter() - t) * 1e3)
    print(f"host preprocessing ({cfg.num_views} x 640x480 -> {cfg.image_size}): median {np.median(pre):.2f} ms",
          flush=True)

    variants = []
    if not args.no_fp32:
        variants.append(("eager fp32", TorchBackendConfig(device=args.device, dtype="float32", sdpa="auto")))
    variants.append(("eager bf16 sdpa-flash", TorchBackendConfig(device=args.device, dtype="bfloat16", sdpa="flash")))
    if cuda:
        variants.append(("bf16 cuda-graphs", TorchBackendConfig(device=args.device, dtype="bfloat16", sdpa="flash",
                                                                cuda_graphs=True)))
    if args.compile:
        variants.append(("bf16 compile", TorchBackendConfig(device=args.device, dtype="bfloat16", sdpa="flash",
                                                            compile=True, compile_mode=args.compile_mode)))
        if cuda:
            variants.append(("bf16 compile+graphs", TorchBackendConfig(
                device=args.device, dtype="bfloat16", sdpa="flash", compile=True, compile_mode=args.compile_mode,
                cuda_graphs=True)))
    rows, reference = [], None
    for name, conf in variants:
        try:
            backend = TorchBackend(model, conf)  # casts the shared model in place to conf's dtype
            t = time.perf_counter()
            out, _ = backend.run(inputs)
            first_s = time.perf_counter() - t
            for _ in range(args.warmup):
                backend.run(inputs)
            prefix, head, total = [], [], []
            for _ in range(args.iterations):
                t = time.perf_counter()
                _, stages = backend.run(inputs)
                total.append((time.perf_counter() - t) * 1e3)
                prefix.append(stages["prefix_ms"])
                head.append(stages["head_ms"])
            if reference is None:
                reference = out
            row = {"variant": name, "first_call_s": first_s, "prefix": _stats(prefix), "head": _stats(head),
                   "total": _stats(total), **{k: v for k, v in compare(reference, out).items()}}
            if cuda:
                row["max_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
        except Exception as exc:  # noqa: BLE001 - report and go on with the other variants
            row = {"variant": name, "error": f"{type(exc).__name__}: {exc}"[:300]}
        rows.append(row)
        print(json.dumps(row), flush=True)

    if args.profile:
        _profile(model, inputs, args.device)

    base = next((r["total"][0] for r in rows if r["variant"] == "eager bf16 sdpa-flash" and "total" in r), None)
    print(f"\n{card}, preset {cfg.name}, batch 1, {args.iterations} calls (ms; median / p99)")
    print(f"{'variant':<24}{'prefix':>16}{'head (4 steps)':>18}{'total':>16}{'vs eager bf16':>15}{'cos vs ref':>12}")
    for r in rows:
        if "error" in r:
            print(f"{r['variant']:<24} FAILED: {r['error']}")
            continue
        ratio = r["total"][0] / base if base else float("nan")
        print(f"{r['variant']:<24}{r['prefix'][0]:>8.2f} /{r['prefix'][1]:>6.2f}{r['head'][0]:>10.2f} /"
              f"{r['head'][1]:>6.2f}{r['total'][0]:>8.2f} /{r['total'][1]:>6.2f}{ratio:>14.2f}x{r['cosine']:>12.5f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"card": card, "preset": cfg.name, "rows": rows,
                                               "preprocess_median_ms": float(np.median(pre))}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

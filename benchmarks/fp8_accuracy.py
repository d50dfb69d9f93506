"""FP8 accuracy gate per module group: the bf16 model vs the same with one group of linear layers in E4M3
(per-channel weight / per-token input scales unless --scaling), on the same inputs; chunk cosine (worst sample)
and max |error|, and whether the group holds the gate (cosine >= 0.999). Also the float32-vs-bf16 difference, for
scale. On the CPU the FP8 numerics are emulated (float32 products of the E4M3 values); on CUDA sm_89+ they run
through torch._scaled_mm.

    .venv/bin/python benchmarks/fp8_accuracy.py --device cpu --presets tiny,small,paper-2l,tiny_sim --out DIR
    python3 benchmarks/fp8_accuracy.py --device cuda --presets paper --out DIR

Presets: any vla_jepa preset (random weights), `paper-2l` (paper widths, 2 LM / 2 vision / 2 DiT layers: the
paper's matrix shapes at a size a CPU can run), `tiny_sim` (the shipped bundle models/tiny_sim: trained weights).
Random weights have no activation outliers, which is what makes FP8 hard on trained LLMs: treat random-weight rows
as a check of the machinery, the trained rows as the accuracy evidence. Writes DIR/fp8_accuracy.json.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "training"))

GROUPS = {
    "lm.attn": "vlm.language_model.layers.*.self_attn.*=fp8",
    "lm.mlp": "vlm.language_model.layers.*.mlp.*=fp8",
    "vision.attn": "vlm.visual.blocks.*.attn.*=fp8",
    "vision.mlp": "vlm.visual.blocks.*.mlp.*=fp8",
    "vision.mergers": "vlm.visual.*merger*=fp8",
    "head.attn": "action_model.model.transformer_blocks.*.attn1.*=fp8",
    "head.ff": "action_model.model.transformer_blocks.*.ff.*=fp8",
    "preset lm": "lm",
    "preset vlm": "vlm",
    "preset all": "all",
}


def _model(name: str):
    import torch
    from vla_jepa.config import get_config, replace
    from vla_jepa.model import make_model

    torch.manual_seed(0)
    if name == "tiny_sim":
        from vla_jepa_ros.runtime.bundle import load_bundle
        from vla_jepa_ros.runtime.torch_backend import TorchBackend

        return TorchBackend.load_model(load_bundle(str(ROOT / "models" / "tiny_sim"))).eval(), "trained"
    if name == "paper-2l":
        cfg = get_config("paper")
        cfg = dataclasses.replace(cfg, name="paper-2l",
                                  vision=replace(cfg.vision, depth=2, deepstack_visual_indexes=(0, 1)),
                                  text=replace(cfg.text, num_layers=2),
                                  action_head=replace(cfg.action_head, num_layers=2))
        return make_model(cfg, with_world_model=False).eval(), "random"
    return make_model(get_config(name), with_world_model=False).eval(), "random"


def _inputs(model, n: int, device):
    import torch
    from vla_jepa.prompt import encode_instruction

    cfg = model.cfg
    words = "put the red cube in the bowl".split()
    while True:
        try:
            ids, mask = encode_instruction(model.tokenizer, " ".join(words), cfg.max_prompt_len, cfg=cfg)
            break
        except ValueError:
            words = words[:-1]
    g = torch.Generator().manual_seed(1)
    images = torch.rand(n, cfg.num_views, 3, cfg.image_size, cfg.image_size, generator=g)
    state = torch.randn(n, max(cfg.state_dim, 1), generator=g) * 0.3
    noise = torch.randn(n, cfg.horizon, cfg.action_dim, generator=g)
    ids, mask = torch.from_numpy(ids).repeat(n, 1), torch.from_numpy(mask).repeat(n, 1)
    return [t.to(device) for t in (images, ids, mask, state, noise)]


def _chunk(model, inputs, dtype):
    import torch

    images, ids, mask, state, noise = inputs
    m = model.to(dtype)
    with torch.inference_mode():
        return m.predict_actions(images.to(dtype), ids, mask, state.to(dtype), noise.to(dtype)).float()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--presets", default="tiny,small")
    p.add_argument("--samples", type=int, default=3, help="input draws per preset (the worst one is reported)")
    p.add_argument("--scaling", default="channel", choices=("channel", "tensor"))
    p.add_argument("--groups", default="", help="comma-separated group names (default: all)")
    p.add_argument("--out", default="")
    args = p.parse_args()

    import torch
    from vla_jepa.quant import chunk_metrics, quantize_linears

    if args.device == "cpu":
        torch.set_num_threads(1)
    mode = "emulate" if args.device == "cpu" else "auto"
    groups = {k: v for k, v in GROUPS.items() if not args.groups or k in args.groups.split(",")}
    results = []
    for preset in args.presets.split(","):
        t0 = time.perf_counter()
        model, weights = _model(preset)
        model = model.to(args.device)
        samples = 1 if preset.startswith("paper") and args.device == "cpu" else args.samples
        inputs = _inputs(model, samples, args.device)
        ref32 = _chunk(copy.deepcopy(model), inputs, torch.float32)
        ref = _chunk(copy.deepcopy(model), inputs, torch.bfloat16)
        row = {"preset": preset, "weights": weights, "samples": samples, "scaling": args.scaling,
               "device": args.device, "fp8_numerics": "emulated" if mode == "emulate" else "torch._scaled_mm",
               "bf16_vs_fp32": chunk_metrics(ref32, ref), "groups": {}}
        for name, rules in groups.items():
            q = copy.deepcopy(model).float()
            plan = quantize_linears(q, rules, args.scaling, mode)
            n = sum(v == "fp8" for v in plan.values())
            if n == 0:
                continue
            metrics = chunk_metrics(ref, _chunk(q, inputs, torch.bfloat16))
            row["groups"][name] = {**metrics, "fp8_layers": n, "holds": metrics["cosine"] >= 0.999}
            del q
        row["seconds"] = time.perf_counter() - t0
        results.append(row)
        print(json.dumps(row), flush=True)
        del model

    lines = [f"FP8 E4M3 ({args.scaling} scales, {results[0]['fp8_numerics'] if results else ''}) vs the bf16 model, "
             "action chunk of the worst sample", "",
             "| preset | weights | group | fp8 layers | cosine vs bf16 | max abs err | holds (>= 0.999) |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        b = r["bf16_vs_fp32"]
        lines.append(f"| {r['preset']} | {r['weights']} | (bf16 vs fp32, for scale) | - | {b['cosine']:.6f} | "
                     f"{b['max_abs_err']:.2e} | - |")
        for name, g in r["groups"].items():
            lines.append(f"| {r['preset']} | {r['weights']} | {name} | {g['fp8_layers']} | {g['cosine']:.6f} | "
                         f"{g['max_abs_err']:.2e} | {'yes' if g['holds'] else 'NO'} |")
    print("\n" + "\n".join(lines))
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "fp8_accuracy.json").write_text(json.dumps(results, indent=2))
        (Path(args.out) / "fp8_accuracy.md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

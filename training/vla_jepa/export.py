"""ONNX export of the static inference graph (torch.onnx.export, dynamo=True, opset 23 -> ONNX `Attention` ops).

One graph (default): policy.onnx with inputs
    images (B, V, 3, H, W) float32 RGB in [0, 1], input_ids (B, L) int64, attention_mask (B, L) int64,
    state (B, state_dim) float32 (B, 1 when the model has no state), noise (B, horizon, action_dim) float32
and output actions_normalized (B, horizon, action_dim). Split mode writes prefix.onnx (-> embodied (B, 32, D))
and head.onnx ((embodied, state, noise) -> actions) for runtimes that want to reuse the prefix.
No rclpy, no ROS: importable anywhere torch + onnx are installed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .model import HeadModule, InferenceModule, PrefixModule, VLAJEPA
from .prompt import encode_instruction

OPSET = 23


@dataclass
class ExportReport:
    path: str
    attention_nodes: int
    cosine: float
    max_abs_err: float
    ort_ms: float
    torch_ms: float


def example_inputs(model: VLAJEPA, batch_size: int = 1, seed: int = 0,
                   instruction: str = "pick up the red cube") -> tuple[torch.Tensor, ...]:
    """Fixed example inputs (images, input_ids, attention_mask, state, noise) for export and parity checks."""
    cfg = model.cfg
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(batch_size, cfg.num_views, 3, cfg.image_size, cfg.image_size, generator=g)
    ids, mask = encode_instruction(model.tokenizer, instruction, cfg.max_prompt_len, cfg=cfg)
    ids = torch.from_numpy(np.repeat(ids, batch_size, 0))
    mask = torch.from_numpy(np.repeat(mask, batch_size, 0))
    state = torch.randn(batch_size, max(cfg.state_dim, 1), generator=g)
    noise = torch.randn(batch_size, cfg.horizon, cfg.action_dim, generator=g)
    return images, ids, mask, state, noise


def count_attention_nodes(onnx_path: str | Path) -> int:
    import onnx

    m = onnx.load(str(onnx_path), load_external_data=False)
    n = sum(node.op_type == "Attention" for node in m.graph.node)
    for f in m.functions:  # the exporter may keep some ops inside local functions
        n += sum(node.op_type == "Attention" for node in f.node)
    return n


def _export(module: torch.nn.Module, args: tuple, names_in: list[str], names_out: list[str], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    n_bytes = sum(p.numel() * p.element_size() for p in module.parameters())
    external = n_bytes > 1_500_000_000  # protobuf caps a single .onnx file at 2 GB (the paper size needs this)
    with torch.no_grad():
        prog = torch.onnx.export(module, args, dynamo=True, opset_version=OPSET, input_names=names_in,
                                 output_names=names_out, external_data=external)
    prog.save(str(path), external_data=external)


def _ort_session(path: Path, threads: int):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def _median_ms(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return float(np.median(times))


def export_onnx(checkpoint_or_model: str | Path | VLAJEPA, out_path: str | Path, split: bool = False,
                check: bool = True, threads: int = 1, repeats: int = 5, min_cosine: float = 0.999,
                max_abs: float = 1e-3) -> list[ExportReport]:
    """Export the inference graph (or prefix + head) and verify it under onnxruntime against torch.

    Raises if no Attention op was emitted or parity fails (cosine < min_cosine or max abs err > max_abs).
    """
    if isinstance(checkpoint_or_model, (str, Path)):
        from .checkpoint import load_checkpoint

        model = load_checkpoint(checkpoint_or_model, with_world_model=False)[0]
    else:
        model = checkpoint_or_model
    model = model.eval().float()
    out_path = Path(out_path)
    inputs = example_inputs(model)
    policy = InferenceModule(model).eval()
    reports: list[ExportReport] = []
    with torch.no_grad():
        ref = policy(*inputs)
    if not split:
        _export(policy, inputs, ["images", "input_ids", "attention_mask", "state", "noise"], ["actions_normalized"],
                out_path)
        if check:
            reports.append(_check(out_path, policy, inputs, ref, threads, repeats, min_cosine, max_abs))
        return reports
    prefix, head = PrefixModule(model).eval(), HeadModule(model).eval()
    p_path = out_path.with_name(out_path.stem + "_prefix.onnx")
    h_path = out_path.with_name(out_path.stem + "_head.onnx")
    with torch.no_grad():
        emb = prefix(*inputs[:3])
    _export(prefix, inputs[:3], ["images", "input_ids", "attention_mask"], ["embodied"], p_path)
    _export(head, (emb, inputs[3], inputs[4]), ["embodied", "state", "noise"], ["actions_normalized"], h_path)
    if check:
        reports.append(_check(p_path, prefix, inputs[:3], emb, threads, repeats, min_cosine, max_abs))
        reports.append(_check(h_path, head, (emb, inputs[3], inputs[4]), ref, threads, repeats, min_cosine, max_abs))
    return reports


def _check(path: Path, module, inputs, ref, threads, repeats, min_cosine, max_abs) -> ExportReport:
    n_attn = count_attention_nodes(path)
    if n_attn == 0:
        raise RuntimeError(f"{path}: no ONNX Attention op in the exported graph")
    sess = _ort_session(path, threads)
    feed = {i.name: x.numpy() for i, x in zip(sess.get_inputs(), inputs)}
    out = sess.run(None, feed)[0]
    r = ref.numpy().ravel().astype(np.float64)
    o = out.ravel().astype(np.float64)
    cos = float(r @ o / (np.linalg.norm(r) * np.linalg.norm(o) + 1e-12))
    err = float(np.abs(r - o).max())
    if cos < min_cosine or err > max_abs:
        raise RuntimeError(f"{path}: onnxruntime vs torch parity failed: cosine {cos:.6f}, max abs err {err:.2e}")
    prev = torch.get_num_threads()
    torch.set_num_threads(threads)
    with torch.no_grad():
        torch_ms = _median_ms(lambda: module(*inputs), repeats)
    torch.set_num_threads(prev)
    ort_ms = _median_ms(lambda: sess.run(None, feed), repeats)
    return ExportReport(str(path), n_attn, cos, err, ort_ms, torch_ms)


def main() -> None:
    import tyro

    @dataclass
    class Args:
        """ONNX graphs of a checkpoint's inference path, checked against torch with onnxruntime. For a model
        bundle the policy node can load (manifest, statistics, tokenizer, hashes), use `vla-jepa export`."""

        checkpoint: str
        """checkpoint folder (model.safetensors, config.json, statistics, tokenizer.json)"""
        out: str = "policy.onnx"
        """ONNX file to write (with --split: OUT's stem + _prefix.onnx and _head.onnx)"""
        split: bool = False
        """two graphs, VLM prefix and action head, instead of one"""
        threads: int = 1
        """onnxruntime threads for the parity check"""

    a = tyro.cli(Args, prog="vla-jepa-onnx")
    for r in export_onnx(a.checkpoint, a.out, split=a.split, threads=a.threads):
        print(r)


if __name__ == "__main__":
    main()

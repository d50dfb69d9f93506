"""A fine-tunable model from an ONNX-only bundle (prefix.onnx + head.onnx + manifest.yaml + tokenizer.json).

Bundles can ship without torch weights (`vla-jepa export --no-torch-weights`), but every weight of the inference
path is in their ONNX files, some under their torch names, others constant-folded by the exporter under names like
`val_12` (a transposed Linear weight, for one). The exporter is deterministic, so a model of the same config with
distinct random values, exported the same way, gives the same initializer names: each torch tensor is found there by
its values (as is, transposed, or reshaped), and the shipped bundle's initializer of that name is copied back with
the inverse transform. What the bundle never had (world-model predictor, object head) stays freshly initialised.

    vla-jepa-recover models/tiny_sim runs/from_bundle      # or: vla-jepa-train --init-from BUNDLE
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from .config import get_config
from .model import VLAJEPA, make_model

MANIFEST = "manifest.yaml"
# never in an inference graph: left as initialised (reported, not an error); the LM's final norm is unused
# (features are taken before it)
TRAINING_ONLY = ("vj_encoder.", "vj_predictor.", "object_head.", "vlm.language_model.norm.")
OBJECT_HEAD_OUT = "object_head.3.bias"  # in the head graph only when the action head reads the object estimate
POS_EMBED = "vlm.visual.pos_embed.weight"  # folded by the exporter into its rows at the picture's patch grid


@dataclass
class RecoverReport:
    recovered: list[str] = field(default_factory=list)
    training_only: list[str] = field(default_factory=list)
    max_abs_err: float = float("nan")  # recovered model re-exported vs the bundle, same inputs

    def __str__(self) -> str:
        return (f"{len(self.recovered)} tensors recovered from the ONNX graphs, {len(self.training_only)} training-only "
                f"left as initialised; re-exported vs bundle max |err| {self.max_abs_err:.2e}")


def is_bundle(path: str | Path) -> bool:
    return (Path(path) / MANIFEST).is_file()


def bundle_config(bundle: str | Path, num_aux_objects: int = 0):
    """The model config a bundle was exported from (preset + the sizes its manifest records; a head graph that
    holds the object head was made with cfg.action_head_objects, and its output size gives num_aux_objects)."""
    import yaml

    man = yaml.safe_load((Path(bundle) / MANIFEST).read_text())
    if man.get("graphs") is None or [g["name"] for g in man["graphs"]] != ["prefix", "head"]:
        raise ValueError(f"{bundle}: only split (prefix + head) bundles can be recovered")
    head_objects = _initializers(Path(bundle) / "head.onnx").get(OBJECT_HEAD_OUT)
    if head_objects is not None:
        num_aux_objects = head_objects.shape[0] // 3
    cfg = replace(get_config(man["preset"]), image_size=int(man["image_size_px"]),
                  max_prompt_len=int(man["prompt"]["max_prompt_len"]), num_aux_objects=num_aux_objects,
                  action_head_objects=head_objects is not None)
    got = {"horizon": man["action"]["horizon"], "num_euler_steps": man["action"]["num_euler_steps"],
           "state_dim": len(man["state"]["dim_names"]), "num_views": len(man["cameras"])}
    want = {"horizon": cfg.horizon, "num_euler_steps": cfg.action_head.num_euler_steps, "state_dim": cfg.state_dim,
            "num_views": cfg.num_views}
    if got != want:
        raise ValueError(f"{bundle}: manifest {got} does not match preset {man['preset']!r} {want}")
    return cfg


def _initializers(path: Path) -> dict[str, np.ndarray]:
    import onnx
    from onnx import numpy_helper

    return {i.name: numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer}


def _same_place_names(probe: Path, bundle: Path) -> dict[str, str | None]:
    """Initializer name in the probe graph -> the name the bundle's graph uses at the same node input, or None where
    the bundle's node lacks that input. The exporter merges initializers of equal value (a fresh LayerNorm's ones),
    so names can differ where the nodes do not, and it drops a Gemm's bias that is all zeros."""
    import onnx

    a, b = onnx.load(str(probe)).graph, onnx.load(str(bundle)).graph
    if [n.op_type for n in a.node] != [n.op_type for n in b.node]:
        raise ValueError(f"{bundle}: its graph is not the one this config exports (other nodes)")
    names = {i.name for i in a.initializer}
    return {x: (nb.input[j] if j < len(nb.input) and nb.input[j] else None)
            for na, nb in zip(a.node, b.node) for j, x in enumerate(na.input) if x in names}


def _views(t: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """The forms an exporter stores a tensor in: as is, transposed (2-D), or reshaped (same values in order)."""
    out = [("same", t)]
    if t.ndim == 2:
        out.append(("T", np.ascontiguousarray(t.T)))
    return out


def _pos_taps(model: VLAJEPA, table: torch.Tensor) -> torch.Tensor:
    """The vision position embedding as the graph holds it: the table's rows at the interpolation taps
    (S, 4, D) of the picture's patch grid (the weighted sum runs in the graph)."""
    return table[model.vlm.visual.interp_idx]


def _pos_table(model: VLAJEPA, taps: np.ndarray, init: torch.Tensor) -> torch.Tensor:
    """Invert `_pos_taps`: every table row a tap reads comes back; rows no tap reads (a picture smaller than the
    table's grid) cannot matter to this bundle and keep `init`."""
    idx = model.vlm.visual.interp_idx.flatten()
    table = init.clone()
    table[idx] = torch.from_numpy(np.array(taps)).reshape(len(idx), -1)
    return table


def _key(a: np.ndarray) -> bytes:
    return np.ascontiguousarray(a, dtype=np.float32).tobytes()


def model_from_bundle(bundle: str | Path, num_aux_objects: int = 0, seed: int = 0,
                      verify: bool = True) -> tuple[VLAJEPA, dict, RecoverReport]:
    """-> (model with the bundle's weights, dataset statistics, report). Raises when an inference-path tensor
    is not found in the graphs, or (verify) when the recovered model's export differs from the bundle's."""
    from .export import export_onnx
    from .prompt import load_tokenizer

    bundle = Path(bundle)
    cfg = bundle_config(bundle, num_aux_objects)
    torch.manual_seed(seed)
    model = make_model(cfg, load_tokenizer(str(bundle / "tokenizer.json"), cfg.max_action_tokens)).eval()
    state = model.state_dict()
    training_only = tuple(p for p in TRAINING_ONLY if not (cfg.action_head_objects and p == "object_head."))
    exported = {k: v for k, v in state.items() if v.is_floating_point() and not k.startswith(training_only)}
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():  # distinct values everywhere (LayerNorm ones and zero biases would all look alike)
        for v in exported.values():
            v.copy_(torch.rand(v.shape, generator=g) + 0.5)
    shipped: dict[str, np.ndarray] = {}
    probe: dict[bytes, str] = {}  # the probe's values -> "part:initializer name"
    with tempfile.TemporaryDirectory() as tmp:
        export_onnx(model, Path(tmp) / "probe.onnx", split=True, check=False)
        for part in ("prefix", "head"):
            fresh = _initializers(Path(tmp) / f"probe_{part}.onnx")
            theirs = _initializers(bundle / f"{part}.onnx")
            where = _same_place_names(Path(tmp) / f"probe_{part}.onnx", bundle / f"{part}.onnx")
            for name, arr in fresh.items():
                if arr.dtype != np.float32 or arr.size <= 1 or name not in where:
                    continue
                if where[name] is None and arr.ndim == 1:  # a dropped bias: zeros
                    shipped[f"{part}:{name}"] = np.zeros_like(arr)
                elif where[name] in theirs:
                    shipped[f"{part}:{name}"] = theirs[where[name]]
                else:
                    continue
                probe.setdefault(_key(arr), f"{part}:{name}")
    report = RecoverReport()
    missing = []
    with torch.no_grad():
        for k, v in exported.items():
            if k == POS_EMBED:
                hit = probe.get(_key(_pos_taps(model, v).numpy()))
                if hit is not None:
                    v.copy_(_pos_table(model, shipped[hit], v))
                    report.recovered.append(k)
                else:
                    missing.append(k)
                continue
            for how, view in _views(v.numpy()):
                hit = probe.get(_key(view))
                if hit is not None:
                    value = np.array(shipped[hit]).reshape(view.shape)
                    v.copy_(torch.from_numpy(np.ascontiguousarray(value.T if how == "T" else value)))
                    report.recovered.append(k)
                    break
            else:
                missing.append(k)
    report.training_only = [k for k in state if k.startswith(training_only)]
    if missing:
        raise ValueError(f"{bundle}: {len(missing)} inference tensors not found in the ONNX graphs: {missing[:8]}")
    stats = json.loads((bundle / "dataset_statistics.json").read_text())
    if verify:
        report.max_abs_err = _max_abs_err(model, bundle)
        if not report.max_abs_err < 1e-4:
            raise ValueError(f"{bundle}: the recovered model's graph differs from the bundle's "
                             f"(max |err| {report.max_abs_err:.2e})")
    return model.train(), stats, report


def _max_abs_err(model: VLAJEPA, bundle: Path) -> float:
    """Run the bundle's prefix + head under onnxruntime and the recovered model in torch on the export inputs."""
    import onnxruntime as ort

    from .export import example_inputs
    from .model import HeadModule, PrefixModule

    images, ids, mask, st, noise = example_inputs(model.eval())
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    prefix = ort.InferenceSession(str(bundle / "prefix.onnx"), so, providers=["CPUExecutionProvider"])
    head = ort.InferenceSession(str(bundle / "head.onnx"), so, providers=["CPUExecutionProvider"])
    emb = prefix.run(None, {"images": images.numpy(), "input_ids": ids.numpy(), "attention_mask": mask.numpy()})[0]
    with torch.no_grad():
        ours_emb = PrefixModule(model)(images, ids, mask)
        ours_actions = HeadModule(model)(ours_emb, st, noise).numpy()
    theirs = head.run(None, {"embodied": emb, "state": st.numpy(), "noise": noise.numpy()})[0]
    return float(max(np.abs(ours_emb.numpy() - emb).max(), np.abs(ours_actions - theirs).max()))


def main() -> None:
    import argparse

    from .checkpoint import save_checkpoint

    p = argparse.ArgumentParser(prog="vla-jepa-recover",
                                description="Write a training checkpoint (model.safetensors, config, statistics, "
                                            "tokenizer) from a model bundle, even one exported without torch weights.")
    p.add_argument("bundle", help="bundle folder (manifest.yaml, prefix.onnx, head.onnx, tokenizer.json)")
    p.add_argument("out", help="checkpoint folder to write")
    p.add_argument("--num-aux-objects", type=int, default=0,
                   help="give the checkpoint a fresh object head for that many objects (a bundle whose head reads "
                        "the object estimate brings its own)")
    a = p.parse_args()
    model, stats, report = model_from_bundle(a.bundle, a.num_aux_objects)
    save_checkpoint(a.out, model, stats)
    print(f"{a.out}: {report}")


if __name__ == "__main__":
    main()

"""`vla-jepa export CHECKPOINT OUT_DIR`: checkpoint -> model bundle (see bundle.py for the layout).

Steps, all in a temporary folder that becomes OUT_DIR only when every check passed:
 1. load the checkpoint (inference path only: VLM + action head);
 2. export static-shape ONNX with the model package's `vla_jepa.export.export_onnx` (torch.onnx.export,
    dynamo=True, opset 23, so attention is the ONNX `Attention` op). Layout "split" (default): prefix.onnx
    (images + prompt -> 32 embodied states) and head.onnx (embodied + state + noise -> 4 Euler steps -> chunk); layout "single": one policy.onnx. Split costs nothing
    measurable (see bench) and gives every backend the VLM-prefix / head-steps breakdown;
 3. optional simplification (onnxslim, if installed);
 4. `onnx.checker` with full shape inference; the TensorRT ONNX-parser op check (recorded, not fatal);
 5. parity: onnxruntime on the written graphs vs the torch model on fixed inputs and fixed noise:
    cosine >= min_cosine and max-abs error <= max_abs_error on the normalised chunk, for every case;
 6. tokenizer, stats, optional torch weights, engine cache folder, manifest with SHA-256s.
"""
from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from ..core.types import ACTION_SPACE_DELTA_EE, DELTA_EE_DIM_NAMES, STATE_DIM_NAMES
from .bundle import GraphSpec, Manifest, TensorSpec, hash_files, load_bundle, write_manifest

OPSET = 23
LAYOUTS = ("split", "single")
PARITY_INSTRUCTIONS = ("pick up the red cube", "put the red cube in the bowl",
                       "move the green block to the left of the bowl and then open the gripper")


class ParityError(RuntimeError):
    """The exported graphs do not reproduce the torch model; nothing was written."""


@dataclasses.dataclass(frozen=True)
class ExportConfig:
    layout: str = "split"  # split | single
    cameras: tuple[str, ...] = ("front", "wrist")  # names for the model's views, in order
    step_period_s: float = 0.1  # time between chunk steps on the robot
    model_id: str = ""  # default: vla-jepa-<preset>-<sha of the graphs>
    embodiment_tag: str = ""  # which stats entry to use; default: the only one
    simplify: bool = False  # run onnxslim (must be installed)
    min_cosine: float = 0.999
    max_abs_error: float = 1e-3  # normalised action units ([-1, 1] scale)
    parity_cases: int = 3
    torch_weights: bool = True  # copy an inference-only checkpoint into the bundle (TorchBackend)
    overwrite: bool = False

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout={self.layout!r} must be one of {LAYOUTS}")
        if not 0 < self.min_cosine <= 1 or not self.max_abs_error > 0 or self.parity_cases < 1:
            raise ValueError(f"min_cosine={self.min_cosine} must be in (0, 1], max_abs_error={self.max_abs_error} "
                             f"> 0, parity_cases={self.parity_cases} >= 1")
        if not self.step_period_s > 0:
            raise ValueError(f"step_period_s={self.step_period_s} must be > 0")


def example_inputs(cfg, tokenizer, seed: int, instruction: str) -> dict[str, np.ndarray]:
    """Fixed, seeded graph inputs: images (1, V, 3, S, S) [0, 1], prompt, state (1, max(1, state_dim)), noise."""
    from vla_jepa.prompt import encode_instruction

    rng = np.random.default_rng(seed)
    ids, mask = encode_instruction(tokenizer, instruction, cfg.max_prompt_len, cfg=cfg)
    return {"images": rng.random((1, cfg.num_views, 3, cfg.image_size, cfg.image_size), dtype=np.float32),
            "input_ids": ids, "attention_mask": mask,
            "state": rng.standard_normal((1, max(cfg.state_dim, 1)), dtype=np.float32) * 0.3,
            "noise": rng.standard_normal((1, cfg.horizon, cfg.action_dim), dtype=np.float32)}


def parity_instructions(cfg, tokenizer) -> tuple[str, ...]:
    """The PARITY_INSTRUCTIONS that fit the model's prompt (a prompt holding many image tokens leaves fewer for
    words); at least the shortest must fit, else the model cannot take a task at all."""
    from vla_jepa.prompt import encode_instruction

    fitting = []
    for words in PARITY_INSTRUCTIONS:
        try:
            encode_instruction(tokenizer, words, cfg.max_prompt_len, cfg=cfg)
        except ValueError:
            continue
        fitting.append(words)
    if not fitting:
        raise ValueError(f"max_prompt_len={cfg.max_prompt_len} cannot hold even {PARITY_INSTRUCTIONS[0]!r} with "
                         f"{cfg.num_views} x {cfg.image_tokens_per_view} image tokens")
    return tuple(fitting)


_ONNX_DTYPES = {1: "float32", 7: "int64", 10: "float16", 16: "bfloat16", 6: "int32", 9: "bool"}


def _specs_from_onnx(path: Path) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """Static input/output specs read from the graph itself (what every runtime will see)."""
    import onnx

    g = onnx.load(str(path), load_external_data=False).graph

    def spec(v) -> TensorSpec:
        t = v.type.tensor_type
        dims = tuple(int(d.dim_value) for d in t.shape.dim)
        if any(d <= 0 for d in dims):
            raise ValueError(f"{path.name}: {v.name} has a dynamic shape {dims}; the runtime needs static shapes")
        return TensorSpec(v.name, dims, _ONNX_DTYPES.get(t.elem_type, str(t.elem_type)))

    return tuple(spec(v) for v in g.input), tuple(spec(v) for v in g.output)


def export_graphs(model, out_dir: Path, layout: str, inputs: dict[str, np.ndarray], log=print) -> list[GraphSpec]:
    """The model package's exporter (vla_jepa.export.export_onnx: dynamo, opset 23, Attention ops; its own
    parity check is skipped here because export_bundle runs a stricter one on the whole chain) -> graph specs.
    `inputs` is unused: the exporter traces with its own fixed example inputs (static shapes either way)."""
    from vla_jepa.export import export_onnx

    t0 = time.perf_counter()
    export_onnx(model, out_dir / "policy.onnx", split=layout == "split", check=False)
    names = ["policy"] if layout == "single" else ["prefix", "head"]
    specs = []
    for name in names:
        path = out_dir / f"{name}.onnx"
        if layout == "split":
            (out_dir / f"policy_{name}.onnx").rename(path)
        ins, outs = _specs_from_onnx(path)
        specs.append(GraphSpec(name, path.name, ins, outs))
    log(f"exported {', '.join(s.file for s in specs)} in {time.perf_counter() - t0:.1f} s")
    return specs


def simplify_graphs(out_dir: Path, specs: list[GraphSpec], log=print) -> None:
    try:
        import onnxslim
    except ImportError:
        raise ValueError("--simplify needs onnxslim (pip install onnxslim); it is not installed") from None
    for g in specs:
        path = out_dir / g.file
        onnxslim.slim(str(path), str(path))
        log(f"simplified {g.file} with onnxslim")


def check_graphs(out_dir: Path, specs: list[GraphSpec]) -> dict:
    """onnx.checker (full check, strict shape inference) on every graph + the TensorRT op check."""
    import onnx

    from .tensorrt_backend import check_tensorrt_support

    report = {}
    for g in specs:
        path = out_dir / g.file
        onnx.checker.check_model(str(path), full_check=True)
        report[g.file] = check_tensorrt_support(onnx.load(str(path)))
    return report


def parity(model, bundle_dir: Path, specs: list[GraphSpec], cases: list[dict[str, np.ndarray]]) -> list[dict]:
    """Torch InferenceModule vs onnxruntime on the written graphs: per case cosine and max-abs error."""
    import torch

    from .onnxruntime_backend import OnnxRuntimeBackend, OnnxRuntimeConfig

    class _Stub:  # OnnxRuntimeBackend needs only path() and manifest.graphs
        def __init__(self):
            self.manifest = type("M", (), {"graphs": tuple(specs)})()

        def path(self, rel):
            return bundle_dir / rel

    backend = OnnxRuntimeBackend(_Stub(), OnnxRuntimeConfig(intra_op_threads=1))
    reference = model.inference_module().eval()
    results = []
    for inputs in cases:
        with torch.no_grad():
            ref = reference(*(torch.from_numpy(inputs[k]) for k in
                              ("images", "input_ids", "attention_mask", "state", "noise"))).numpy()
        got, _ = backend.run(inputs)
        results.append(compare(ref, got))
    return results


def compare(reference: np.ndarray, got: np.ndarray) -> dict:
    a, b = reference.astype(np.float64).ravel(), np.asarray(got, np.float64).ravel()
    cos = float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-30))
    return {"cosine": cos, "max_abs_error": float(np.abs(a - b).max()), "finite": bool(np.isfinite(b).all())}


def _select_stats(stats: dict, tag: str) -> tuple[str, dict]:
    if "action" in stats:
        return tag or "default", stats["action"]
    if tag:
        if tag not in stats:
            raise ValueError(f"embodiment_tag {tag!r} not in the checkpoint stats (has {sorted(stats)})")
        return tag, stats[tag]["action"]
    if len(stats) != 1:
        raise ValueError(f"checkpoint stats hold several embodiment tags {sorted(stats)}; pick one with "
                         "--embodiment-tag")
    tag = next(iter(stats))
    return tag, stats[tag]["action"]


def export_bundle(checkpoint: str | Path, out_dir: str | Path, config: ExportConfig = ExportConfig(), log=print):
    """Write a verified bundle to out_dir and return it (`Bundle`). Raises ParityError before writing anything."""
    import torch
    import vla_jepa
    from vla_jepa.checkpoint import load_checkpoint, save_checkpoint

    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not config.overwrite:
        raise ValueError(f"{out_dir} exists and is not empty (pass --overwrite to replace it)")
    model, cfg, stats, tokenizer = load_checkpoint(checkpoint, with_world_model=False)
    model.eval()
    if len(config.cameras) != cfg.num_views:
        raise ValueError(f"cameras={list(config.cameras)} ({len(config.cameras)}) but the model takes "
                         f"num_views={cfg.num_views} images")
    tag, action_stats = _select_stats(stats, config.embodiment_tag)
    if len(action_stats["min"]) != cfg.action_dim:
        raise ValueError(f"stats have {len(action_stats['min'])} action dims, model action_dim={cfg.action_dim}")
    words = parity_instructions(cfg, tokenizer)
    cases = [example_inputs(cfg, tokenizer, seed=i, instruction=words[i % len(words)])
             for i in range(config.parity_cases)]
    tmp = Path(tempfile.mkdtemp(prefix=".export_", dir=out_dir.parent if out_dir.parent.exists() else None))
    try:
        specs = export_graphs(model, tmp, config.layout, cases[0], log)
        if config.simplify:
            simplify_graphs(tmp, specs, log)
        trt_report = check_graphs(tmp, specs)
        results = parity(model, tmp, specs, cases)
        worst_cos = min(r["cosine"] for r in results)
        worst_abs = max(r["max_abs_error"] for r in results)
        log(f"parity onnxruntime vs torch over {len(results)} cases: min cosine {worst_cos:.7f} "
            f"(>= {config.min_cosine}), max abs error {worst_abs:.2e} (<= {config.max_abs_error})")
        if not all(r["finite"] for r in results) or worst_cos < config.min_cosine or \
                worst_abs > config.max_abs_error:
            raise ParityError(f"exported graphs disagree with torch: min cosine {worst_cos:.6f} (limit "
                              f"{config.min_cosine}), max abs error {worst_abs:.3e} (limit {config.max_abs_error}); "
                              f"bundle not written")
        (tmp / "tokenizer.json").write_text(tokenizer.to_str())
        (tmp / "dataset_statistics.json").write_text(json.dumps(stats, indent=2))
        (tmp / "engines").mkdir()
        files = [g.file for g in specs] + ["tokenizer.json", "dataset_statistics.json"]
        if config.torch_weights:
            save_checkpoint(tmp / "torch", model, stats)
            files += [f"torch/{p.name}" for p in sorted((tmp / "torch").iterdir())]
        hashes = hash_files(tmp, files)
        graph_hash = "".join(hashes[g.file] for g in specs)
        import hashlib

        model_id = config.model_id or f"vla-jepa-{cfg.name}-{hashlib.sha256(graph_hash.encode()).hexdigest()[:12]}"
        manifest = Manifest(
            model_id=model_id, preset=cfg.name, cameras=tuple(config.cameras), image_size_px=cfg.image_size,
            prompt={"tokenizer_file": "tokenizer.json", "max_prompt_len": cfg.max_prompt_len,
                    "num_views": cfg.num_views, "image_tokens_per_view": cfg.image_tokens_per_view,
                    "num_transitions": cfg.num_transitions, "latent_tokens_per_step": cfg.latent_tokens_per_step,
                    "num_embodied_tokens": cfg.num_embodied_tokens, "max_action_tokens": cfg.max_action_tokens,
                    "template": "vla_jepa.prompt.ROBOT_TEMPLATE"},
            state_dim_names=_state_names(cfg.state_dim),
            action_space=ACTION_SPACE_DELTA_EE if cfg.action_dim == 7 else "custom",
            action_dim_names=DELTA_EE_DIM_NAMES if cfg.action_dim == 7 else tuple(f"a{i}" for i in
                                                                                  range(cfg.action_dim)),
            horizon=cfg.horizon, step_period_s=config.step_period_s, num_euler_steps=cfg.num_euler_steps,
            normalization={"method": "min_max", "embodiment_tag": tag, "stats_file": "dataset_statistics.json",
                           "min": [float(v) for v in action_stats["min"]],
                           "max": [float(v) for v in action_stats["max"]],
                           "mask": [bool(v) for v in action_stats["mask"]], "gripper_threshold": 0.5},
            graphs=tuple(specs), files=hashes, torch_checkpoint="torch" if config.torch_weights else None,
            engine_cache_dir="engines",
            export={"checkpoint": "/".join(Path(checkpoint).resolve().parts[-2:]),  # run/step: no machine paths
                    "layout": config.layout, "exporter": "dynamo",
                    "opset": OPSET, "torch": torch.__version__, "onnx": _version("onnx"),
                    "onnxruntime": _version("onnxruntime"), "vla_jepa": getattr(vla_jepa, "__version__", "src"),
                    "simplified": config.simplify, "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "parity": {"cases": len(results), "min_cosine": worst_cos, "max_abs_error": worst_abs,
                               "limits": {"min_cosine": config.min_cosine, "max_abs_error": config.max_abs_error}},
                    "tensorrt": trt_report})
        write_manifest(tmp, manifest)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
        out_dir.chmod(0o755)  # mkdtemp made it private
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    log(f"wrote bundle {model_id} to {out_dir}")
    return load_bundle(out_dir)


def _state_names(n: int) -> tuple[str, ...]:
    return STATE_DIM_NAMES if n == len(STATE_DIM_NAMES) else tuple(f"s{i}" for i in range(n))


def _version(module: str) -> str:
    try:
        return __import__(module).__version__
    except ImportError:
        return "absent"

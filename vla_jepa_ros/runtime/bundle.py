"""Model bundles: a self-describing folder the policy node loads (no torch, no ROS).

    <bundle>/manifest.yaml          this schema (see `Manifest`), with SHA-256 of every file below
    <bundle>/prefix.onnx, head.onnx the inference graphs, run in order (or one policy.onnx)
    <bundle>/tokenizer.json         tokenizer with the VLA tokens (vla_jepa.prompt)
    <bundle>/dataset_statistics.json normalisation stats as the training package writes them
    <bundle>/torch/                 optional inference-only checkpoint for TorchBackend
    <bundle>/engines/               TensorRT engine + timing cache (filled on the target machine)

manifest.yaml (schema_version 1):
    schema_version: 1
    model_id: str                   unique id, reported in every ActionChunk
    preset: str                     vla_jepa preset name (tiny, small, paper)
    cameras: [str]                  camera names in the model's view order
    image_size_px: int              square model input side; frames are resized to it
    prompt: {tokenizer_file, max_prompt_len, num_views, image_tokens_per_view, num_transitions,
             latent_tokens_per_step, num_embodied_tokens}
    state: {dim_names: [str]}       raw state fed to the model (empty = no state token)
    action: {space, dim_names, horizon, step_period_s, num_euler_steps}
    normalization: {method: min_max, min, max, mask, gripper_threshold, embodiment_tag, stats_file}
    graphs: [{name, file, inputs: [{name, shape, dtype}], outputs: [...]}]   executed in order
    torch_checkpoint: str | null    folder with config.json + model.safetensors (TorchBackend)
    engine_cache_dir: str
    export: {...}                   how it was made: versions, opset, parity numbers, TensorRT op check
    files: {relative path: sha256}
"""
from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import yaml

MANIFEST = "manifest.yaml"
SCHEMA_VERSION = 1


class BundleError(ValueError):
    """A bundle that is malformed, corrupted, or disagrees with the node's parameters."""


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    dtype: str  # numpy dtype name: float32, int64

    @classmethod
    def from_dict(cls, d: dict) -> "TensorSpec":
        return cls(name=str(d["name"]), shape=tuple(int(s) for s in d["shape"]), dtype=str(d["dtype"]))

    def to_dict(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}


@dataclasses.dataclass(frozen=True)
class GraphSpec:
    name: str  # "policy" (one graph) or "prefix" / "head"
    file: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    @classmethod
    def from_dict(cls, d: dict) -> "GraphSpec":
        return cls(name=str(d["name"]), file=str(d["file"]),
                   inputs=tuple(TensorSpec.from_dict(t) for t in d["inputs"]),
                   outputs=tuple(TensorSpec.from_dict(t) for t in d["outputs"]))

    def to_dict(self) -> dict:
        return {"name": self.name, "file": self.file, "inputs": [t.to_dict() for t in self.inputs],
                "outputs": [t.to_dict() for t in self.outputs]}


@dataclasses.dataclass(frozen=True)
class Manifest:
    model_id: str
    preset: str
    cameras: tuple[str, ...]
    image_size_px: int
    prompt: dict
    state_dim_names: tuple[str, ...]
    action_space: str
    action_dim_names: tuple[str, ...]
    horizon: int
    step_period_s: float
    num_euler_steps: int
    normalization: dict
    graphs: tuple[GraphSpec, ...]
    files: dict[str, str]
    torch_checkpoint: str | None = None
    engine_cache_dir: str = "engines"
    export: dict = dataclasses.field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        if self.schema_version != SCHEMA_VERSION:
            raise BundleError(f"manifest schema_version={self.schema_version}, this runtime reads {SCHEMA_VERSION}")
        if not self.model_id:
            raise BundleError("manifest model_id is empty")
        if not self.cameras or len(set(self.cameras)) != len(self.cameras):
            raise BundleError(f"manifest cameras={list(self.cameras)} must be non-empty and unique")
        if self.image_size_px <= 0 or self.horizon <= 0 or not self.step_period_s > 0:
            raise BundleError(f"manifest image_size_px={self.image_size_px}, horizon={self.horizon}, "
                              f"step_period_s={self.step_period_s} must be > 0")
        n = len(self.action_dim_names)
        for key in ("min", "max", "mask"):
            if len(self.normalization.get(key, ())) != n:
                raise BundleError(f"manifest normalization.{key} has {len(self.normalization.get(key, ()))} "
                                  f"values, action has {n} dims {list(self.action_dim_names)}")
        if not self.graphs:
            raise BundleError("manifest lists no graphs")
        for g in self.graphs:
            if g.file not in self.files:
                raise BundleError(f"graph file {g.file!r} has no SHA-256 in manifest files")
        out = self.graphs[-1].outputs[0]
        if out.shape[1:] != (self.horizon, self.action_dim):
            raise BundleError(f"last graph output {out.name} shape {list(out.shape)} disagrees with "
                              f"horizon={self.horizon} x action_dim={self.action_dim}")

    @property
    def action_dim(self) -> int:
        return len(self.action_dim_names)

    @property
    def state_dim(self) -> int:
        return len(self.state_dim_names)

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        """Inputs the caller must provide (not produced by an earlier graph)."""
        produced: set[str] = set()
        out: list[TensorSpec] = []
        for g in self.graphs:
            out += [t for t in g.inputs if t.name not in produced and t.name not in {o.name for o in out}]
            produced |= {t.name for t in g.outputs}
        return tuple(out)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["cameras"] = list(self.cameras)
        d["graphs"] = [g.to_dict() for g in self.graphs]
        d["state"] = {"dim_names": list(self.state_dim_names)}
        d["action"] = {"space": self.action_space, "dim_names": list(self.action_dim_names),
                       "horizon": self.horizon, "step_period_s": self.step_period_s,
                       "num_euler_steps": self.num_euler_steps}
        for k in ("state_dim_names", "action_space", "action_dim_names", "horizon", "step_period_s",
                  "num_euler_steps"):
            del d[k]
        order = ["schema_version", "model_id", "preset", "cameras", "image_size_px", "prompt", "state", "action",
                 "normalization", "graphs", "torch_checkpoint", "engine_cache_dir", "export", "files"]
        return {k: d[k] for k in order}

    @classmethod
    def from_dict(cls, d: dict) -> "Manifest":
        try:
            action, state = d["action"], d.get("state") or {}
            return cls(schema_version=int(d.get("schema_version", -1)), model_id=str(d["model_id"]),
                       preset=str(d["preset"]), cameras=tuple(str(c) for c in d["cameras"]),
                       image_size_px=int(d["image_size_px"]), prompt=dict(d["prompt"]),
                       state_dim_names=tuple(state.get("dim_names") or ()), action_space=str(action["space"]),
                       action_dim_names=tuple(action["dim_names"]), horizon=int(action["horizon"]),
                       step_period_s=float(action["step_period_s"]),
                       num_euler_steps=int(action["num_euler_steps"]), normalization=dict(d["normalization"]),
                       graphs=tuple(GraphSpec.from_dict(g) for g in d["graphs"]), files=dict(d["files"]),
                       torch_checkpoint=d.get("torch_checkpoint"), engine_cache_dir=str(d.get("engine_cache_dir",
                                                                                              "engines")),
                       export=dict(d.get("export") or {}))
        except KeyError as exc:
            raise BundleError(f"manifest is missing the key {exc.args[0]!r}") from None


def sha256_file(path: Path, chunk_bytes: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk_bytes):
            h.update(block)
    return h.hexdigest()


def hash_files(root: Path, relative_paths: list[str]) -> dict[str, str]:
    return {rel: sha256_file(root / rel) for rel in sorted(relative_paths)}


def write_manifest(root: Path, manifest: Manifest) -> Path:
    path = Path(root) / MANIFEST
    path.write_text(yaml.safe_dump(_plain(manifest.to_dict()), sort_keys=False, width=120, default_flow_style=None))
    return path


@dataclasses.dataclass(frozen=True)
class Bundle:
    root: Path
    manifest: Manifest

    def path(self, relative: str) -> Path:
        return self.root / relative

    @property
    def graph_paths(self) -> list[Path]:
        return [self.root / g.file for g in self.manifest.graphs]

    @property
    def tokenizer_path(self) -> Path:
        return self.root / self.manifest.prompt["tokenizer_file"]

    @property
    def engine_cache_dir(self) -> Path:
        return self.root / self.manifest.engine_cache_dir

    @property
    def torch_checkpoint(self) -> Path | None:
        return self.root / self.manifest.torch_checkpoint if self.manifest.torch_checkpoint else None

    @property
    def stats(self) -> dict:
        """Action stats in the training package's layout ({"action": {min, max, mask}})."""
        n = self.manifest.normalization
        return {"action": {"min": list(n["min"]), "max": list(n["max"]), "mask": list(n["mask"])}}

    def unnormalize(self, actions_norm: np.ndarray) -> np.ndarray:
        """(..., A) model output -> robot units (vla_jepa.normalize: clip [-1, 1], min-max inverse on the
        masked dims, gripper snapped to {0, 1} at 0.5)."""
        from vla_jepa.normalize import unnormalize_actions  # numpy-only

        return unnormalize_actions(actions_norm, self.stats)


def load_bundle(root: str | Path, verify_hashes: bool = True) -> Bundle:
    """Read `root/manifest.yaml`; with verify_hashes, every listed file must exist with its SHA-256."""
    root = Path(root)
    path = root / MANIFEST
    if not path.exists():
        raise BundleError(f"{path}: no manifest (is {root} a model bundle? `vla-jepa export` makes one)")
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict):
        raise BundleError(f"{path}: not a YAML mapping")
    manifest = Manifest.from_dict(data)
    if verify_hashes:
        for rel, expected in manifest.files.items():
            f = root / rel
            if not f.exists():
                raise BundleError(f"{f}: listed in {MANIFEST} but missing")
            actual = sha256_file(f)
            if actual != expected:
                raise BundleError(f"{f}: SHA-256 {actual[:16]}... does not match manifest {expected[:16]}... "
                                  "(file changed or corrupted; re-export the bundle)")
    return Bundle(root=root, manifest=manifest)


# Parameter name -> how to read the bundle's value. The node passes its parameters under these names.
_COMPARED: dict[str, Any] = {
    "cameras": lambda m: tuple(m.cameras),
    "image_size_px": lambda m: m.image_size_px,
    "action_dim": lambda m: m.action_dim,
    "horizon": lambda m: m.horizon,
    "action_space": lambda m: m.action_space,
    "action_dim_names": lambda m: tuple(m.action_dim_names),
    "state_dim": lambda m: m.state_dim,
    "state_dim_names": lambda m: tuple(m.state_dim_names),  # not compared when the bundle takes no state
    "step_period_s": lambda m: m.step_period_s,
}


def check_compatible(manifest: Manifest, **params: Any) -> None:
    """Raise BundleError listing every parameter whose value disagrees with the manifest (both values named).

    Accepted keys: cameras, image_size_px, action_dim, horizon, action_space, action_dim_names, state_dim,
    state_dim_names, step_period_s. A value of None (or 0 for sizes) means "take the bundle's".
    """
    unknown = set(params) - set(_COMPARED)
    if unknown:
        raise ValueError(f"check_compatible: unknown parameter(s) {sorted(unknown)} (known: {sorted(_COMPARED)})")
    problems = []
    for key, value in params.items():
        if value is None or (isinstance(value, (int, float)) and not isinstance(value, bool) and value == 0) or \
                (isinstance(value, (tuple, list)) and len(value) == 0):
            continue
        want = tuple(value) if isinstance(value, (list, tuple)) else value
        have = _COMPARED[key](manifest)
        if key == "state_dim_names" and not have:
            continue
        same = abs(want - have) < 1e-9 if isinstance(have, float) else want == have
        if not same:
            problems.append(f"{key}: bundle has {_fmt(have)}, node parameter says {_fmt(want)}")
    if problems:
        raise BundleError(f"bundle {manifest.model_id!r} disagrees with the node parameters: " + "; ".join(problems))


def _plain(v: Any) -> Any:
    """Tuples -> lists, numpy scalars -> Python, other objects (versions) -> str: safe_dump-able."""
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, np.generic):
        return v.item()
    if v is None or type(v) in (bool, int, float, str):
        return v
    if isinstance(v, (int, float)):
        return float(v) if isinstance(v, float) else int(v)
    return str(v)  # e.g. torch.__version__ (a str subclass yaml refuses)


def _fmt(v: Any) -> str:
    return repr(list(v)) if isinstance(v, tuple) else repr(v)

"""Checkpoints: our safetensors format, HF Qwen3-VL / V-JEPA2 folders, and the released VLA-JEPA `.pt`.

Our checkpoint folder:
    model.safetensors          model weights (VLM, action head, predictor, target encoder)
    config.json                resolved VLAJEPAConfig
    dataset_statistics.json    normalisation stats (see normalize.py)
    tokenizer.json             the tokenizer, VLA tokens included
    trainer_state.pt           (optional) optimizer, scheduler, RNG states, data position, step
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

# Buffers added after checkpoints were first written; absent from a file they keep their identity defaults.
OPTIONAL_BUFFERS = r"action_model\.state_(mean|std)"


@dataclass
class LoadReport:
    """Keys that did not line up, by name."""

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    loaded: int = 0

    def __str__(self) -> str:
        return (f"loaded {self.loaded} tensors; missing {len(self.missing)}: {self.missing[:20]}; "
                f"unexpected {len(self.unexpected)}: {self.unexpected[:20]}")


def read_safetensors_folder(folder: str | Path) -> dict[str, torch.Tensor]:
    """Read `model.safetensors` or the shards listed in `model.safetensors.index.json`."""
    folder = Path(folder)
    index = folder / "model.safetensors.index.json"
    single = folder / "model.safetensors"
    if index.exists():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        state: dict[str, torch.Tensor] = {}
        for shard in shards:
            if not (folder / shard).exists():
                raise FileNotFoundError(f"{folder / shard}: shard listed in {index} is missing")
            state.update(load_file(str(folder / shard)))
        return state
    if single.exists():
        return load_file(str(single))
    raise FileNotFoundError(f"{folder}: neither model.safetensors nor model.safetensors.index.json found")


def load_into(module: nn.Module, state: dict[str, torch.Tensor], strict: bool = False,
              ignore_unexpected: tuple[str, ...] = ()) -> LoadReport:
    """Copy tensors by name (resizing the vocab rows of embeddings if needed); report mismatches by name."""
    own = module.state_dict()
    report = LoadReport()
    with torch.no_grad():
        for name, tensor in state.items():
            if name not in own:
                if not any(re.match(p, name) for p in ignore_unexpected):
                    report.unexpected.append(name)
                continue
            target = own[name]
            if target.shape != tensor.shape:
                if name.endswith("embed_tokens.weight") and target.shape[1:] == tensor.shape[1:]:
                    n = min(target.shape[0], tensor.shape[0])  # tokens added after the checkpoint was made
                    target[:n].copy_(tensor[:n])
                    report.loaded += 1
                    continue
                raise ValueError(f"{name}: checkpoint shape {tuple(tensor.shape)} != model shape {tuple(target.shape)}")
            target.copy_(tensor.to(target.dtype))
            report.loaded += 1
    report.missing = [k for k in own if k not in state and not re.fullmatch(OPTIONAL_BUFFERS, k)]
    if strict and (report.missing or report.unexpected):
        raise KeyError(str(report))
    return report


_QWEN_PREFIXES = ("model.", "")


def qwen3vl_state_to_backbone(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """HF Qwen3VLForConditionalGeneration / Qwen3VLModel keys -> Qwen3VLBackbone keys (lm_head dropped)."""
    out = {}
    for k, v in state.items():
        if k == "lm_head.weight":
            continue
        for p in _QWEN_PREFIXES:
            if k.startswith(p + "visual.") or k.startswith(p + "language_model."):
                out[k[len(p):]] = v
                break
        else:
            out[k] = v
    return out


def load_qwen3vl_folder(backbone: nn.Module, folder: str | Path) -> LoadReport:
    """Load an HF Qwen3-VL checkpoint folder (config.json + safetensors) into a Qwen3VLBackbone."""
    return load_into(backbone, qwen3vl_state_to_backbone(read_safetensors_folder(folder)))


def check_qwen_preprocessor(folder: str | Path, cfg) -> None:
    """Compare a Qwen3-VL folder's preprocessor_config.json with our config; raise naming any mismatch."""
    path = Path(folder) / "preprocessor_config.json"
    if not path.exists():
        return
    pre = json.loads(path.read_text())
    expected = {"patch_size": cfg.vision.patch_size, "merge_size": cfg.vision.spatial_merge_size,
                "temporal_patch_size": cfg.vision.temporal_patch_size, "image_mean": list(cfg.image_mean),
                "image_std": list(cfg.image_std)}
    bad = [f"{k}={pre[k]} (config: {v})" for k, v in expected.items()
           if k in pre and (pre[k] != v if not isinstance(v, list) else
                            any(abs(a - b) > 1e-6 for a, b in zip(pre[k], v)))]
    if bad:
        raise ValueError(f"{path}: preprocessing disagrees with the model config: {', '.join(bad)}")


def vjepa2_state_to_encoder(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """HF VJEPA2Model keys -> VJEPA2Encoder keys (the HF predictor is dropped)."""
    out = {}
    for k, v in state.items():
        k2 = k[len("vjepa2."):] if k.startswith("vjepa2.") else k
        if k2.startswith("encoder."):
            out[k2[len("encoder."):]] = v
    return out


def load_vjepa2_folder(encoder: nn.Module, folder: str | Path) -> LoadReport:
    """Load an HF V-JEPA2 checkpoint folder into our VJEPA2Encoder."""
    return load_into(encoder, vjepa2_state_to_encoder(read_safetensors_folder(folder)))


# ------------------------------------------------------------------------------------------------ our checkpoints

WEIGHTS, CONFIG, STATS, TOKENIZER, TRAINER_STATE, TRAIN_CONFIG = (
    "model.safetensors", "config.json", "dataset_statistics.json", "tokenizer.json", "trainer_state.pt",
    "train_config.json")


def save_checkpoint(path: str | Path, model: nn.Module, stats: dict, trainer_state: dict | None = None,
                    train_config: object | None = None, state_dict: dict | None = None) -> Path:
    """Write model weights (safetensors), resolved config, stats, tokenizer and optional trainer state.

    `state_dict` overrides model.state_dict() (e.g. a full state dict gathered from FSDP shards).
    """
    from .config import config_to_json

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in (state_dict or model.state_dict()).items()}
    tmp = path / (WEIGHTS + ".tmp")
    meta = tokenizer_record(model.tokenizer)
    if getattr(model, "raw_state_weights", False):
        meta["state_input"] = "raw"  # trained on raw state (released weights): training keeps it raw by default
    save_file(state, str(tmp), metadata=meta)
    tmp.replace(path / WEIGHTS)
    (path / CONFIG).write_text(config_to_json(model.cfg))
    (path / STATS).write_text(json.dumps(stats, indent=2))
    (path / TOKENIZER).write_text(model.tokenizer.to_str())  # PromptTokenizer delegates to_str
    if train_config is not None:
        (path / TRAIN_CONFIG).write_text(config_to_json(train_config))
    if trainer_state is not None:
        torch.save(trainer_state, path / TRAINER_STATE)
    return path


def tokenizer_record(tokenizer) -> dict[str, str]:
    """{"tokenizer_name", "tokenizer_sha256"}: what a checkpoint's weights were saved with (safetensors metadata)."""
    from .qwen_tokenizer import tokenizer_name, tokenizer_sha256

    tokenizer = getattr(tokenizer, "tokenizer", tokenizer)
    return {"tokenizer_name": tokenizer_name(tokenizer), "tokenizer_sha256": tokenizer_sha256(tokenizer)}


def saved_metadata(weights: str | Path) -> dict[str, str]:
    """The string metadata of a safetensors header."""
    from safetensors import safe_open

    with safe_open(str(weights), framework="pt") as f:
        return dict(f.metadata() or {})


def saved_tokenizer_record(weights: str | Path) -> dict[str, str]:
    """The tokenizer record in a model.safetensors header ({} for files written before it existed)."""
    meta = saved_metadata(weights)
    return {k: meta[k] for k in ("tokenizer_name", "tokenizer_sha256") if k in meta}


def check_tokenizer_record(tokenizer, weights: str | Path, tokenizer_source: str | Path) -> None:
    """Refuse a tokenizer that is not the one recorded with the weights (one line saying what to pass)."""
    want = saved_tokenizer_record(weights)
    if not want:
        return
    got = tokenizer_record(tokenizer)
    if got["tokenizer_sha256"] != want["tokenizer_sha256"]:
        raise ValueError(f"{tokenizer_source}: tokenizer {got['tokenizer_name']} sha256 "
                         f"{got['tokenizer_sha256'][:12]}... is not the {want['tokenizer_name']} tokenizer the "
                         f"weights in {weights} were saved with (sha256 {want['tokenizer_sha256'][:12]}...); put "
                         "that tokenizer.json back (re-export or re-import the checkpoint)")


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu", with_world_model: bool = True):
    """-> (model, config, stats, tokenizer) from a folder written by `save_checkpoint`.

    The tokenizer is a `prompt.PromptTokenizer` (knows the prompt layout; delegates to `tokenizers.Tokenizer`).
    """
    from .config import config_from_dict
    from .model import make_model
    from .prompt import load_tokenizer

    path = Path(path)
    for name in (WEIGHTS, CONFIG, STATS, TOKENIZER):
        if not (path / name).exists():
            raise FileNotFoundError(f"{path / name}: missing from checkpoint")
    cfg = config_from_dict(json.loads((path / CONFIG).read_text()))
    tokenizer = load_tokenizer(str(path / TOKENIZER), cfg.max_action_tokens)
    check_tokenizer_record(tokenizer, path / WEIGHTS, path / TOKENIZER)
    model = make_model(cfg, tokenizer, with_world_model=with_world_model)
    state = load_file(str(path / WEIGHTS))
    ignore = () if with_world_model else (r"vj_encoder\.", r"vj_predictor\.")
    report = load_into(model, state, ignore_unexpected=ignore)
    if report.missing or report.unexpected:
        raise KeyError(f"{path / WEIGHTS}: {report}")
    model.raw_state_weights = saved_metadata(path / WEIGHTS).get("state_input") == "raw"
    stats = json.loads((path / STATS).read_text())
    from .prompt import PromptTokenizer

    return model.to(device), cfg, stats, PromptTokenizer(tokenizer, cfg)


# ------------------------------------------------------------------------------------------------ released .pt

# Public code (starVLA VLA_JEPA) prefixes -> ours. Qwen3VLForConditionalGeneration under transformers 4.57 keeps
# the backbone in `.model` and the (unused) LM head in `.lm_head`.
_PUBLIC_RULES = [
    (r"^qwen_vl_interface\.model\.model\.(visual|language_model)\.", r"vlm.\1."),
    (r"^qwen_vl_interface\.model\.(visual|language_model)\.", r"vlm.\1."),
    (r"^vj_encoder\.encoder\.", "vj_encoder."),
    (r"^action_model\.", "action_model."),
    (r"^vj_predictor\.", "vj_predictor."),
]
# Present in the public state dict but unused by VLA-JEPA (reported as ignored, not as unexpected).
_PUBLIC_IGNORED = [r"^qwen_vl_interface\.model\.lm_head\.", r"^vj_encoder\.predictor\.",
                   r"^vj_predictor\.(state_encoder|extrinsics_encoder)\."]


def map_public_state_dict(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str], list[str]]:
    """Released VLA-JEPA key names -> ours. Returns (mapped, ignored_keys, unmapped_keys)."""
    mapped, ignored, unmapped = {}, [], []
    for k, v in state.items():
        k0 = k[len("module."):] if k.startswith("module.") else k
        if any(re.match(p, k0) for p in _PUBLIC_IGNORED):
            ignored.append(k)
            continue
        for pat, rep in _PUBLIC_RULES:
            if re.match(pat, k0):
                mapped[re.sub(pat, rep, k0)] = v
                break
        else:
            unmapped.append(k)
    return mapped, ignored, unmapped


def config_from_public_yaml(yaml_path: str | Path, base="paper"):
    """Read the public config.yaml for the values that change the model, on top of `base` (a preset name or config):

    action_dim, chunk (future_action_window_size + 1), and the state input: `datasets.vla_data.with_state` false
    (the official stage 1) means no state token, whatever `action_model.state_dim` says (the public code builds the
    state encoder anyway and never feeds it)."""
    import yaml

    from .config import get_config, replace

    data = yaml.safe_load(Path(yaml_path).read_text()) or {}
    am = (data.get("framework") or {}).get("action_model") or {}
    vla_data = ((data.get("datasets") or {}).get("vla_data") or {})
    cfg = get_config(base) if isinstance(base, str) else base
    changes = {}
    if "action_dim" in am:
        changes["action_dim"] = int(am["action_dim"])
    if "future_action_window_size" in am:
        changes["horizon"] = int(am["future_action_window_size"]) + 1
    if "state_dim" in am:
        changes["state_dim"] = int(am["state_dim"] or 0)
    if vla_data.get("with_state") is False:
        changes["state_dim"] = 0
    return replace(cfg, **changes) if changes else cfg


def load_public_checkpoint(pt_path: str | Path, tokenizer_json: str | Path | None = None, cfg=None,
                           with_world_model: bool = True):
    """Load a released VLA-JEPA `.pt` (+ ../config.yaml and ../dataset_statistics.json next to its folder).

    Returns (model, config, stats, tokenizer, report). `tokenizer_json` is a Qwen3-VL tokenizer.json or folder;
    without it the Qwen3-VL tokenizer built at install time is used (the VLA tokens are appended in the public
    code's order). Any other vocabulary is refused: every token id would be wrong.
    """
    from .model import make_model
    from .prompt import load_tokenizer, tokenizer_for_config

    pt_path = Path(pt_path)
    if not pt_path.exists():
        raise FileNotFoundError(f"{pt_path}: checkpoint missing")
    run_dir = pt_path.parent.parent
    yaml_path = run_dir / "config.yaml"
    if yaml_path.exists():
        cfg = config_from_public_yaml(yaml_path, cfg if cfg is not None else "paper")
    elif cfg is None:
        raise FileNotFoundError(f"{yaml_path}: the public code keeps config.yaml one folder above the .pt")
    stats_path = run_dir / "dataset_statistics.json"
    if not stats_path.exists():
        raise FileNotFoundError(f"{stats_path}: dataset statistics missing")
    stats = json.loads(stats_path.read_text())
    tokenizer = load_tokenizer(str(tokenizer_json), cfg.max_action_tokens) if tokenizer_json else \
        tokenizer_for_config(cfg)
    from .prompt import check_tokenizer_matches

    check_tokenizer_matches(tokenizer, cfg, str(tokenizer_json or "the built-in tokenizer"))
    state = torch.load(pt_path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    mapped, ignored, unmapped = map_public_state_dict(state)
    if cfg.state_dim == 0:  # trained without state: the public code's state encoder exists but never ran
        ignored += sorted(k for k in mapped if k.startswith("action_model.state_encoder."))
        mapped = {k: v for k, v in mapped.items() if not k.startswith("action_model.state_encoder.")}
    model = make_model(cfg, tokenizer, with_world_model=with_world_model)
    ignore = () if with_world_model else (r"vj_encoder\.", r"vj_predictor\.")
    report = load_into(model, mapped, ignore_unexpected=ignore)
    report.unexpected = sorted(set(report.unexpected) | set(unmapped))
    report.ignored = ignored  # type: ignore[attr-defined]
    model.raw_state_weights = cfg.state_dim > 0  # the public code feeds raw state; its buffers load as identity
    return model, cfg, stats, tokenizer, report


def config_from_hf_folders(cfg, qwen_folder: str | Path | None = None, vjepa_folder: str | Path | None = None):
    """Take the backbone sizes from HF config.json files (Qwen3-VL, V-JEPA2) instead of trusting the preset."""
    from .config import TextConfig, VisionConfig, VJEPAConfig, replace

    changes = {}
    if qwen_folder is not None:
        c = json.loads((Path(qwen_folder) / "config.json").read_text())
        t, v = c["text_config"], c["vision_config"]
        rope = t.get("rope_parameters") or t.get("rope_scaling") or {}
        changes["text"] = TextConfig(
            vocab_size=t["vocab_size"], hidden_size=t["hidden_size"], intermediate_size=t["intermediate_size"],
            num_layers=t["num_hidden_layers"], num_heads=t["num_attention_heads"],
            num_kv_heads=t["num_key_value_heads"], head_dim=t.get("head_dim", t["hidden_size"] // t["num_attention_heads"]),
            rope_theta=float(rope.get("rope_theta", t.get("rope_theta", 5e6))),
            mrope_section=tuple(rope.get("mrope_section", (24, 20, 20))), rms_norm_eps=t.get("rms_norm_eps", 1e-6))
        if v.get("hidden_act", "gelu_pytorch_tanh") != "gelu_pytorch_tanh":
            raise ValueError(f"{qwen_folder}/config.json: vision hidden_act {v['hidden_act']!r} is not supported")
        changes["vision"] = VisionConfig(
            hidden_size=v["hidden_size"], depth=v["depth"], num_heads=v["num_heads"],
            intermediate_size=v["intermediate_size"], out_hidden_size=v["out_hidden_size"],
            patch_size=v["patch_size"], temporal_patch_size=v["temporal_patch_size"],
            spatial_merge_size=v["spatial_merge_size"], num_position_embeddings=v["num_position_embeddings"],
            deepstack_visual_indexes=tuple(v["deepstack_visual_indexes"]))
        if t["vocab_size"] > 151668:  # Qwen's vocabulary (a smaller one keeps the preset's tokenizer kind)
            changes["tokenizer"] = "qwen3-vl"
    if vjepa_folder is not None:
        c = json.loads((Path(vjepa_folder) / "config.json").read_text())
        changes["vjepa"] = VJEPAConfig(hidden_size=c["hidden_size"], num_layers=c["num_hidden_layers"],
                                       num_heads=c["num_attention_heads"], mlp_ratio=c.get("mlp_ratio", 4.0),
                                       patch_size=c["patch_size"], tubelet_size=c["tubelet_size"],
                                       crop_size=c["crop_size"], layer_norm_eps=c.get("layer_norm_eps", 1e-6),
                                       qkv_bias=c.get("qkv_bias", True))
    return replace(cfg, **changes) if changes else cfg

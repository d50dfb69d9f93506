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
    report.missing = [k for k in own if k not in state]
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

"""Import VLA-JEPA weights from the layouts they are published in, into our training checkpoint (`vla-jepa import`).

Layouts (`detect_layout`):
    official   the public code's release: <run>/checkpoints/<name>.pt with <run>/config.yaml and
               <run>/dataset_statistics.json (names `qwen_vl_interface.*`, `action_model.*`, `vj_encoder.*`,
               `vj_predictor.*`; see checkpoint.map_public_state_dict)
    lerobot    a LeRobot VLA-JEPA policy folder: config.json ("type": "vla_jepa") + model.safetensors, names
               `model.qwen.*`, `model.action_model.*`, `model.video_encoder.*`, `model.video_predictor.*` (the head
               and predictor keep the public code's sub-names); normalisation statistics in the processor's
               safetensors files (`observation.state.mean/std`, `action.min/max`) when present
    hf         a Hugging Face Qwen3-VL folder (config.json with text_config + vision_config) and, optionally, a V-JEPA2
               folder (--vjepa): the backbones of a new model whose action head and predictor start untrained

Every tensor of the model must come from the source (except, for `hf`, the new head and predictor): a missing or
unexpected name stops the import with the names. The tokenizer is checked against the vocabulary the weights
expect (prompt.check_tokenizer_matches).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .checkpoint import (config_from_hf_folders, load_into, load_public_checkpoint, map_public_state_dict,
                         qwen3vl_state_to_backbone, read_safetensors_folder, save_checkpoint, vjepa2_state_to_encoder)
from .config import get_config, replace
from .model import VLAJEPA, make_model
from .prompt import load_tokenizer

LAYOUTS = ("official", "lerobot", "hf")
LIBERO_CAMERAS = ("image", "wrist_image")  # the official LIBERO evaluation: agentview, then the wrist camera
# Released LIBERO weights act in LIBERO's controller units (OSC_POSE: 1.0 = 5 cm / 0.5 rad per step, gripper 1 = open)
# and read LIBERO's state: end-effector position, axis-angle orientation, the two finger positions (raw).
LIBERO_ACTION_SPACE = "libero_delta_ee"
LIBERO_STATE_NAMES = ("eef_x_m", "eef_y_m", "eef_z_m", "eef_axis_angle_x", "eef_axis_angle_y", "eef_axis_angle_z",
                      "gripper_qpos_left_m", "gripper_qpos_right_m")


class ImportError_(ValueError):
    """The source cannot be imported as asked (one line: what is wrong and what to pass)."""


@dataclass
class ImportResult:
    model: VLAJEPA
    stats: dict
    layout: str
    cameras: tuple[str, ...]  # camera names the weights were trained with, in view order ("" when unknown)
    ignored: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    action_space: str = ""  # "" = this stack's (franka_delta_ee); released LIBERO weights: LIBERO_ACTION_SPACE
    state_names: tuple[str, ...] = ()  # "" = this stack's; released LIBERO weights: LIBERO_STATE_NAMES


def detect_layout(src: str | Path) -> str:
    src = Path(src)
    if not src.exists():
        raise ImportError_(f"{src}: no such file or folder")
    if src.is_file() and src.suffix in (".pt", ".pth", ".bin"):
        return "official"
    cfg_path = src / "config.json"
    if src.is_dir() and cfg_path.exists():
        c = json.loads(cfg_path.read_text())
        if c.get("type") == "vla_jepa":
            return "lerobot"
        if "text_config" in c and "vision_config" in c:
            return "hf"
    raise ImportError_(f"{src}: not a VLA-JEPA release .pt, a LeRobot vla_jepa policy folder (config.json with "
                       "\"type\": \"vla_jepa\") or a Hugging Face Qwen3-VL folder")


def _strict(report, source: str, allowed_missing: str | None = None) -> None:
    missing = [k for k in report.missing if not (allowed_missing and re.match(allowed_missing, k))]
    if missing or report.unexpected:
        raise ImportError_(f"{source}: the weights do not fit the model: missing {len(missing)} "
                           f"{missing[:6]}, unexpected {len(report.unexpected)} {report.unexpected[:6]} "
                           "(wrong --preset, or not this layout)")


# ------------------------------------------------------------------------------------------------ official

def import_official(pt: str | Path, preset: str = "paper", tokenizer: str | None = None) -> ImportResult:
    model, cfg, stats, _, report = load_public_checkpoint(pt, tokenizer, get_config(preset))
    _strict(report, str(pt))
    notes = ["state is fed raw, as the public code trained it" if cfg.state_dim else
             "trained without state (config.yaml datasets.vla_data.with_state: false): no state token"]
    return ImportResult(model, stats, "official", LIBERO_CAMERAS if cfg.num_views == 2 else ("",) * cfg.num_views,
                        list(getattr(report, "ignored", [])), notes, LIBERO_ACTION_SPACE,
                        LIBERO_STATE_NAMES if cfg.state_dim == len(LIBERO_STATE_NAMES) else ())


# ------------------------------------------------------------------------------------------------ LeRobot

_LEROBOT_PREFIXES = [("model.qwen.", "qwen_vl_interface."), ("model.video_encoder.", "vj_encoder."),
                     ("model.video_predictor.", "vj_predictor."), ("model.action_model.", "action_model.")]


def lerobot_to_public_names(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """LeRobot VLAJEPAPolicy keys -> the public code's keys (then map_public_state_dict). Returns (renamed, unknown)."""
    out, unknown = {}, []
    for k, v in state.items():
        for a, b in _LEROBOT_PREFIXES:
            if k.startswith(a):
                out[b + k[len(a):]] = v
                break
        else:
            unknown.append(k)
    return out, unknown


def _lerobot_normalizer(folder: Path) -> dict[str, torch.Tensor]:
    """Normalisation tensors LeRobot's processors save next to the policy (observation.state.*, action.*)."""
    from safetensors.torch import load_file

    found: dict[str, torch.Tensor] = {}
    for f in sorted(folder.glob("*.safetensors")):
        if f.name.startswith("model"):
            continue
        for k, v in load_file(str(f)).items():
            if k.startswith(("observation.state.", "action.")):
                found.setdefault(k, v)
    return found


def lerobot_config(folder: str | Path, preset: str = "paper"):
    """-> (our config, camera names) from a LeRobot vla_jepa config.json on top of `preset` (backbone sizes are
    not in that file: LeRobot loads them from the hub by name)."""
    c = json.loads((Path(folder) / "config.json").read_text())
    feats = c.get("input_features") or {}
    cams = tuple(k for k, f in feats.items() if (f or {}).get("type") == "VISUAL")
    state = feats.get("observation.state")
    out = (c.get("output_features") or {}).get("action") or {}
    cfg = get_config(preset)
    changes = {"horizon": int(c.get("chunk_size", cfg.horizon)),
               "state_dim": int(state["shape"][0]) if state else 0,
               "action_dim": int(out["shape"][0]) if out.get("shape") else int(c.get("action_dim", cfg.action_dim))}
    if cams:
        changes["num_views"] = len(cams)
        if len(cams) < 2:
            changes["wm_views"] = (0, 0)
    for key, ours in (("num_action_tokens_per_timestep", "latent_tokens_per_step"),
                      ("num_embodied_action_tokens_per_instruction", "num_embodied_tokens"),
                      ("num_video_frames", "num_frames")):
        if key in c:
            changes[ours] = int(c[key])
    if "num_inference_timesteps" in c:
        changes["action_head"] = replace(cfg.action_head, num_euler_steps=int(c["num_inference_timesteps"]))
    return replace(cfg, **changes), tuple(k.removeprefix("observation.images.") for k in cams)


def import_lerobot(folder: str | Path, preset: str = "paper", tokenizer: str | None = None) -> ImportResult:
    folder = Path(folder)
    cfg, cams = lerobot_config(folder, preset)
    state = read_safetensors_folder(folder)
    renamed, unknown = lerobot_to_public_names(state)
    mapped, ignored, unmapped = map_public_state_dict(renamed)
    if cfg.state_dim == 0:
        ignored += [k for k in mapped if k.startswith("action_model.state_encoder.")]
        mapped = {k: v for k, v in mapped.items() if not k.startswith("action_model.state_encoder.")}
    tok = load_tokenizer(tokenizer, cfg.max_action_tokens) if tokenizer else None
    model = make_model(cfg, tok, with_world_model=any(k.startswith("vj_") for k in mapped))
    report = load_into(model, mapped)
    report.unexpected = sorted(set(report.unexpected) | set(unknown) | set(unmapped))
    _strict(report, str(folder / "model.safetensors"), r"action_model\.state_(mean|std)$")
    norm = _lerobot_normalizer(folder)
    notes = []
    if cfg.state_dim and "observation.state.mean" in norm:
        # LeRobot standardises state in its preprocessor (MEAN_STD): the same numbers go into our state buffers
        model.action_model.set_state_normalization(norm["observation.state.mean"].float(),
                                                   norm["observation.state.std"].float() + 1e-8, min_std=0.0)
        notes.append("state standardised with LeRobot's preprocessor statistics")
    elif cfg.state_dim:
        notes.append("no state statistics found next to the policy: state is fed as given")
    stats = {}
    if "action.min" in norm and "action.max" in norm:
        lo, hi = norm["action.min"].double().tolist(), norm["action.max"].double().tolist()
        stats = {"lerobot": {"action": {"min": lo, "max": hi, "mask": [True] * (len(lo) - 1) + [False]}}}
    else:
        notes.append("no action min/max found: pass the dataset statistics when exporting")
    notes.append("LeRobot min-max normalises the gripper dimension too and snaps it after un-normalising; this stack "
                 "snaps the model's gripper output at 0.5: check the gripper on a dry run")
    contract = json.loads((folder / "config.json").read_text()).get("policy_action_contract", "libero")
    libero = contract == "libero"
    return ImportResult(model, stats, "lerobot", cams, ignored, notes, LIBERO_ACTION_SPACE if libero else "",
                        LIBERO_STATE_NAMES if libero and cfg.state_dim == len(LIBERO_STATE_NAMES) else ())


# ------------------------------------------------------------------------------------------------ HF backbones

def import_hf(qwen_folder: str | Path, vjepa_folder: str | Path | None = None, preset: str = "paper",
              tokenizer: str | None = None, seed: int = 0) -> ImportResult:
    qwen_folder = Path(qwen_folder)
    cfg = config_from_hf_folders(get_config(preset), qwen_folder, vjepa_folder)
    tok_source = tokenizer or (str(qwen_folder) if (qwen_folder / "tokenizer.json").exists() else None)
    tok = load_tokenizer(tok_source, cfg.max_action_tokens) if tok_source else None
    torch.manual_seed(seed)
    model = make_model(cfg, tok, with_world_model=True)
    report = load_into(model.vlm, qwen3vl_state_to_backbone(read_safetensors_folder(qwen_folder)))
    _strict(report, str(qwen_folder))
    notes = ["the action head and predictor are new (untrained): fine-tune before driving a robot"]
    if vjepa_folder is not None:
        report = load_into(model.vj_encoder, vjepa2_state_to_encoder(read_safetensors_folder(vjepa_folder)))
        _strict(report, str(vjepa_folder))
    else:
        notes.append("no V-JEPA2 folder: the target encoder is random (pass --vjepa to train with the world model)")
    return ImportResult(model, {}, "hf", ("",) * cfg.num_views, [], notes)


# ------------------------------------------------------------------------------------------------ entry

def import_checkpoint(src: str | Path, out: str | Path, preset: str = "paper", vjepa: str | None = None,
                      tokenizer: str | None = None, layout: str = "auto", seed: int = 0,
                      stats_path: str | Path | None = None) -> ImportResult:
    """Read `src` in its layout, write our training checkpoint to `out`; returns what was imported."""
    layout = detect_layout(src) if layout == "auto" else layout
    if layout not in LAYOUTS:
        raise ImportError_(f"layout {layout!r}: one of {', '.join(LAYOUTS)} or auto")
    if layout == "official":
        res = import_official(src, preset, tokenizer)
    elif layout == "lerobot":
        res = import_lerobot(src, preset, tokenizer)
    else:
        res = import_hf(src, vjepa, preset, tokenizer, seed)
    if stats_path:
        from .normalize import load_stats

        res.stats = load_stats(stats_path)
    save_checkpoint(out, res.model, res.stats)
    meta = {"layout": res.layout, "source": str(Path(src).name), "cameras": list(res.cameras),
            "action_space": res.action_space, "state_names": list(res.state_names), "ignored": len(res.ignored),
            "notes": res.notes}
    (Path(out) / "import.json").write_text(json.dumps(meta, indent=2))
    return res

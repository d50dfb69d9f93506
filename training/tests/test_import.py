"""`vla-jepa import`: checkpoints written in each published layout import with OUTPUT parity.

For each layout a tiny model's weights are written under that layout's own names and file format (the names are
checked against transformers' own Qwen3-VL / V-JEPA2 key sets, so the writer here is not the importer's map run
backwards); the imported checkpoint must then give the same action chunk as the model the weights came from
(<= 1e-5), and the same file with two layers' names swapped must not.
"""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from safetensors.torch import save_file

from vla_jepa.checkpoint import load_checkpoint
from vla_jepa.config import get_config, replace
from vla_jepa.export import example_inputs
from vla_jepa.importer import ImportError_, detect_layout, import_checkpoint
from vla_jepa.model import make_model

transformers = pytest.importorskip("transformers")
TOL = 1e-5
SKIP = ("action_model.state_mean", "action_model.state_std")  # ours only: neither layout has them


def chunk(model) -> torch.Tensor:
    model = model.eval()
    images, ids, mask, state, noise = example_inputs(model, seed=3, instruction="put the bowl on the plate")
    with torch.no_grad():
        return model.predict_actions(images, ids, mask, state, noise)


def hf_key_sets(model) -> tuple[set[str], set[str], dict, dict]:
    """Key sets (and extra tensors) of transformers' Qwen3-VL and V-JEPA2 models at the tiny sizes."""
    from test_parity_qwen3vl import hf_config

    cfg = model.cfg
    hf_cfg = hf_config(cfg, model.tokenizer)
    vlm = transformers.Qwen3VLForConditionalGeneration(hf_cfg).state_dict()
    enc_cfg = transformers.VJEPA2Config(
        hidden_size=cfg.vjepa.hidden_size, num_hidden_layers=cfg.vjepa.num_layers,
        num_attention_heads=cfg.vjepa.num_heads, crop_size=cfg.vjepa.crop_size, frames_per_clip=8,
        pred_hidden_size=32, pred_num_hidden_layers=1, pred_num_attention_heads=2)
    enc = transformers.VJEPA2Model(enc_cfg).state_dict()
    return set(vlm), set(enc), {"qwen": hf_cfg, "vjepa": enc_cfg, "lm_head": vlm["lm_head.weight"]}, \
        {k: v for k, v in enc.items() if k.startswith("predictor.")}


def hf_names(model) -> tuple[dict, dict]:
    """Our tensors under transformers' names: (Qwen3VLForConditionalGeneration keys, VJEPA2Model keys)."""
    vlm, enc = {}, {}
    for k, v in model.state_dict().items():
        if k.startswith("vlm."):
            vlm["model." + k[len("vlm."):]] = v.clone()
        elif k.startswith("vj_encoder."):
            enc["encoder." + k[len("vj_encoder."):]] = v.clone()
    return vlm, enc


def head_names(model) -> dict:
    return {k: v.clone() for k, v in model.state_dict().items()
            if k.startswith(("action_model.", "vj_predictor.")) and k not in SKIP}


def checked_hf_names(model):
    vlm, enc = hf_names(model)
    vlm_keys, enc_keys, extra, enc_pred = hf_key_sets(model)
    assert set(vlm) == vlm_keys - {"lm_head.weight"}, sorted(set(vlm) ^ (vlm_keys - {"lm_head.weight"}))[:8]
    assert set(enc) == {k for k in enc_keys if k.startswith("encoder.")}
    vlm["lm_head.weight"] = extra["lm_head"]
    enc.update(enc_pred)
    return vlm, enc, extra


def swap_layers(state: dict, a: str, b: str) -> dict:
    """The same tensors with the names of two layers exchanged (a wrong key map)."""
    out = {}
    for k, v in state.items():
        out[k.replace(a, "\0").replace(b, a).replace("\0", b)] = v
    return out


@pytest.fixture
def source_model():
    torch.manual_seed(0)
    return make_model(get_config("tiny")).eval()


# ------------------------------------------------------------------------------------------------ official

def write_official(model, root, state_override=None):
    vlm, enc, _ = checked_hf_names(model)
    state = {f"qwen_vl_interface.model.{k}": v for k, v in vlm.items()}
    state.update({f"vj_encoder.{k}": v for k, v in enc.items()})
    state.update(head_names(model))
    state["vj_predictor.state_encoder.weight"] = torch.zeros(4, 4)  # built but unused by the public code
    if state_override is not None:
        state = state_override(state)
    (root / "checkpoints").mkdir(parents=True, exist_ok=True)
    pt = root / "checkpoints" / "VLA-JEPA-LIBERO.pt"
    torch.save(state, pt)
    (root / "config.yaml").write_text(yaml.safe_dump({
        "framework": {"name": "VLA_JEPA", "action_model": {"action_dim": 7, "state_dim": 8,
                                                          "future_action_window_size": 6}},
        "datasets": {"vla_data": {"with_state": True}}}))
    stats = {"franka": {"action": {"min": [-0.9] * 6 + [0], "max": [0.9] * 6 + [1], "mask": [True] * 6 + [False]}}}
    (root / "dataset_statistics.json").write_text(json.dumps(stats))
    return pt


def test_official_release_imports_with_output_parity(tmp_path, source_model):
    ref = chunk(source_model)
    pt = write_official(source_model, tmp_path / "run")
    assert detect_layout(pt) == "official"
    res = import_checkpoint(pt, tmp_path / "ck", preset="tiny")
    model, cfg, stats, _ = load_checkpoint(tmp_path / "ck")
    assert stats["franka"]["action"]["max"][0] == 0.9
    assert model.raw_state_weights  # trained on raw state: kept raw when fine-tuned
    assert json.loads((tmp_path / "ck" / "import.json").read_text())["cameras"] == ["image", "wrist_image"]
    assert (chunk(model) - ref).abs().max().item() <= TOL
    assert "vj_predictor.state_encoder.weight" in res.ignored

    wrong = write_official(source_model, tmp_path / "wrong", lambda s: swap_layers(
        s, "language_model.layers.0.", "language_model.layers.1."))
    import_checkpoint(wrong, tmp_path / "ck_wrong", preset="tiny")
    assert (chunk(load_checkpoint(tmp_path / "ck_wrong")[0]) - ref).abs().max().item() > 1e-3


def test_official_stage1_release_has_no_state_token(tmp_path, source_model):
    pt = write_official(source_model, tmp_path / "run")
    data = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    data["datasets"]["vla_data"]["with_state"] = False
    (tmp_path / "run" / "config.yaml").write_text(yaml.safe_dump(data))
    res = import_checkpoint(pt, tmp_path / "ck", preset="tiny")
    assert res.model.cfg.state_dim == 0 and res.model.action_model.state_encoder is None
    assert "action_model.state_encoder.layer1.weight" in res.ignored


def test_missing_tensor_stops_the_import_by_name(tmp_path, source_model):
    pt = write_official(source_model, tmp_path / "run", lambda s: {k: v for k, v in s.items()
                                                                   if "future_tokens" not in k})
    with pytest.raises(ImportError_, match="future_tokens"):
        import_checkpoint(pt, tmp_path / "ck", preset="tiny")


# ------------------------------------------------------------------------------------------------ LeRobot

def write_lerobot(model, folder, state_override=None):
    vlm, enc, _ = checked_hf_names(model)
    state = {f"model.qwen.model.{k}": v for k, v in vlm.items()}
    state.update({f"model.video_encoder.{k}": v for k, v in enc.items()})
    for k, v in head_names(model).items():
        state["model." + k.replace("vj_predictor.", "video_predictor.", 1)] = v
    if state_override is not None:
        state = state_override(state)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "model.safetensors"))
    feats = {"observation.images.image": {"type": "VISUAL", "shape": [3, 224, 224]},
             "observation.images.wrist_image": {"type": "VISUAL", "shape": [3, 224, 224]},
             "observation.state": {"type": "STATE", "shape": [8]}}
    (folder / "config.json").write_text(json.dumps({
        "type": "vla_jepa", "input_features": feats, "chunk_size": 7, "n_action_steps": 7,
        "output_features": {"action": {"type": "ACTION", "shape": [7]}}, "num_action_tokens_per_timestep": 8,
        "num_embodied_action_tokens_per_instruction": 32, "num_inference_timesteps": 4, "num_video_frames": 8}))
    head = model.action_model
    save_file({"observation.state.mean": head.state_mean.clone(), "observation.state.std": head.state_std.clone()},
              str(folder / "policy_preprocessor_step_3_normalizer_processor.safetensors"))
    save_file({"action.min": torch.full((7,), -0.5), "action.max": torch.full((7,), 0.5)},
              str(folder / "policy_postprocessor_step_0_unnormalizer_processor.safetensors"))


def test_lerobot_policy_folder_imports_with_output_parity(tmp_path, source_model):
    g = torch.Generator().manual_seed(1)
    source_model.action_model.set_state_normalization(torch.randn(8, generator=g),
                                                      0.5 + torch.rand(8, generator=g))
    ref = chunk(source_model)
    write_lerobot(source_model, tmp_path / "policy")
    assert detect_layout(tmp_path / "policy") == "lerobot"
    res = import_checkpoint(tmp_path / "policy", tmp_path / "ck", preset="tiny")
    assert res.cameras == ("image", "wrist_image")
    model, _, stats, _ = load_checkpoint(tmp_path / "ck")
    assert stats["lerobot"]["action"]["min"] == [-0.5] * 7
    assert (chunk(model) - ref).abs().max().item() <= TOL

    write_lerobot(source_model, tmp_path / "wrong", lambda s: swap_layers(s, "transformer_blocks.0.",
                                                                           "transformer_blocks.2."))
    import_checkpoint(tmp_path / "wrong", tmp_path / "ck_wrong", preset="tiny")
    assert (chunk(load_checkpoint(tmp_path / "ck_wrong")[0]) - ref).abs().max().item() > 1e-3


# ------------------------------------------------------------------------------------------------ HF folders

def write_hf(model, qwen, vjepa, swap=None):
    vlm, enc, extra = checked_hf_names(model)
    if swap:
        vlm = swap_layers(vlm, *swap)
    for folder, state, cfg in ((qwen, vlm, extra["qwen"]), (vjepa, enc, extra["vjepa"])):
        folder.mkdir(parents=True, exist_ok=True)
        cfg.to_json_file(str(folder / "config.json"))
        keys = sorted(state)
        shards = {"model-00001-of-00002.safetensors": keys[::2], "model-00002-of-00002.safetensors": keys[1::2]}
        for name, ks in shards.items():
            save_file({k: state[k].contiguous() for k in ks}, str(folder / name))
        (folder / "model.safetensors.index.json").write_text(json.dumps(
            {"weight_map": {k: name for name, ks in shards.items() for k in ks}}))
    (qwen / "tokenizer.json").write_text(model.tokenizer.to_str())


def test_hf_backbone_folders_import_with_output_parity(tmp_path):
    """A new model from HF Qwen3-VL + V-JEPA2 folders: the backbones come from the folders (sharded safetensors),
    the head is the seeded new one. The reference has the same head seed but its own backbone weights, so a
    backbone that did not load would show."""
    torch.manual_seed(0)
    source = make_model(get_config("tiny")).eval()
    with torch.no_grad():
        g = torch.Generator().manual_seed(5)
        for name, p in source.named_parameters():
            if name.startswith(("vlm.", "vj_encoder.")):
                p.add_(0.05 * torch.randn(p.shape, generator=g))
    ref = chunk(source)
    write_hf(source, tmp_path / "qwen", tmp_path / "vjepa")
    assert detect_layout(tmp_path / "qwen") == "hf"
    import_checkpoint(tmp_path / "qwen", tmp_path / "ck", preset="tiny", vjepa=str(tmp_path / "vjepa"), seed=0)
    model = load_checkpoint(tmp_path / "ck")[0]
    assert (chunk(model) - ref).abs().max().item() <= TOL
    enc_ref = source.vj_encoder.state_dict()
    assert all(torch.equal(v, enc_ref[k]) for k, v in model.vj_encoder.state_dict().items())

    write_hf(source, tmp_path / "qwen_w", tmp_path / "vjepa_w", swap=("visual.blocks.0.", "visual.blocks.1."))
    import_checkpoint(tmp_path / "qwen_w", tmp_path / "ck_w", preset="tiny", seed=0)
    assert (chunk(load_checkpoint(tmp_path / "ck_w")[0]) - ref).abs().max().item() > 1e-3


def test_real_qwen_weights_refuse_another_tokenizer(tmp_path):
    """The paper preset (Qwen's vocabulary) with the byte-level tokenizer: refused, saying what to pass."""
    from vla_jepa.prompt import build_tiny_tokenizer

    cfg = get_config("paper")
    with pytest.raises(ValueError, match="expect the qwen3-vl tokenizer but got a byte-level one: pass the Qwen3-VL"):
        make_model(cfg, build_tiny_tokenizer(), device="meta")
    tiny = replace(get_config("tiny"), tokenizer="qwen3-vl")
    with pytest.raises(ValueError, match="qwen3-vl tokenizer"):
        make_model(tiny, build_tiny_tokenizer(), device="meta")


@pytest.mark.slow
def test_cli_import_to_a_bundle_that_our_franka_stack_refuses(tmp_path, source_model, capsys):
    """`vla-jepa import SRC OUT --bundle B` on the official layout: the bundle keeps the weights' conventions
    (LIBERO cameras, LIBERO controller units, LIBERO state), so the policy node's load-time check refuses it for
    this stack's Franka (franka_delta_ee actions, our state vector) with both values named; bad input is one line."""
    cli = pytest.importorskip("vla_jepa_ros.cli")
    from vla_jepa_ros.core.types import ACTION_SPACE_DELTA_EE, STATE_DIM_NAMES
    from vla_jepa_ros.runtime.bundle import BundleError, check_compatible, load_bundle

    pt = write_official(source_model, tmp_path / "run")
    assert cli.main(["import", str(pt), str(tmp_path / "ck"), "--preset", "tiny", "--bundle",
                     str(tmp_path / "bundle")]) == 0
    m = load_bundle(tmp_path / "bundle").manifest
    assert m.cameras == ("image", "wrist_image") and m.action_space == "libero_delta_ee"
    assert m.state_dim_names[3] == "eef_axis_angle_x" and m.prompt["tokenizer"]["name"] == "byte-level"
    with pytest.raises(BundleError, match="action_space: bundle has 'libero_delta_ee', node parameter says "
                                          "'franka_delta_ee'.*state_dim_names"):
        check_compatible(m, action_space=ACTION_SPACE_DELTA_EE, state_dim_names=STATE_DIM_NAMES)
    capsys.readouterr()
    assert cli.main(["import", str(tmp_path / "nothing.pt"), str(tmp_path / "x"), "--preset", "tiny"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nothing.pt: no such file or folder" in err

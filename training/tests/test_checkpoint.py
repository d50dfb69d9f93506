"""Checkpoints: our safetensors round trip and the released VLA-JEPA key names."""

import json

import pytest
import torch
import yaml

from vj_helpers import make_batch
from vla_jepa.checkpoint import load_checkpoint, load_public_checkpoint, map_public_state_dict, save_checkpoint
from vla_jepa.config import get_config
from vla_jepa.model import make_model

# Names as they appear in the public code's state dict (starVLA VLA_JEPA, GR00T action head, V-JEPA2-AC predictor).
PUBLIC_NAMES = [
    "action_model.model.timestep_encoder.timestep_embedder.linear_1.weight",
    "action_model.model.timestep_encoder.timestep_embedder.linear_2.bias",
    "action_model.model.transformer_blocks.0.norm1.linear.weight",
    "action_model.model.transformer_blocks.0.attn1.to_q.weight",
    "action_model.model.transformer_blocks.0.attn1.to_k.weight",
    "action_model.model.transformer_blocks.0.attn1.to_out.0.bias",
    "action_model.model.transformer_blocks.1.attn1.to_v.weight",
    "action_model.model.transformer_blocks.0.ff.net.0.proj.weight",
    "action_model.model.transformer_blocks.0.ff.net.2.weight",
    "action_model.model.proj_out_1.weight", "action_model.model.proj_out_2.bias",
    "action_model.state_encoder.layer1.weight", "action_model.state_encoder.layer2.bias",
    "action_model.action_encoder.layer1.weight", "action_model.action_encoder.layer2.weight",
    "action_model.action_encoder.layer3.bias", "action_model.action_decoder.layer1.weight",
    "action_model.action_decoder.layer2.bias", "action_model.future_tokens.weight",
    "action_model.position_embedding.weight",
    "vj_predictor.predictor_embed.weight", "vj_predictor.action_encoder.bias",
    "vj_predictor.predictor_blocks.0.norm1.weight", "vj_predictor.predictor_blocks.0.attn.qkv.weight",
    "vj_predictor.predictor_blocks.0.attn.proj.bias", "vj_predictor.predictor_blocks.1.mlp.fc1.weight",
    "vj_predictor.predictor_blocks.1.mlp.fc2.bias", "vj_predictor.predictor_norm.weight",
    "vj_predictor.predictor_proj.weight",
]


def test_save_load_roundtrip(tmp_path, tiny_model):
    batch, stats = make_batch(tiny_model, 1)
    save_checkpoint(tmp_path / "ck", tiny_model, stats)
    model, cfg, stats2, tok = load_checkpoint(tmp_path / "ck")
    assert cfg == tiny_model.cfg and stats2 == stats and tok.to_str() == tiny_model.tokenizer.to_str()
    args = (batch["images"], batch["input_ids"], batch["attention_mask"], batch["state"], torch.zeros(1, 7, 7))
    with torch.no_grad():
        assert torch.equal(model.eval().predict_actions(*args), tiny_model.predict_actions(*args))
    inference_only = load_checkpoint(tmp_path / "ck", with_world_model=False)[0]
    assert not hasattr(inference_only, "vj_predictor")


def test_checkpoint_from_before_state_normalisation_loads_as_identity(tmp_path, tiny_model):
    """Older checkpoints have no state_mean/state_std buffers: they load with the identity (the raw state they
    were trained on); any other missing tensor is still an error."""
    from safetensors.torch import load_file, save_file

    save_checkpoint(tmp_path / "ck", tiny_model, make_batch(tiny_model, 1)[1])
    weights = tmp_path / "ck" / "model.safetensors"
    state = load_file(str(weights))
    for key in ("action_model.state_mean", "action_model.state_std"):
        del state[key]
    save_file(state, str(weights))
    model = load_checkpoint(tmp_path / "ck")[0]
    assert torch.equal(model.action_model.state_mean, torch.zeros_like(model.action_model.state_mean))
    assert torch.equal(model.action_model.state_std, torch.ones_like(model.action_model.state_std))
    del state["action_model.state_encoder.layer1.weight"]
    save_file(state, str(weights))
    with pytest.raises(KeyError, match="state_encoder"):
        load_checkpoint(tmp_path / "ck")


def _public_state_dict(model, tmp_path):
    """A state dict with the public code's names, built from transformers' own key layout for the backbones."""
    transformers = pytest.importorskip("transformers")
    from test_parity_qwen3vl import hf_config

    cfg = model.cfg
    hf_vlm = transformers.Qwen3VLForConditionalGeneration(hf_config(cfg, model.tokenizer))
    hf_enc = transformers.VJEPA2Model(transformers.VJEPA2Config(
        hidden_size=cfg.vjepa.hidden_size, num_hidden_layers=cfg.vjepa.num_layers,
        num_attention_heads=cfg.vjepa.num_heads, crop_size=cfg.vjepa.crop_size, frames_per_clip=8,
        pred_hidden_size=32, pred_num_hidden_layers=1, pred_num_attention_heads=2))
    state = {f"qwen_vl_interface.model.{k}": v for k, v in hf_vlm.state_dict().items()}
    state.update({f"vj_encoder.{k}": v for k, v in hf_enc.state_dict().items()})
    ours = model.state_dict()
    for k, v in ours.items():
        if k.startswith(("action_model.", "vj_predictor.")):
            state[k] = torch.randn_like(v)
    state["vj_predictor.state_encoder.weight"] = torch.zeros(4, 4)  # unused in the public model
    state["vj_predictor.extrinsics_encoder.weight"] = torch.zeros(4, 4)
    return state


def test_public_names_exist_in_our_model(tiny_model):
    ours = set(tiny_model.state_dict())
    missing = [n for n in PUBLIC_NAMES if n not in ours]
    assert missing == []


def test_load_released_checkpoint_layout(tmp_path, tiny_model):
    state = _public_state_dict(tiny_model, tmp_path)
    mapped, ignored, unmapped = map_public_state_dict(state)
    assert unmapped == []
    assert "qwen_vl_interface.model.lm_head.weight" in ignored
    assert "vj_predictor.state_encoder.weight" in ignored
    assert any(k.startswith("vj_encoder.predictor.") for k in ignored)
    assert "vlm.language_model.layers.0.self_attn.q_norm.weight" in mapped
    assert "vlm.visual.deepstack_merger_list.0.linear_fc1.weight" in mapped
    assert "vj_encoder.layer.0.attention.query.weight" in mapped

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    torch.save(state, run / "checkpoints" / "steps_10_pytorch_model.pt")
    (run / "config.yaml").write_text(yaml.safe_dump(
        {"framework": {"name": "VLA_JEPA", "action_model": {"action_dim": 7, "future_action_window_size": 6,
                                                          "state_dim": 8}}}))
    stats = {"franka": {"action": {"min": [-1] * 7, "max": [1] * 7, "mask": [True] * 6 + [False]}}}
    (run / "dataset_statistics.json").write_text(json.dumps(stats))
    model, cfg, stats2, _, report = load_public_checkpoint(run / "checkpoints" / "steps_10_pytorch_model.pt",
                                                           cfg=get_config("tiny"))
    assert report.missing == [] and report.unexpected == [], report
    assert stats2 == stats
    sd = model.state_dict()
    k = "action_model.model.transformer_blocks.0.attn1.to_q.weight"
    assert torch.equal(sd[k], state[k])
    k = "vlm.language_model.layers.1.mlp.up_proj.weight"
    assert torch.equal(sd[k], state["qwen_vl_interface.model.model.language_model.layers.1.mlp.up_proj.weight"])

    # missing and unexpected keys are reported by name
    del state["action_model.future_tokens.weight"]
    state["action_model.bogus.weight"] = torch.zeros(1)
    torch.save(state, run / "checkpoints" / "broken.pt")
    _, _, _, _, report = load_public_checkpoint(run / "checkpoints" / "broken.pt", cfg=get_config("tiny"))
    assert report.missing == ["action_model.future_tokens.weight"]
    assert report.unexpected == ["action_model.bogus.weight"]


def test_config_yaml_drives_state_and_chunk(tmp_path):
    from vla_jepa.checkpoint import config_from_public_yaml

    p = tmp_path / "config.yaml"
    p.write_text(yaml.safe_dump({"framework": {"action_model": {"future_action_window_size": 6, "state_dim": None}}}))
    cfg = config_from_public_yaml(p)
    assert cfg.horizon == 7 and cfg.state_dim == 0 and cfg.name == "paper"
    m = make_model(cfg, device="meta")
    assert m.action_model.state_encoder is None


def test_checkpoint_records_its_tokenizer_and_refuses_another(tmp_path, tiny_model):
    """model.safetensors records the tokenizer (name + SHA-256); a checkpoint whose tokenizer.json was replaced
    does not load, and the message says what to put back."""
    from tokenizers import AddedToken

    from vla_jepa.checkpoint import saved_tokenizer_record
    from vla_jepa.prompt import build_tiny_tokenizer
    from vla_jepa.qwen_tokenizer import tokenizer_sha256

    save_checkpoint(tmp_path / "ck", tiny_model, make_batch(tiny_model, 1)[1])
    rec = saved_tokenizer_record(tmp_path / "ck" / "model.safetensors")
    assert rec == {"tokenizer_name": "byte-level", "tokenizer_sha256": tokenizer_sha256(tiny_model.tokenizer)}
    load_checkpoint(tmp_path / "ck")
    other = build_tiny_tokenizer()
    other.add_tokens([AddedToken("<|other|>", special=True)])
    (tmp_path / "ck" / "tokenizer.json").write_text(other.to_str())
    with pytest.raises(ValueError, match="is not the byte-level tokenizer the weights .* were saved with .*put that "
                                         "tokenizer.json back"):
        load_checkpoint(tmp_path / "ck")


def test_released_weights_without_a_tokenizer_get_qwens(tmp_path):
    """The paper preset with no tokenizer given uses the Qwen3-VL one built at install time, never byte-level ids."""
    from vla_jepa.qwen_tokenizer import tokenizer_name

    model = make_model(get_config("paper"), device="meta", with_world_model=False)
    assert tokenizer_name(model.tokenizer) == "qwen3-vl"
    assert model.tokenizer.token_to_id("<|embodied_action|>") == 151697

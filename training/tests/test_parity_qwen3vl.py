"""Parity of our Qwen3-VL backbone against transformers' Qwen3VLModel on a tiny random config."""

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")

from vla_jepa.checkpoint import load_qwen3vl_folder  # noqa: E402
from vla_jepa.config import get_config  # noqa: E402
from vla_jepa.prompt import IMAGE_PAD, build_tiny_tokenizer, encode_with_layout, layout_for_config  # noqa: E402
from vla_jepa.vlm import Qwen3VLBackbone  # noqa: E402

TOL = 1e-4


def hf_config(cfg, tok):
    from transformers import Qwen3VLConfig

    v, t = cfg.vision, cfg.text
    return Qwen3VLConfig(
        text_config=dict(vocab_size=t.vocab_size, hidden_size=t.hidden_size, intermediate_size=t.intermediate_size,
                         num_hidden_layers=t.num_layers, num_attention_heads=t.num_heads,
                         num_key_value_heads=t.num_kv_heads, head_dim=t.head_dim, rms_norm_eps=t.rms_norm_eps,
                         rope_parameters={"rope_type": "default", "rope_theta": t.rope_theta,
                                          "mrope_section": list(t.mrope_section), "mrope_interleaved": True},
                         max_position_embeddings=4096, tie_word_embeddings=True),
        vision_config=dict(depth=v.depth, hidden_size=v.hidden_size, num_heads=v.num_heads,
                           intermediate_size=v.intermediate_size, out_hidden_size=v.out_hidden_size,
                           patch_size=v.patch_size, temporal_patch_size=v.temporal_patch_size,
                           spatial_merge_size=v.spatial_merge_size,
                           num_position_embeddings=v.num_position_embeddings,
                           deepstack_visual_indexes=list(v.deepstack_visual_indexes), hidden_act="gelu_pytorch_tanh"),
        image_token_id=tok.token_to_id(IMAGE_PAD), video_token_id=tok.token_to_id("<|im_end|>") + 1000,
        vision_start_token_id=tok.token_to_id("<|vision_start|>"),
        vision_end_token_id=tok.token_to_id("<|vision_end|>"), tie_word_embeddings=True,
    )


def hf_pixel_values(images, cfg):
    """(N, 3, H, W) normalised -> Qwen image-processor patch layout (N*gh*gw, 3*tp*p*p)."""
    v = cfg.vision
    p, m, tp = v.patch_size, v.spatial_merge_size, v.temporal_patch_size
    n, c, h, w = images.shape
    gh, gw = h // p, w // p
    x = images[:, None].repeat(1, tp, 1, 1, 1)  # (N, tp, C, H, W)
    x = x.reshape(n, 1, tp, c, gh // m, m, p, gw // m, m, p)
    x = x.permute(0, 1, 4, 7, 5, 8, 3, 2, 6, 9)
    return x.reshape(n * gh * gw, c * tp * p * p), torch.tensor([[1, gh, gw]] * n)


@pytest.mark.parametrize("position_grid", [8, 6])
def test_qwen3vl_backbone_matches_transformers(tmp_path, position_grid):
    torch.manual_seed(0)
    torch.set_num_threads(1)
    from transformers import Qwen3VLForConditionalGeneration

    from vla_jepa.config import replace

    cfg = get_config("tiny")
    # a position table of a different size exercises the bilinear interpolation of learned positions
    cfg = replace(cfg, vision=replace(cfg.vision, num_position_embeddings=position_grid ** 2))
    tok = build_tiny_tokenizer()
    hf = Qwen3VLForConditionalGeneration(hf_config(cfg, tok)).eval()
    with torch.no_grad():  # random (non-identity) norms so the test sees them
        for name, p in hf.named_parameters():
            if name.endswith("norm.weight") or "layernorm" in name:
                p.add_(0.1 * torch.randn_like(p))
    hf.save_pretrained(tmp_path / "qwen")

    from vla_jepa.checkpoint import config_from_hf_folders

    assert config_from_hf_folders(cfg, tmp_path / "qwen") == cfg  # sizes read back from HF config.json
    ours = Qwen3VLBackbone(cfg.vision, cfg.text, cfg.image_size)
    report = load_qwen3vl_folder(ours, tmp_path / "qwen")
    assert report.missing == [] and report.unexpected == [], report
    ours.eval()

    layout = layout_for_config(tok, cfg)
    instr = ["pick up the red cube", "open the drawer and put the bowl inside it"]
    enc = [encode_with_layout(tok, layout, s, cfg.num_transitions, cfg.latent_tokens_per_step,
                              cfg.num_embodied_tokens) for s in instr]
    ids = torch.from_numpy(np.stack([e[0] for e in enc]))
    mask = torch.from_numpy(np.stack([e[1] for e in enc]))
    images = torch.rand(2, cfg.num_views, 3, cfg.image_size, cfg.image_size) * 2 - 1  # already normalised

    with torch.no_grad():
        mine = ours(images, ids, mask, layout)
        pv, thw = hf_pixel_values(images.flatten(0, 1), cfg)
        captured = {}
        hook = hf.model.language_model.layers[-1].register_forward_hook(
            lambda mod, inp, out: captured.__setitem__("h", out[0] if isinstance(out, tuple) else out))
        hf.model(input_ids=ids, attention_mask=mask, pixel_values=pv, image_grid_thw=thw,
                 mm_token_type_ids=(ids == tok.token_to_id(IMAGE_PAD)).int())
        hook.remove()
    ref = captured["h"]
    real = mask.bool()
    err = (mine - ref).abs()[real].max().item()
    print("max abs err", err, "ref scale", ref.abs().max().item())
    assert err < TOL, f"max abs err {err}"
    idx = list(layout.latent_positions) + list(layout.embodied_positions)
    assert torch.allclose(mine[:, idx], ref[:, idx], atol=TOL)


def test_patch_layout_matches_transformers_image_processor():
    """The layout fed to HF in the parity test is exactly what its Qwen2-VL/Qwen3-VL image processor produces."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    cfg = get_config("tiny")
    proc = Qwen2VLImageProcessorPil(patch_size=16, temporal_patch_size=2, merge_size=2, image_mean=[0.5] * 3,
                                    image_std=[0.5] * 3, do_resize=False)
    img = (np.random.RandomState(0).rand(cfg.image_size, cfg.image_size, 3) * 255).astype(np.uint8)
    out = proc(images=[img], return_tensors="pt")
    x = (torch.from_numpy(img).permute(2, 0, 1).float() / 255 - torch.tensor(cfg.image_mean)[:, None, None]) \
        / torch.tensor(cfg.image_std)[:, None, None]
    ours, thw = hf_pixel_values(x[None], cfg)
    assert torch.equal(out["image_grid_thw"], thw)
    assert (out["pixel_values"] - ours).abs().max().item() < 1e-6


def test_preprocessor_config_mismatch_is_reported(tmp_path):
    import json

    from vla_jepa.checkpoint import check_qwen_preprocessor

    cfg = get_config("paper")
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(
        {"image_mean": [0.5] * 3, "image_std": [0.5] * 3, "patch_size": 16, "merge_size": 2,
         "temporal_patch_size": 2}))
    check_qwen_preprocessor(tmp_path, cfg)
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({"patch_size": 14, "image_mean": [0.48] * 3}))
    with pytest.raises(ValueError, match="patch_size=14"):
        check_qwen_preprocessor(tmp_path, cfg)

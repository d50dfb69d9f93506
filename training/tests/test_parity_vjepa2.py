"""Parity of our V-JEPA2 encoder against transformers' VJEPA2Model on a tiny random config."""

import pytest
import torch

transformers = pytest.importorskip("transformers")

from vla_jepa.checkpoint import load_vjepa2_folder  # noqa: E402
from vla_jepa.config import VJEPAConfig  # noqa: E402
from vla_jepa.world_model import VJEPA2Encoder  # noqa: E402

TOL = 1e-4


@pytest.mark.parametrize("head_dim", [16, 24])
def test_vjepa2_encoder_matches_transformers(tmp_path, head_dim):
    from transformers import VJEPA2Config, VJEPA2Model

    torch.manual_seed(0)
    torch.set_num_threads(1)
    cfg = VJEPAConfig(hidden_size=4 * head_dim, num_layers=2, num_heads=4, crop_size=64)
    hf_cfg = VJEPA2Config(hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_layers,
                          num_attention_heads=cfg.num_heads, patch_size=cfg.patch_size, tubelet_size=cfg.tubelet_size,
                          crop_size=cfg.crop_size, frames_per_clip=8, pred_hidden_size=32, pred_num_hidden_layers=1,
                          pred_num_attention_heads=2, pred_num_mask_tokens=2)
    hf = VJEPA2Model(hf_cfg).eval()
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    hf.save_pretrained(tmp_path / "vjepa2")
    from vla_jepa.checkpoint import config_from_hf_folders
    from vla_jepa.config import get_config

    assert config_from_hf_folders(get_config("tiny"), vjepa_folder=tmp_path / "vjepa2").vjepa == cfg
    ours = VJEPA2Encoder(cfg).eval()
    report = load_vjepa2_folder(ours, tmp_path / "vjepa2")
    assert report.missing == [] and report.unexpected == [], report
    clip = torch.randn(2, 8, 3, 64, 64)
    with torch.no_grad():
        ref = hf.get_vision_features(pixel_values_videos=clip)
        mine = ours(clip)
    assert mine.shape == ref.shape == (2, 4 * 16, cfg.hidden_size)
    err = (mine - ref).abs().max().item()
    assert err < TOL, f"max abs err {err}"

"""Shapes of every module on the tiny preset, and the paper preset's parameter counts on the meta device."""

import pytest
import torch

from vj_helpers import make_batch
from vla_jepa.config import get_config
from vla_jepa.model import make_model
from vla_jepa.vlm import count_params


def test_tiny_module_shapes(tiny_model):
    m, cfg = tiny_model, tiny_model.cfg
    batch, _ = make_batch(m, 2)
    b, d = 2, cfg.text.hidden_size
    assert batch["images"].shape == (b, cfg.num_views, 3, cfg.image_size, cfg.image_size)
    assert batch["video"].shape == (b, 2, cfg.num_frames, 3, cfg.vjepa.crop_size, cfg.vjepa.crop_size)
    with torch.no_grad():
        pixels = torch.rand(b * cfg.num_views, 3, cfg.image_size, cfg.image_size)
        merged, deep = m.vlm.visual(pixels)
        assert merged.shape == (b * cfg.num_views, cfg.image_tokens_per_view, d)
        assert len(deep) == len(cfg.vision.deepstack_visual_indexes) and deep[0].shape == merged.shape
        h = m.vlm_hidden(batch["images"], batch["input_ids"], batch["attention_mask"], m.robot_layout)
        assert h.shape == (b, cfg.max_prompt_len, d)
        latent, embodied = m.token_features(batch["images"], batch["input_ids"], batch["attention_mask"])
        assert latent.shape == (b, 24, d) and embodied.shape == (b, 32, d)
        feats = m.wm_step_features(batch["video"])
        g2 = cfg.wm_grid ** 2
        assert feats.shape == (b, cfg.num_steps, g2, 2 * cfg.vjepa.hidden_size)
        pred = m.vj_predictor(feats[:, :-1].flatten(1, 2), latent)
        assert pred.shape == (b, cfg.num_transitions * g2, 2 * cfg.vjepa.hidden_size)
        v = m.action_model.velocity(embodied, torch.randn(b, 7, 7), torch.zeros(b, dtype=torch.long), batch["state"])
        assert v.shape == (b, 7, 7)
        out = m.inference_module()(batch["images"].float() / 255, batch["input_ids"], batch["attention_mask"],
                                   batch["state"], torch.randn(b, 7, 7))
        assert out.shape == (b, cfg.horizon, cfg.action_dim)
    losses = m.train().robot_losses(batch)
    assert set(losses) == {"action_loss", "wm_loss"} and all(x.ndim == 0 for x in losses.values())


def test_paper_on_meta_device_parameter_counts():
    m = make_model(get_config("paper"), device="meta")
    vlm, head = count_params(m.vlm), count_params(m.action_model)
    pred, enc = count_params(m.vj_predictor), count_params(m.vj_encoder)
    assert (vlm + head) / 1e9 == pytest.approx(2.28, abs=0.01)  # inference path (reference: 2.28 B)
    assert head / 1e6 == pytest.approx(155.2, abs=0.5)
    assert pred / 1e6 == pytest.approx(157.5, abs=0.5)
    assert enc / 1e6 == pytest.approx(303.9, abs=1.0)  # ViT-L/16 (about 300 M)
    assert m.robot_layout.embodied_positions[-1] < get_config("paper").max_prompt_len


def test_small_preset_builds_and_runs_one_forward():
    cfg = get_config("small")
    m = make_model(cfg).eval()
    from vj_helpers import make_batch as mb

    batch, _ = mb(m, 1)
    with torch.no_grad():
        out = m.predict_actions(batch["images"], batch["input_ids"], batch["attention_mask"], batch["state"],
                                torch.zeros(1, 7, 7))
    assert out.shape == (1, cfg.horizon, cfg.action_dim) and torch.isfinite(out).all()

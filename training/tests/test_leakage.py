"""Leakage: nothing computed for time step t may depend on frames after t."""

import numpy as np
import pytest
import torch

from vj_helpers import make_batch
from vla_jepa.config import get_config, replace
from vla_jepa.data import InMemoryEpisodeSource, RobotDataset, collate, synthetic_episodes
from vla_jepa.model import make_model
from vla_jepa.normalize import compute_stats


def _wm_outputs(model, batch):
    with torch.no_grad():
        latent, embodied = model.token_features(batch["images"], batch["input_ids"], batch["attention_mask"])
        feats = model.wm_step_features(batch["video"])  # (B, steps, g2, D)
        pred = model.vj_predictor(feats[:, :-1].flatten(1, 2), latent)
        pred = pred.view(pred.shape[0], model.cfg.num_transitions, -1, pred.shape[-1])
        actions = model.predict_actions(batch["images"], batch["input_ids"], batch["attention_mask"],
                                        batch["state"], torch.ones(len(latent), 7, 7) * 0.3)
    return latent, embodied, feats, pred, actions


@pytest.mark.parametrize("mode", ["prefix", "per_step"])
def test_future_frames_never_reach_context_features_predictions_or_actions(mode):
    torch.manual_seed(0)
    cfg = replace(get_config("tiny"), wm_context_mode=mode)
    model = make_model(cfg).eval()
    batch, _ = make_batch(model, 2)
    base = _wm_outputs(model, batch)
    tub = cfg.vjepa.tubelet_size
    for s in range(cfg.num_transitions):
        future = dict(batch)
        video = batch["video"].clone()
        video[:, :, (s + 1) * tub:] = 255 - video[:, :, (s + 1) * tub:]  # frames after step s
        future["video"] = video
        lat, emb, feats, pred, act = _wm_outputs(model, future)
        assert torch.equal(lat, base[0]) and torch.equal(emb, base[1])  # student pathway
        assert torch.equal(feats[:, :s + 1], base[2][:, :s + 1]), f"context features of steps <= {s} leaked"
        assert torch.equal(pred[:, :s + 1], base[3][:, :s + 1]), f"predictions for steps <= {s} leaked"
        assert torch.equal(act, base[4])
        # control: the perturbation is visible to later steps, so the test can fail
        assert not torch.equal(feats[:, s + 1], base[2][:, s + 1])

    past = dict(batch)
    video = batch["video"].clone()
    video[:, :, 0] = 255 - video[:, :, 0]  # a frame <= every step
    past["video"] = video
    _, _, feats, pred, _ = _wm_outputs(model, past)
    assert not torch.equal(feats[:, 0], base[2][:, 0]) and not torch.equal(pred[:, 0], base[3][:, 0])

    now = dict(batch)
    now["images"] = 255 - batch["images"]  # the current frame t feeds the student
    lat, emb, _, _, act = _wm_outputs(model, now)
    assert not torch.equal(emb, base[1]) and not torch.equal(act, base[4])


def test_dataset_sample_at_t_ignores_later_frames(tiny_model):
    model, cfg = tiny_model, tiny_model.cfg
    eps = synthetic_episodes(1, length=20, num_views=cfg.num_views, state_dim=cfg.state_dim)
    stats = compute_stats(eps[0].actions)
    t = 5
    ds = RobotDataset(InMemoryEpisodeSource(eps), cfg, model.tokenizer, model.robot_layout, stats)
    a = ds[t]
    eps[0].frames[t + 1:] = 255 - eps[0].frames[t + 1:]
    ds2 = RobotDataset(InMemoryEpisodeSource(eps), cfg, model.tokenizer, model.robot_layout, stats)
    b = ds2[t]
    assert torch.equal(a["images"], b["images"]) and torch.equal(a["state"], b["state"])
    assert torch.equal(a["video"][:, 0], b["video"][:, 0]) and not torch.equal(a["video"], b["video"])
    with torch.no_grad():
        noise = torch.zeros(1, 7, 7)
        ba, bb = collate([a]), collate([b])
        act_a = model.predict_actions(ba["images"], ba["input_ids"], ba["attention_mask"], ba["state"], noise)
        act_b = model.predict_actions(bb["images"], bb["input_ids"], bb["attention_mask"], bb["state"], noise)
    assert torch.equal(act_a, act_b)
    assert np.isfinite(act_a.numpy()).all()


def test_target_modes(tiny_model):
    """'full' targets are one whole-clip pass (public recipe); its last step equals the last causal prefix."""
    batch, _ = make_batch(tiny_model, 1)
    with torch.no_grad():
        causal, full = tiny_model.wm_step_features(batch["video"], with_full=True)
    assert torch.equal(causal[:, -1], full[:, -1])
    assert not torch.equal(causal[:, 1], full[:, 1])  # earlier steps of the full pass see later frames

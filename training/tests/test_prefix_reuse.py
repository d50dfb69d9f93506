"""Per-task prefix reuse (vlm.TaskPrefix): the keys/values of the prompt head before the first image, the prompt's
embeddings, RoPE tables and mask, computed once per task, give the same hidden states and the same action chunk
as the full forward on the tiny and small presets (random weights, float32, fixed noise)."""

import numpy as np
import pytest
import torch

from vla_jepa.config import get_config
from vla_jepa.model import make_model
from vla_jepa.prompt import encode_instruction
from vla_jepa.vlm import prefix_index


def _model(preset):
    torch.manual_seed(0)
    return make_model(get_config(preset), with_world_model=False).eval()


def _prompt(model, instruction):
    ids, mask = encode_instruction(model.tokenizer, instruction, model.cfg.max_prompt_len, cfg=model.cfg)
    return torch.from_numpy(ids), torch.from_numpy(mask)


def _pixels(model, seed, batch=1):
    cfg = model.cfg
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(batch, cfg.num_views, 3, cfg.image_size, cfg.image_size, generator=g)
    return (images - model.image_mean) / model.image_std


def _chunk_cached(model, prefix, pixels, state, noise):
    h = model.vlm.forward_with_prefix(pixels, prefix)
    embodied = h[:, prefix_index(prefix, model.robot_layout.embodied_positions)]
    return model.action_model.sample(embodied, noise, state)


@pytest.mark.parametrize("preset", ["tiny", "small"])
@pytest.mark.parametrize("drop_padding", [True, False])
def test_reused_prefix_equals_full_forward(preset, drop_padding):
    model = _model(preset)
    cfg, layout = model.cfg, model.robot_layout
    ids, mask = _prompt(model, "pick up the red cube")
    state = torch.randn(1, cfg.state_dim, generator=torch.Generator().manual_seed(1))
    noise = torch.randn(1, cfg.horizon, cfg.action_dim, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        prefix = model.vlm.task_prefix(ids, mask, layout, drop_padding=drop_padding)
        assert prefix.past_kv.shape[:3] == (cfg.text.num_layers, 2, 1)
        assert prefix.past_kv.shape[4] == layout.image_positions[0] > 0
        n_pad = int((mask == 0).sum())
        assert len(prefix.positions) == cfg.max_prompt_len - layout.image_positions[0] - (n_pad if drop_padding
                                                                                            else 0)
        for seed in (3, 4):  # two calls of one task: new images, same prefix
            pixels = _pixels(model, seed)
            full = model.vlm(pixels, ids, mask, layout)  # (1, L, D)
            cached = model.vlm.forward_with_prefix(pixels, prefix)  # (1, K, D)
            keep = prefix.positions[mask[0, prefix.positions].bool()]  # padded rows are never read
            got = cached[:, prefix_index(prefix, keep.tolist())]
            scale = full[:, keep].abs().max()
            assert torch.allclose(got, full[:, keep], atol=1e-5 * scale, rtol=1e-5)
            a_full = model.action_model.sample(full[:, list(layout.embodied_positions)], noise, state)
            a_cached = _chunk_cached(model, prefix, pixels, state, noise)
            assert a_full.shape == (1, cfg.horizon, cfg.action_dim)
            assert torch.allclose(a_cached, a_full, atol=1e-5), (a_cached - a_full).abs().max()


def test_prefix_of_another_instruction_gives_another_chunk():
    """The prefix holds the prompt: reusing one task's prefix for another instruction is wrong, so the runtime
    must key it by the prompt (tested on the backend in test/test_backends.py)."""
    model = _model("tiny")
    layout = model.robot_layout
    ids_a, mask_a = _prompt(model, "pick up the red cube")
    ids_b, mask_b = _prompt(model, "open the drawer")
    pixels, noise = _pixels(model, 5), torch.randn(1, 7, 7, generator=torch.Generator().manual_seed(6))
    state = torch.zeros(1, model.cfg.state_dim)
    with torch.no_grad():
        a = _chunk_cached(model, model.vlm.task_prefix(ids_a, mask_a, layout), pixels, state, noise)
        b = _chunk_cached(model, model.vlm.task_prefix(ids_b, mask_b, layout), pixels, state, noise)
        b_full = model.action_model.sample(model.vlm(pixels, ids_b, mask_b, layout)[:, list(
            layout.embodied_positions)], noise, state)
    assert torch.allclose(b, b_full, atol=1e-5)
    assert (a - b).abs().max() > 1e-3


def test_batched_prefix_keeps_each_samples_padding():
    """Two prompts of different lengths in one batch: only the positions padded in both are left out, and each
    sample still equals its own full forward."""
    model = _model("tiny")
    layout = model.robot_layout
    ids_a, mask_a = _prompt(model, "pick up the cube")
    ids_b, mask_b = _prompt(model, "open the top drawer of the cabinet and put the bowl in it")
    ids, mask = torch.cat([ids_a, ids_b]), torch.cat([mask_a, mask_b])
    pixels = _pixels(model, 7, batch=2)
    with torch.no_grad():
        prefix = model.vlm.task_prefix(ids, mask, layout)
        full = model.vlm(pixels, ids, mask, layout)
        cached = model.vlm.forward_with_prefix(pixels, prefix)
    emb = list(layout.embodied_positions)
    both_padded = int(((mask_a == 0) & (mask_b == 0)).sum())
    assert 0 < both_padded < int((mask_a == 0).sum())
    assert len(prefix.positions) == model.cfg.max_prompt_len - layout.image_positions[0] - both_padded
    assert torch.allclose(cached[:, prefix_index(prefix, emb)], full[:, emb], atol=1e-5)
    with pytest.raises(ValueError, match="samples"):
        model.vlm.forward_with_prefix(pixels[:1], prefix)
    with pytest.raises(ValueError, match="cached or padding"):
        prefix_index(prefix, [0])
    assert np.all(np.diff(prefix.positions.numpy()) > 0)


def test_reused_prefix_in_bfloat16_keeps_the_chunk():
    """In bfloat16 (the GPU dtype) the reordered sums round differently: the embodied states stay at cosine
    >= 0.99999 (a head computed without its layers, i.e. wrong keys/values for 7 of ~240 tokens, drops to
    ~0.99997) and the chunk at >= 0.9999."""
    model = _model("tiny").to(torch.bfloat16)
    layout = model.robot_layout
    emb = list(layout.embodied_positions)
    ids, mask = _prompt(model, "pick up the red cube")
    prefix = model.vlm.task_prefix(ids, mask, layout)
    state = torch.randn(1, model.cfg.state_dim).to(torch.bfloat16)
    noise = torch.randn(1, 7, 7, generator=torch.Generator().manual_seed(9)).to(torch.bfloat16)

    def cos(a, b):
        return float(torch.nn.functional.cosine_similarity(a.float().flatten(), b.float().flatten(), dim=0))

    for seed in (8, 9, 10):
        pixels = _pixels(model, seed).to(torch.bfloat16)
        with torch.no_grad():
            full = model.vlm(pixels, ids, mask, layout)[:, emb]
            cached = model.vlm.forward_with_prefix(pixels, prefix)[:, prefix_index(prefix, emb)]
            a_full = model.action_model.sample(full, noise, state)
            a_cached = model.action_model.sample(cached, noise, state)
        assert cos(full, cached) >= 0.99999
        assert cos(a_full, a_cached) >= 0.9999

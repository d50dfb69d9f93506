"""action_head.FusedEulerSampler: the Euler loop with its step-invariant work hoisted (AdaLN modulations, time
sinusoids, cross-attention K/V, state/future tokens) equals FlowMatchingActionHead.sample."""

import dataclasses

import pytest
import torch

from vla_jepa.action_head import FusedEulerSampler
from vla_jepa.config import get_config
from vla_jepa.model import make_model


def _inputs(cfg, b=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, cfg.num_embodied_tokens, cfg.text.hidden_size, generator=g),
            torch.randn(b, cfg.horizon, cfg.action_dim, generator=g), torch.randn(b, cfg.state_dim, generator=g))


@pytest.mark.parametrize("preset", ["tiny", "small"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_sampler_equals_sample(preset, dtype):
    torch.manual_seed(0)
    head = make_model(get_config(preset), with_world_model=False).eval().action_model.to(dtype)
    with torch.no_grad():  # random AdaLN weights are ~0 at init in many DiTs; make the modulation matter
        for blk in head.model.transformer_blocks:
            blk.norm1.linear.weight.normal_(0, 0.05)
        head.model.proj_out_1.weight.normal_(0, 0.05)
    fused = FusedEulerSampler(head)
    head_cfg = get_config(preset)
    emb, noise, state = (t.to(dtype) for t in _inputs(head_cfg))
    with torch.no_grad():
        ref = head.sample(emb, noise, state)
        got = fused(emb, noise, state)
    assert got.shape == (2, head_cfg.horizon, head_cfg.action_dim) and got.dtype == dtype
    tol = 1e-6 if dtype == torch.float32 else 4e-3
    assert torch.allclose(got.float(), ref.float(), atol=tol, rtol=tol), (got.float() - ref.float()).abs().max()
    assert not torch.allclose(got, head.sample(emb, noise + 0.5, state), atol=tol)


def test_fused_sampler_with_object_inputs_and_without_state():
    torch.manual_seed(0)
    cfg = get_config("tiny")
    for c in (dataclasses.replace(cfg, num_aux_objects=2, action_head_objects=True),
              dataclasses.replace(cfg, state_dim=0)):
        head = make_model(c, with_world_model=False).eval().action_model
        emb, noise, _ = _inputs(c)
        state = torch.randn(2, c.state_dim) if c.state_dim else None
        objects = torch.randn(2, 6) if c.action_head_objects else None
        if objects is not None:
            torch.nn.init.normal_(head.object_encoder.layer2.weight, std=0.1)  # zero at init: make it count
        with torch.no_grad():
            assert torch.allclose(FusedEulerSampler(head)(emb, noise, state, objects),
                                  head.sample(emb, noise, state, objects), atol=1e-6)

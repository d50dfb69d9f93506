"""quant.py: E4M3 linear layers. The CPU emulation computes what torch._scaled_mm computes (the GPU path; torch
2.13 runs it on the CPU too), per-token scales keep one outlier token from flattening the others, rules pick
modules by name, and the tiny and small presets keep chunk cosine >= 0.999 to the unquantised model."""

import copy

import numpy as np
import pytest
import torch
from torch import nn

from vla_jepa.config import get_config
from vla_jepa.model import make_model
from vla_jepa.prompt import encode_instruction
from vla_jepa.quant import FP8, Fp8Linear, chunk_metrics, parse_rules, plan, quantize_linears


@pytest.mark.parametrize("scaling", ["tensor", "channel"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_emulation_equals_scaled_mm(scaling, dtype):
    torch.manual_seed(0)
    lin = nn.Linear(64, 48)
    x = (torch.randn(2, 5, 64) * torch.linspace(0.1, 10, 64)).to(dtype)  # uneven channels, like real activations
    emu = Fp8Linear(lin, scaling, mode="emulate").to(dtype)
    mm = Fp8Linear(lin, scaling, mode="scaled_mm").to(dtype)
    with torch.no_grad():
        a, b = emu(x), mm(x)
    assert a.dtype == b.dtype == dtype and a.shape == (2, 5, 48)
    tol = 1e-5 if dtype == torch.float32 else 1e-2
    assert torch.allclose(a.float(), b.float(), rtol=tol, atol=tol * float(a.float().abs().max()))
    # and both are an E4M3 approximation of the float layer: per-element error a few % of the output scale
    ref = lin.to(dtype)(x).float()
    assert (a.float() - ref).abs().max() < 0.08 * ref.abs().max()
    assert emu.weight_fp8.dtype == FP8 and emu.weight_scale.shape == (() if scaling == "tensor" else (48, 1))


def test_weights_round_to_e4m3_and_per_token_scales_isolate_an_outlier():
    lin = nn.Linear(16, 16, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.arange(256, dtype=torch.float32).view(16, 16) / 255 * 448)  # amax 448: scale 1
    q = Fp8Linear(lin, "tensor", mode="emulate")
    assert float(q.weight_scale) == 1.0
    assert torch.equal(q.weight, lin.weight.to(FP8).float())  # round to nearest E4M3
    x = torch.ones(3, 16)
    x[1, 0] = 1e6  # one outlier token: per-token scales keep the other rows exact
    for scaling in ("tensor", "channel"):
        out = Fp8Linear(lin, scaling, mode="emulate")(x)
        assert torch.isfinite(out).all()
    per_token = Fp8Linear(lin, "channel", mode="emulate")(x)
    assert torch.allclose(per_token[0], lin(x[:1]).squeeze(0), rtol=0.07)
    per_tensor = Fp8Linear(lin, "tensor", mode="emulate")(x)
    assert not torch.allclose(per_tensor[0], lin(x[:1]).squeeze(0), rtol=0.07)  # row 0 underflows


def test_rules_pick_modules_by_name_first_match_wins():
    model = make_model(get_config("tiny"), with_world_model=False)
    rules = parse_rules("vlm.language_model.layers.0.*=bf16,vlm.language_model.layers.*=fp8,action_model.*=fp8")
    decided = plan(model, rules)
    assert decided["vlm.language_model.layers.0.mlp.up_proj"] == "bf16"
    assert decided["vlm.language_model.layers.1.mlp.up_proj"] == "fp8"
    assert decided["vlm.visual.blocks.0.mlp.linear_fc1"] == "default"
    assert decided["action_model.action_decoder.layer2"] == "shape"  # N = action_dim 7: no FP8 kernel
    quantize_linears(model, rules, mode="emulate")
    assert isinstance(model.vlm.language_model.layers[1].mlp.up_proj, Fp8Linear)
    assert isinstance(model.vlm.language_model.layers[0].mlp.up_proj, nn.Linear)
    assert isinstance(model.action_model.model.transformer_blocks[0].ff.net[2], Fp8Linear)
    assert isinstance(model.action_model.action_decoder.layer2, nn.Linear)
    for bad in ("fast", "vlm.*=fp4", "=fp8"):
        with pytest.raises(ValueError, match="fp8"):
            parse_rules(bad)


@pytest.mark.parametrize("preset", ["tiny", "small"])
def test_fp8_vlm_and_head_hold_the_accuracy_gate(preset):
    """bf16 model vs the same with every VLM and DiT block linear in FP8 (emulated): chunk cosine >= 0.999."""
    torch.manual_seed(0)
    model = make_model(get_config(preset), with_world_model=False).eval()
    cfg = model.cfg
    ids, mask = (torch.from_numpy(a) for a in encode_instruction(model.tokenizer, "pick up the red cube",
                                                                 cfg.max_prompt_len, cfg=cfg))
    g = torch.Generator().manual_seed(1)
    images = torch.rand(1, cfg.num_views, 3, cfg.image_size, cfg.image_size, generator=g)
    state, noise = torch.randn(1, cfg.state_dim, generator=g), torch.randn(1, cfg.horizon, cfg.action_dim, generator=g)
    quantized = copy.deepcopy(model)
    decided = quantize_linears(quantized, "all", "channel", mode="emulate")
    assert sum(k == "fp8" for k in decided.values()) >= 5 * cfg.text.num_layers

    def chunk(m):
        m = m.to(torch.bfloat16)
        with torch.no_grad():
            return m.predict_actions(images.bfloat16(), ids, mask, state.bfloat16(), noise.bfloat16())

    ref, got = chunk(model), chunk(quantized)
    metrics = chunk_metrics(ref, got)
    assert metrics["cosine"] >= 0.999, metrics
    assert 0 < metrics["max_abs_err"] < 0.1 and np.isfinite(metrics["max_abs_err"])

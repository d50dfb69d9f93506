"""TorchBackend's faster-inference options on a real tiny VLA-JEPA (random weights, CPU, float32):
prefix_cache and fused_head give the chunk of the plain backend (and the prefix is rebuilt when the prompt
changes), fp8 (CPU emulation of the E4M3 numerics) stays within the accuracy gate, bad option values are named.
The CUDA paths (graphs with a cached prefix, torch._scaled_mm) are marked gpu and skipped here."""
import copy

import numpy as np
import pytest
import torch

from vla_jepa.config import get_config
from vla_jepa.model import make_model
from vla_jepa.prompt import encode_instruction
from vla_jepa.quant import Fp8Linear, chunk_metrics
from vla_jepa_ros.runtime.torch_backend import TorchBackend, TorchBackendConfig

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return make_model(get_config("tiny"), with_world_model=False).eval()


def _inputs(model, instruction="pick up the red cube", seed=0):
    cfg = model.cfg
    rng = np.random.default_rng(seed)
    ids, mask = encode_instruction(model.tokenizer, instruction, cfg.max_prompt_len, cfg=cfg)
    return {"images": rng.random((1, cfg.num_views, 3, cfg.image_size, cfg.image_size), dtype=np.float32),
            "input_ids": ids, "attention_mask": mask,
            "state": rng.standard_normal((1, cfg.state_dim), dtype=np.float32),
            "noise": rng.standard_normal((1, cfg.horizon, cfg.action_dim), dtype=np.float32)}


def _backend(model, **kw):
    return TorchBackend(copy.deepcopy(model), TorchBackendConfig(num_threads=1, **kw))


def test_prefix_cache_and_fused_head_give_the_plain_chunk_and_follow_the_prompt(model):
    plain = _backend(model)
    fast = _backend(model, prefix_cache=True, fused_head=True)
    calls = [_inputs(model, "pick up the red cube", s) for s in range(3)]
    calls += [_inputs(model, "open the drawer", s) for s in (3, 4)]  # a new task: new prompt, new length
    calls += [_inputs(model, "pick up the red cube", 5)]  # and back
    built = []
    for inp in calls:
        ref, _ = plain.run(inp)
        got, stages = fast.run(inp)
        np.testing.assert_allclose(got, ref, atol=2e-5)
        built.append("task_prefix_ms" in stages)
        assert {"prefix_ms", "head_ms"} <= set(stages)
    assert built == [True, False, False, True, False, True]  # once per task, again when the prompt changes
    assert not np.allclose(plain.run(calls[0])[0], plain.run(calls[3])[0], atol=1e-3)  # the prompt matters


def test_graph_path_buffers_follow_the_prompt(model):
    """The CUDA-graph path's static buffers, replayed eagerly on the CPU: a new prompt of the same unpadded length
    refills the captured task buffers, another length captures again, and every chunk equals the plain one."""
    plain = _backend(model)
    fast = _backend(model, prefix_cache=True, fused_head=True)
    fast.static_buffers_on_cpu = True
    captures = []
    for instruction, seed in (("pick up the red cube", 0), ("pick up the red cube", 1), ("pick up the red ball", 2),
                              ("open the drawer", 3), ("pick up the red cube", 4)):
        inp = _inputs(model, instruction, seed)
        np.testing.assert_allclose(fast.run(inp)[0], plain.run(inp)[0], atol=2e-5)
        captures.append(fast.captures)
    assert captures == [1, 1, 1, 2, 3]  # "ball" has the length of "cube": refilled, not captured again


def test_fp8_emulated_holds_the_gate_and_leaves_the_callers_model_alone(model):
    plain = _backend(model)
    fp8 = _backend(model, fp8="all", fp8_scaling="channel", prefix_cache=True, fused_head=True)
    assert sum(v == "fp8" for v in fp8.fp8_plan.values()) > 20
    assert fp8.fp8_plan["action_model.model.transformer_blocks.0.ff.net.2"] == "fp8"
    assert fp8.fp8_plan["action_model.action_decoder.layer2"] == "default"  # no rule: unchanged
    assert isinstance(fp8.prefix.vlm.language_model.layers[0].mlp.up_proj, Fp8Linear)
    assert not any(isinstance(m, Fp8Linear) for m in model.modules())
    for seed in range(3):
        inp = _inputs(model, seed=seed)
        metrics = chunk_metrics(torch.from_numpy(plain.run(inp)[0]), torch.from_numpy(fp8.run(inp)[0]))
        assert metrics["cosine"] >= 0.999 and 0 < metrics["max_abs_err"] < 0.05, metrics


def test_bad_fast_path_options_are_named():
    with pytest.raises(ValueError, match="fp8='fast'"):
        TorchBackendConfig(fp8="fast")
    with pytest.raises(ValueError, match="fp8_scaling='block'"):
        TorchBackendConfig(fp8_scaling="block")
    with pytest.raises(ValueError, match="fp8_mode='cuda'"):
        TorchBackendConfig(fp8_mode="cuda")


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none on the CI machines)")


@pytest.mark.gpu
@needs_cuda
def test_cuda_graphs_with_cached_prefix_and_fused_head_follow_the_prompt(model):
    """bf16 + CUDA graphs: a task change of the same padded length refills the captured buffers, another length
    captures again; every chunk stays close to the CPU float32 plain backend."""
    plain = _backend(model)
    fast = _backend(model, device="cuda", cuda_graphs=True, prefix_cache=True, fused_head=True)
    for instruction, seed in (("pick up the red cube", 0), ("pick up the red cube", 1), ("pick up the red ball", 2),
                              ("open the drawer", 3)):
        inp = _inputs(model, instruction, seed)
        ref, got = plain.run(inp)[0], fast.run(inp)[0]
        assert chunk_metrics(torch.from_numpy(ref), torch.from_numpy(got))["cosine"] > 0.99


@pytest.mark.gpu
@needs_cuda
@pytest.mark.skipif(torch.cuda.is_available() and torch.cuda.get_device_capability() < (8, 9),
                    reason="FP8 tensor cores need sm_89 or newer")
def test_scaled_mm_on_cuda_equals_the_cpu_emulation(model):
    gpu = _backend(model, device="cuda", fp8="all", fp8_mode="scaled_mm", cuda_graphs=True)
    emu = _backend(model, device="cuda", fp8="all", fp8_mode="emulate")
    for seed in range(3):
        inp = _inputs(model, seed=seed)
        assert chunk_metrics(torch.from_numpy(emu.run(inp)[0]), torch.from_numpy(gpu.run(inp)[0]))["cosine"] > 0.999


def test_node_parameters_reach_the_torch_backend():
    """The policy node declares BackendParams' fields as parameters; the fast-path ones reach TorchBackend."""
    from .runtime_fixtures import tiny_bundle
    from vla_jepa_ros.runtime.bundle import load_bundle
    from vla_jepa_ros.runtime.factory import BackendParams, make_backend

    backend = make_backend(load_bundle(tiny_bundle()), BackendParams(
        backend="torch", torch_prefix_cache=True, torch_fused_head=True, torch_fp8="lm"))
    c = backend.config
    assert c.prefix_cache and c.fused_head and c.fp8 == "lm"
    assert any(v == "fp8" for v in backend.fp8_plan.values())

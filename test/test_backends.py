"""runtime/policy.py + backends on the real `tiny` bundle: ModelPolicy contract, torch == onnxruntime,
prompt caching, NaN/Inf refusal, reproducible noise. One inference thread everywhere."""
from pathlib import Path

import numpy as np
import pytest
import torch

from .runtime_fixtures import tiny_bundle
from vla_jepa_ros.core.types import Observation
from vla_jepa_ros.runtime.bundle import load_bundle
from vla_jepa_ros.runtime.onnxruntime_backend import OnnxRuntimeBackend, OnnxRuntimeConfig
from vla_jepa_ros.runtime.policy import ModelPolicy, NonFiniteActionError
from vla_jepa_ros.runtime.torch_backend import TorchBackend, TorchBackendConfig

torch.set_num_threads(1)
ORT = OnnxRuntimeConfig(intra_op_threads=1, inter_op_threads=1)
SHIPPED = Path(__file__).resolve().parents[1] / "models" / "tiny_sim"  # ONNX only, object input in the head graph


def _obs(instruction="pick up the red cube", state=np.linspace(-0.5, 0.5, 8, dtype=np.float32), seed=0, **kw):
    rng = np.random.default_rng(seed)
    return Observation(images={"front": rng.integers(0, 256, (480, 640, 3), dtype=np.uint8),
                               "wrist": rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)},
                       image_stamps_s={"front": 12.5, "wrist": 12.47}, state=state, instruction=instruction,
                       task_id="task-1", **kw)


@pytest.fixture(scope="module")
def bundle():
    return load_bundle(tiny_bundle())


@pytest.fixture(scope="module")
def ort_policy(bundle):
    return ModelPolicy(bundle, OnnxRuntimeBackend(bundle, ORT))


def test_chunk_contract(ort_policy, bundle):
    c1 = ort_policy.infer(_obs())
    c2 = ort_policy.infer(_obs())
    m = bundle.manifest
    assert c1.actions.shape == (7, 7) and c1.actions.dtype == np.float32
    assert c1.dim_names == m.action_dim_names and c1.action_space == "franka_delta_ee"
    assert c1.stamp_s == 12.47  # capture time of the oldest frame
    assert c1.task_id == "task-1" and c1.model_id == m.model_id and c2.sequence == c1.sequence + 1
    assert c1.step_period_s == m.step_period_s and c1.inference_ms > 0
    lo, hi = np.array(m.normalization["min"][:6]), np.array(m.normalization["max"][:6])
    assert np.all(c1.actions[:, :6] >= lo - 1e-6) and np.all(c1.actions[:, :6] <= hi + 1e-6)
    assert set(np.unique(c1.actions[:, 6])) <= {0.0, 1.0}
    t = ort_policy.last_timings_ms
    assert {"preprocess_ms", "tokenize_ms", "prefix_ms", "head_ms", "postprocess_ms", "total_ms"} <= set(t)


def test_torch_and_onnxruntime_agree(bundle, ort_policy):
    torch_policy = ModelPolicy(bundle, TorchBackend.from_bundle(bundle, TorchBackendConfig(num_threads=1)))
    noise = np.random.default_rng(3).standard_normal((1, 7, 7), dtype=np.float32)
    inputs = ort_policy.make_inputs(_obs(), noise=noise)
    inputs["input_ids"], inputs["attention_mask"] = ort_policy.prompts.get("pick up the red cube")
    a, _ = ort_policy.backend.run(inputs)
    b, stages = torch_policy.backend.run(inputs)
    assert set(stages) == {"prefix_ms", "head_ms"}
    np.testing.assert_allclose(a, b, atol=1e-4)
    np.testing.assert_allclose(ort_policy.infer(_obs(), noise=noise).actions,
                               torch_policy.infer(_obs(), noise=noise).actions, atol=1e-4)


def test_instruction_retokenised_only_when_it_changes(bundle):
    p = ModelPolicy(bundle, OnnxRuntimeBackend(bundle, ORT))
    for _ in range(3):
        p.infer(_obs("pick up the red cube"))
    assert p.prompts.tokenize_count == 1
    ids_a = p.prompts.get("pick up the red cube")[0].copy()
    p.infer(_obs("put the red cube in the bowl"))
    assert p.prompts.tokenize_count == 2
    assert not np.array_equal(ids_a, p.prompts.get("put the red cube in the bowl")[0])


def test_noise_is_seeded_and_matters(bundle):
    a = ModelPolicy(bundle, OnnxRuntimeBackend(bundle, ORT), seed=7)
    b = ModelPolicy(bundle, OnnxRuntimeBackend(bundle, ORT), seed=7)
    c = ModelPolicy(bundle, OnnxRuntimeBackend(bundle, ORT), seed=8)
    chunks = [p.infer(_obs()).actions for p in (a, b, c)]
    assert np.array_equal(chunks[0], chunks[1])
    # the same noise gives the same chunk, so any difference with seed 8 comes from the noise input
    inputs_a = a.make_inputs(_obs(), noise=None)
    inputs_c = c.make_inputs(_obs(), noise=None)
    assert not np.array_equal(inputs_a["noise"], inputs_c["noise"])


def test_noise_scale_zero_gives_deterministic_chunks_and_bad_scales_are_refused(bundle):
    """noise_scale 0: every chunk starts at the prior's mean, so two policies with different seeds agree exactly;
    0.5 halves the seeded noise; a scale outside [0, 1] names the value."""
    zero = [ModelPolicy(bundle, OnnxRuntimeBackend(bundle, ORT), seed=s, noise_scale=0.0) for s in (7, 8)]
    assert np.array_equal(zero[0].infer(_obs()).actions, zero[1].infer(_obs()).actions)
    assert not zero[0].make_inputs(_obs())["noise"].any()
    half = ModelPolicy(bundle, OnnxRuntimeBackend(bundle, ORT), seed=7, noise_scale=0.5)
    full = ModelPolicy(bundle, OnnxRuntimeBackend(bundle, ORT), seed=7)
    np.testing.assert_allclose(half.make_inputs(_obs())["noise"], 0.5 * full.make_inputs(_obs())["noise"], rtol=1e-6)
    with pytest.raises(ValueError, match="noise_scale=1.5"):
        ModelPolicy(bundle, OnnxRuntimeBackend(bundle, ORT), noise_scale=1.5)


class _NaNBackend:
    name = "nan-test"

    def __init__(self, value):
        self.value = value

    def run(self, inputs):
        out = np.zeros((1, 7, 7), np.float32)
        out[0, 3, 2] = self.value
        return out, {}


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_outputs_raise(bundle, value):
    p = ModelPolicy(bundle, _NaNBackend(value))
    with pytest.raises(NonFiniteActionError, match="1 NaN/Inf values of 49"):
        p.infer(_obs())


def test_bad_observations_named(ort_policy):
    obs = _obs()
    with pytest.raises(ValueError, match=r"lacks camera\(s\) \['wrist'\]"):
        ort_policy.infer(Observation(images={"front": obs.images["front"]}, image_stamps_s={"front": 1.0},
                                     state=obs.state, instruction="x"))
    with pytest.raises(ValueError, match="robot state unknown"):
        ort_policy.infer(_obs(state=None))
    with pytest.raises(ValueError, match="state has 7 values, bundle needs 8"):
        ort_policy.infer(_obs(state=np.zeros(7, np.float32)))
    with pytest.raises(ValueError, match="state contains NaN"):
        ort_policy.infer(_obs(state=np.full(8, np.nan, np.float32)))
    with pytest.raises(ValueError, match="too long"):
        ort_policy.infer(_obs(instruction="pick " * 400))


def test_backend_configs_validate():
    with pytest.raises(ValueError, match="graph_optimization='max'"):
        OnnxRuntimeConfig(graph_optimization="max")
    with pytest.raises(ValueError, match="cuda_graphs=True needs a CUDA device"):
        TorchBackendConfig(device="cpu", cuda_graphs=True)
    with pytest.raises(ValueError, match="providers"):
        OnnxRuntimeBackend(load_bundle(tiny_bundle()), OnnxRuntimeConfig(providers=("NoSuchExecutionProvider",)))


@pytest.fixture(scope="module")
def shipped():
    """(bundle, onnxruntime policy) of the shipped bundle, which has no torch checkpoint."""
    b = load_bundle(SHIPPED)
    assert b.torch_checkpoint is None
    return b, ModelPolicy(b, OnnxRuntimeBackend(b, ORT))


def test_torch_runs_an_onnx_only_bundle_from_its_graphs(shipped):
    """backend torch on models/tiny_sim: the weights come back from the ONNX graphs and give onnxruntime's chunks."""
    b, ort = shipped
    model = TorchBackend.load_model(b)  # recovered once, shared by two backends (as `vla-jepa bench` does)
    half = ModelPolicy(b, TorchBackend.from_bundle(b, TorchBackendConfig(num_threads=1, dtype="bfloat16"), model=model))
    torch_policy = ModelPolicy(b, TorchBackend.from_bundle(b, TorchBackendConfig(num_threads=1), model=model))
    noise = np.random.default_rng(4).standard_normal((1, 7, 7), dtype=np.float32)
    obs = _obs(instruction="put the red cube in the bowl")
    reference = ort.infer(obs, noise=noise).actions
    # the bf16 backend's cast did not reach the shared model: the float32 one gives onnxruntime's chunks
    np.testing.assert_allclose(torch_policy.infer(obs, noise=noise).actions, reference, atol=1e-5)
    assert _cosine(half.infer(obs, noise=noise).actions, reference) > 0.99


def test_torch_resizes_frames_on_its_device_like_opencv(bundle, ort_policy):
    """device_resize='on' (the default on CUDA; forced here on the CPU): the policy hands the backend the raw
    frames (two sizes here), the backend's matrix resize gives the host's images to 1/255 and the same chunk;
    frames that would need enlarging stay on the host path."""
    from vla_jepa_ros.core.images import to_model_input

    assert not TorchBackend.from_bundle(bundle, TorchBackendConfig(num_threads=1)).resizes_frames  # auto on a CPU
    backend = TorchBackend.from_bundle(bundle, TorchBackendConfig(num_threads=1, device_resize="on"))
    policy = ModelPolicy(bundle, backend)
    obs = _obs()
    inputs = policy.make_inputs(obs)
    assert "images" not in inputs and [f.shape for f in inputs["frames"]] == [(480, 640, 3), (240, 320, 3)]
    host = to_model_input([obs.images["front"], obs.images["wrist"]], bundle.manifest.image_size_px)
    with torch.inference_mode():
        device = backend._resize(inputs["frames"]).numpy()
    assert device.shape == host.shape and np.abs(device - host).max() <= 1.0 / 255 + 1e-6
    noise = np.random.default_rng(3).standard_normal((1, 7, 7), dtype=np.float32)
    np.testing.assert_allclose(policy.infer(obs, noise=noise).actions, ort_policy.infer(obs, noise=noise).actions,
                               atol=2e-3)
    assert policy.last_timings_ms["preprocess_ms"] > 0 and "resize_ms" not in policy.last_timings_ms
    small = _obs()
    small.images["wrist"] = small.images["wrist"][:100, :100]  # 100 px < 128 px: enlarged on the host
    assert "images" in policy.make_inputs(small)
    with pytest.raises(ValueError, match="device_resize='sometimes'"):
        TorchBackendConfig(device_resize="sometimes")


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a.ravel() @ b.ravel() / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none on the CI machines)")
@pytest.mark.parametrize("cuda_graphs", [False, True])
def test_torch_cuda_bf16_close_to_cpu(bundle, ort_policy, cuda_graphs):
    gpu = ModelPolicy(bundle, TorchBackend.from_bundle(bundle, TorchBackendConfig(device="cuda",
                                                                                  cuda_graphs=cuda_graphs)))
    noise = np.random.default_rng(3).standard_normal((1, 7, 7), dtype=np.float32)
    ref = ort_policy.infer(_obs(), noise=noise).actions
    got = gpu.infer(_obs(), noise=noise).actions
    assert _cosine(ref, got) > 0.99


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none on the CI machines)")
def test_the_shipped_bundle_on_cuda_graphs_close_to_cpu(shipped):
    b, ort = shipped
    gpu = ModelPolicy(b, TorchBackend.from_bundle(b, TorchBackendConfig(device="cuda", cuda_graphs=True)))
    noise = np.random.default_rng(5).standard_normal((1, 7, 7), dtype=np.float32)
    for seed in range(3):  # replays of the captured graphs with new inputs
        obs = _obs(instruction="put the red cube in the bowl", seed=seed)
        assert _cosine(ort.infer(obs, noise=noise).actions, gpu.infer(obs, noise=noise).actions) > 0.99


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none on the CI machines)")
def test_cuda_resize_matches_the_host_resize(bundle):
    from vla_jepa_ros.core.images import to_model_input

    backend = TorchBackend.from_bundle(bundle, TorchBackendConfig(device="cuda", dtype="float32"))
    assert backend.resizes_frames
    obs = _obs()
    frames = (obs.images["front"], obs.images["wrist"])
    with torch.inference_mode():
        device = backend._resize(frames).cpu().numpy()
    host = to_model_input(list(frames), bundle.manifest.image_size_px)
    assert np.abs(device - host).max() <= 1.0 / 255 + 1e-6


def test_policy_loop_gates_diagnoses_and_counts(bundle):
    """runtime/policy_loop.py without ROS: task gating, camera refusal, NaN drop, diagnostics values."""
    from vla_jepa_ros.runtime.policy_loop import PolicyLoop

    loop = PolicyLoop(ModelPolicy(bundle, OnnxRuntimeBackend(bundle, ORT)), ("front", "wrist"), 0.5, 0.1)
    obs = _obs()
    assert loop.step(100.0) is None and loop.not_ready == "no running task"
    loop.set_task("t-9", "pick up the red cube", running=True)
    assert loop.step(100.0) is None and "no frame yet" in loop.not_ready
    loop.put_frame("front", obs.images["front"], 99.9)
    loop.put_frame("wrist", obs.images["wrist"], 99.95)
    assert loop.step(100.0) is None and "robot state unknown" in loop.not_ready
    loop.set_state(np.zeros(8, np.float32))
    chunk = loop.step(100.0)
    assert chunk is not None and chunk.stamp_s == 99.9 and chunk.task_id == "t-9"
    assert "camera 'wrist'" in loop.bad_frame("wrist", "truncated data: 3 bytes")
    d = loop.diagnostics(100.0)
    assert d.level == "ok" and d.values["chunks"] == "1" and d.values["bad_frames.wrist"] == "1"
    assert float(d.values["prefix_ms.p50"]) > 0 and "age_at_publish_ms.p99" in d.values
    d = loop.diagnostics(101.0) if loop.step(101.0) is None else None  # frames now 1 s old
    assert d.level == "warn" and "old > max_image_age_s=0.5" in d.message
    nan_loop = PolicyLoop(ModelPolicy(bundle, _NaNBackend(np.nan)), ("front", "wrist"), 0.5, 0.1)
    nan_loop.set_task("t", "x", True)
    nan_loop.set_state(np.zeros(8, np.float32))
    nan_loop.put_frame("front", obs.images["front"], 1.0)
    nan_loop.put_frame("wrist", obs.images["wrist"], 1.0)
    assert nan_loop.step(1.0) is None and nan_loop.non_finite == 1
    assert nan_loop.diagnostics(1.0).values["non_finite_outputs"] == "1"
    loop.set_task("t-9", "", running=False)
    assert loop.step(100.0) is None and loop.diagnostics(100.0).message == "idle"


def test_bench_smoke(tmp_path):
    """`vla-jepa bench` machinery on the tiny bundle (in-process part; the across-processes part needs a graph)."""
    from vla_jepa_ros.runtime.bench import BenchConfig, format_table, run_bench

    plot = tmp_path / "hist.png"
    result = run_bench(BenchConfig(bundle=str(tiny_bundle()), backends=("torch", "onnxruntime"), iterations=4,
                                   warmup=1, e2e_seconds=0, plot=str(plot)), log=lambda *_: None)
    rows = {r["backend"]: r for r in result["rows"]}
    assert rows["torch"]["ratio_to_torch_eager"] == 1.0 and rows["onnxruntime"]["ratio_to_torch_eager"] > 0
    for r in rows.values():
        assert 0 < r["prefix_ms"] and 0 < r["head_ms"] and r["p99_ms"] >= r["median_ms"] > 0
    assert plot.stat().st_size > 1000 and "vs torch" in format_table(result["rows"], "t")
    with pytest.raises(ValueError, match="unknown backends"):
        BenchConfig(backends=("tvm",))

"""TensorRT: what CI can check (graph validity, operator support for the targeted parser version) and the GPU
tests, which are skipped here with the reason."""
import importlib.util

import onnx
import pytest
import yaml
from onnx import TensorProto, helper

from .runtime_fixtures import copy_bundle, tiny_bundle
from vla_jepa_ros.runtime.bundle import load_bundle
from vla_jepa_ros.runtime.tensorrt_backend import (SUPPORT_FILE, TensorRTConfig, check_tensorrt_support,
                                                   engine_cache_key)

HAVE_TRT = importlib.util.find_spec("tensorrt") is not None
try:
    import torch

    HAVE_CUDA = torch.cuda.is_available()
except ImportError:
    HAVE_CUDA = False
NO_TRT_REASON = ("TensorRT binaries cannot be installed on these machines (the PyPI tensorrt-*-libs wheels "
                 "download from an unreachable vendor index) and no CUDA GPU is present")


def test_support_list_is_data_with_its_source():
    text = SUPPORT_FILE.read_text()
    assert "onnx/onnx-tensorrt docs/operators.md" in text
    data = yaml.safe_load(text)
    assert data["target_version"] == "10.15" and data["max_opset"] >= 23
    assert {"Attention", "RMSNormalization", "LayerNormalization", "Gelu"} <= set(data["supported"])
    assert "Unique" not in data["supported"]


def test_exported_graphs_pass_checker_and_trt_op_list():
    b = load_bundle(tiny_bundle())
    for g in b.manifest.graphs:
        path = b.path(g.file)
        onnx.checker.check_model(str(path), full_check=True)  # includes strict shape inference
        model = onnx.load(str(path))
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True, data_prop=True)
        for out in inferred.graph.output:
            assert all(d.HasField("dim_value") for d in out.type.tensor_type.shape.dim), out.name
        report = check_tensorrt_support(model)
        assert report["problems"] == [], report["problems"]
        assert "Attention" in report["ops"]
        assert b.manifest.export["tensorrt"][g.file]["problems"] == []  # recorded at export time


def _graph(op, inputs, outputs, **attrs):
    node = helper.make_node(op, [i.name for i in inputs], [o.name for o in outputs], name=f"{op}_0", **attrs)
    g = helper.make_graph([node], "g", inputs, outputs)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 23)])


def test_checker_flags_unsupported_ops_and_3d_attention():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None])
    r = check_tensorrt_support(_graph("Unique", [x], [y]))
    assert r["unsupported"] == ["Unique"] and "not supported by the TensorRT 10.15" in r["problems"][0]
    q = helper.make_tensor_value_info("q", TensorProto.FLOAT, [1, 5, 16])
    k = helper.make_tensor_value_info("k", TensorProto.FLOAT, [1, 5, 16])
    v = helper.make_tensor_value_info("v", TensorProto.FLOAT, [1, 5, 16])
    o = helper.make_tensor_value_info("o", TensorProto.FLOAT, [1, 5, 16])
    r = check_tensorrt_support(_graph("Attention", [q, k, v], [o], q_num_heads=2, kv_num_heads=2))
    assert any("rank 3, TensorRT needs 4D" in p for p in r["problems"])
    old = helper.make_model(helper.make_graph([], "g", [], []), opset_imports=[helper.make_opsetid("", 25)])
    assert "opset 25 outside" in check_tensorrt_support(old)["problems"][0]


def test_engine_cache_key_changes_with_each_component():
    base = engine_cache_key("NVIDIA H100", "10.15.1", "ab" * 32, "bf16")
    assert len(base) == 16
    assert len({base, engine_cache_key("NVIDIA H200", "10.15.1", "ab" * 32, "bf16"),
                engine_cache_key("NVIDIA H100", "10.16.0", "ab" * 32, "bf16"),
                engine_cache_key("NVIDIA H100", "10.15.1", "cd" * 32, "bf16"),
                engine_cache_key("NVIDIA H100", "10.15.1", "ab" * 32, "fp16")}) == 5


def test_config_validation_and_missing_tensorrt_message():
    with pytest.raises(ValueError, match="precision='int4'"):
        TensorRTConfig(precision="int4")
    if not HAVE_TRT:
        from vla_jepa_ros.runtime.tensorrt_backend import TensorRTBackend

        with pytest.raises(RuntimeError, match="TensorRT is not installed"):
            TensorRTBackend(load_bundle(tiny_bundle()))


@pytest.mark.gpu
@pytest.mark.tensorrt
@pytest.mark.skipif(not (HAVE_TRT and HAVE_CUDA), reason=NO_TRT_REASON)
@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_engine_matches_onnxruntime_and_is_cached(tmp_path, precision):
    from vla_jepa_ros.runtime.tensorrt_backend import TensorRTBackend, verify_engine

    bundle = load_bundle(copy_bundle(tmp_path / "b"))
    result = verify_engine(bundle, TensorRTConfig(precision=precision), iterations=10)
    assert result["ok"], result
    engines = sorted(bundle.engine_cache_dir.glob("*.engine"))
    assert len(engines) == 2 and list(bundle.engine_cache_dir.glob("timing-*.cache"))
    mtimes = [p.stat().st_mtime_ns for p in engines]
    TensorRTBackend(bundle, TensorRTConfig(precision=precision))  # second load: from the cache
    assert [p.stat().st_mtime_ns for p in engines] == mtimes

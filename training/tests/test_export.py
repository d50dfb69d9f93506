"""ONNX export (dynamo, opset 23): Attention ops present, onnxruntime matches torch with fixed noise."""

import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from vla_jepa.export import export_onnx  # noqa: E402


def test_onnx_export_one_graph_parity(tmp_path, tiny_model):
    (rep,) = export_onnx(tiny_model, tmp_path / "policy.onnx", repeats=1)
    cfg = tiny_model.cfg
    expected = cfg.vision.depth + cfg.text.num_layers + cfg.action_head.num_layers * cfg.num_euler_steps
    assert rep.attention_nodes == expected
    assert rep.cosine >= 0.999 and rep.max_abs_err < 1e-4


@pytest.mark.slow
def test_onnx_export_split_parity(tmp_path, tiny_model):
    prefix, head = export_onnx(tiny_model, tmp_path / "policy.onnx", split=True, repeats=1)
    assert prefix.attention_nodes == tiny_model.cfg.vision.depth + tiny_model.cfg.text.num_layers
    assert head.cosine >= 0.999 and head.max_abs_err < 1e-4

"""ONNX export (dynamo, opset 23): Attention ops present, onnxruntime matches torch with fixed noise."""

import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from vla_jepa.export import export_onnx  # noqa: E402


def test_onnx_export_one_graph_parity(tmp_path, tiny_model):
    """From a checkpoint folder, as the export CLI does; then run it like a torch-free runtime would."""
    import numpy as np
    import onnxruntime as ort

    from vla_jepa.checkpoint import save_checkpoint
    from vla_jepa.normalize import unnormalize_actions
    from vla_jepa.prompt import encode_instruction, load_prompt_tokenizer

    stats = {"franka": {"action": {"min": [-0.05] * 6 + [0], "max": [0.05] * 6 + [1], "mask": [True] * 6 + [False]}}}
    save_checkpoint(tmp_path / "ck", tiny_model, stats)
    (rep,) = export_onnx(tmp_path / "ck", tmp_path / "policy.onnx", repeats=1)
    cfg = tiny_model.cfg
    expected = cfg.vision.depth + cfg.text.num_layers + cfg.action_head.num_layers * cfg.num_euler_steps
    assert rep.attention_nodes == expected
    assert rep.cosine >= 0.999 and rep.max_abs_err < 1e-4
    tok = load_prompt_tokenizer(str(tmp_path / "ck"))
    ids, mask = encode_instruction(tok, "put the cube in the bowl", cfg.max_prompt_len)
    sess = ort.InferenceSession(str(tmp_path / "policy.onnx"), providers=["CPUExecutionProvider"])
    feed = {"images": np.random.rand(1, cfg.num_views, 3, cfg.image_size, cfg.image_size).astype(np.float32),
            "input_ids": ids, "attention_mask": mask, "state": np.zeros((1, cfg.state_dim), np.float32),
            "noise": np.random.randn(1, cfg.horizon, cfg.action_dim).astype(np.float32)}
    (out,) = sess.run(None, feed)
    robot = unnormalize_actions(out, stats)
    assert robot.shape == (1, 7, 7) and np.all(np.abs(robot[..., :6]) <= 0.05 + 1e-6)


@pytest.mark.slow
def test_onnx_export_split_parity(tmp_path, tiny_model):
    prefix, head = export_onnx(tiny_model, tmp_path / "policy.onnx", split=True, repeats=1)
    assert prefix.attention_nodes == tiny_model.cfg.vision.depth + tiny_model.cfg.text.num_layers
    assert head.cosine >= 0.999 and head.max_abs_err < 1e-4

"""vla_jepa.recover: an ONNX-only bundle gives back the weights it was exported from, and fine-tunes."""
from pathlib import Path

import numpy as np
import pytest
import torch

from .runtime_fixtures import tiny_bundle, tiny_checkpoint

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[1]


def _assert_same_weights(original: torch.nn.Module, recovered: torch.nn.Module, skip: tuple[str, ...]) -> int:
    theirs = recovered.state_dict()
    compared = 0
    for k, v in original.state_dict().items():
        if k.startswith(skip):
            continue
        assert torch.equal(v, theirs[k]), k
        compared += 1
    return compared


def test_a_bundle_gives_back_the_weights_of_its_checkpoint():
    from vla_jepa.checkpoint import load_checkpoint
    from vla_jepa.recover import model_from_bundle

    original = load_checkpoint(tiny_checkpoint(), with_world_model=False)[0]
    model, stats, report = model_from_bundle(tiny_bundle())
    # the LM's final norm is in no graph (features are taken before it); everything else is exact
    n = _assert_same_weights(original, model, ("vlm.language_model.norm.",))
    assert n == len(report.recovered) > 100
    assert report.max_abs_err < 1e-5
    assert stats == __import__("json").loads((tiny_bundle() / "dataset_statistics.json").read_text())
    assert all(k.startswith(("vj_", "vlm.language_model.norm.")) for k in report.training_only)


def test_a_head_that_reads_the_object_estimate_comes_back_with_its_object_head(tmp_path):
    from vla_jepa.checkpoint import save_checkpoint
    from vla_jepa.config import get_config, replace
    from vla_jepa.model import make_model
    from vla_jepa.recover import model_from_bundle
    from vla_jepa_ros.runtime.export import ExportConfig, export_bundle

    torch.manual_seed(3)
    cfg = replace(get_config("tiny"), num_aux_objects=2, action_head_objects=True)
    model = make_model(cfg, with_world_model=False).eval()
    head = model.action_model
    with torch.no_grad():  # a trained encoder (not the zero start) and real statistics, so both must come back
        head.object_encoder.layer2.weight.normal_(0, 0.1)
        head.set_object_normalization([[0.5, 0.0, 0.02], [0.45, 0.1, 0.03]], [[0.07, 0.12, 0.01], [0.05, 0.1, 0.01]])
    stats = __import__("json").loads((tiny_bundle() / "dataset_statistics.json").read_text())
    ckpt = save_checkpoint(tmp_path / "ckpt", model, stats)
    export_bundle(ckpt, tmp_path / "bundle", ExportConfig(parity_cases=1), log=lambda *_: None)

    recovered, _, report = model_from_bundle(tmp_path / "bundle")
    assert recovered.cfg.action_head_objects and recovered.cfg.num_aux_objects == 2
    _assert_same_weights(model, recovered, ("vlm.language_model.norm.",))
    assert any(k.startswith("object_head.") for k in report.recovered)  # in the inference graph now


def test_the_shipped_bundle_recovers_to_a_model_that_reproduces_it():
    from vla_jepa.recover import model_from_bundle

    _, _, report = model_from_bundle(REPO / "models" / "tiny_sim")  # raises when it does not reproduce the graphs
    assert report.max_abs_err < 1e-4


def test_a_bundle_that_is_not_split_is_refused_by_name(tmp_path):
    from vla_jepa.recover import model_from_bundle

    with pytest.raises(ValueError, match="split"):
        model_from_bundle(tiny_bundle("single"))


def test_fine_tuning_starts_from_a_bundle_and_adds_the_object_input_at_zero(tmp_path):
    """`vla-jepa-train --init-from BUNDLE --action-head-objects`: the new input starts silent (same chunks as the
    bundle), the object normalisation comes from the data, and training moves the new weights."""
    from vla_jepa.config import TrainConfig
    from vla_jepa.recover import model_from_bundle
    from vla_jepa.train import TrainArgs, build_model, train

    tc = TrainConfig(total_steps=3, batch_size=4, warmup_steps=1, object_loss_weight=1.0, use_wm_loss=False,
                     lr_vlm=1e-3, lr_action_head=1e-3, lr_predictor=1e-3, min_lr=1e-4)
    args = TrainArgs(out_dir=str(tmp_path / "ft"), synthetic_episodes=2, synthetic_length=8, train=tc,
                     progress=False, init_from=str(tiny_bundle()), action_head_objects=True)
    from vla_jepa.config import get_config, replace

    before = build_model(args, replace(get_config("tiny"), num_aux_objects=1)).eval()
    bundle_model = model_from_bundle(tiny_bundle())[0].eval()
    g = torch.Generator().manual_seed(0)
    images = torch.rand(1, 2, 3, 128, 128, generator=g)
    from vla_jepa.export import example_inputs

    _, ids, mask, state, noise = example_inputs(bundle_model)
    with torch.no_grad():
        np.testing.assert_array_equal(before.predict_actions(images, ids, mask, state, noise).numpy(),
                                      bundle_model.predict_actions(images, ids, mask, state, noise).numpy())
    result = train(args)
    head = result["model"].action_model
    assert result["model"].cfg.action_head_objects
    assert float(head.object_std[:2].min()) > 1e-3 and not bool((head.object_mean == 0).all())  # the data's
    assert float(head.object_encoder.layer2.weight.abs().sum()) > 0  # it learnt to use the input


def test_the_command_writes_a_checkpoint_that_loads(tmp_path):
    import subprocess
    import sys

    from vla_jepa.checkpoint import load_checkpoint

    out = tmp_path / "ckpt"
    proc = subprocess.run([sys.executable, "-m", "vla_jepa.recover", str(tiny_bundle()), str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "tensors recovered" in proc.stdout
    original = load_checkpoint(tiny_checkpoint(), with_world_model=False)[0]
    recovered = load_checkpoint(out, with_world_model=False)[0]
    _assert_same_weights(original, recovered, ("vlm.language_model.norm.",))

"""runtime/export.py: tiny export parity (onnxruntime vs torch), the parity gate, the CLI, one-graph layout."""
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from .runtime_fixtures import tiny_bundle, tiny_checkpoint
from vla_jepa_ros.runtime import export as export_mod
from vla_jepa_ros.runtime.bundle import load_bundle
from vla_jepa_ros.runtime.export import ExportConfig, ParityError, compare, example_inputs, export_bundle
from vla_jepa_ros.runtime.onnxruntime_backend import OnnxRuntimeBackend, OnnxRuntimeConfig

torch.set_num_threads(1)
ORT = OnnxRuntimeConfig(intra_op_threads=1)


def test_tiny_parity_onnxruntime_vs_torch_on_fresh_inputs():
    """Independent of the export's own check: new seeds, new instruction, the full torch inference module."""
    from vla_jepa.checkpoint import load_checkpoint

    bundle = load_bundle(tiny_bundle())
    model, cfg, _, tokenizer = load_checkpoint(tiny_checkpoint(), with_world_model=False)
    reference = model.eval().inference_module().eval()
    backend = OnnxRuntimeBackend(bundle, ORT)
    for seed, text in [(11, "stack the blue block on the red one"), (12, "open the drawer")]:
        inputs = example_inputs(cfg, tokenizer, seed, text)
        with torch.no_grad():
            ref = reference(*(torch.from_numpy(inputs[k]) for k in
                              ("images", "input_ids", "attention_mask", "state", "noise"))).numpy()
        got, _ = backend.run(inputs)
        r = compare(ref, got)
        assert r["cosine"] >= 0.999 and r["max_abs_error"] <= 1e-3, r
        assert np.abs(ref).max() > 1e-3  # not a trivially zero output


def test_graphs_use_the_onnx_attention_op_and_static_shapes():
    b = load_bundle(tiny_bundle())
    for g in b.manifest.graphs:
        model = onnx.load(str(b.path(g.file)))
        assert any(o.domain in ("", "ai.onnx") and o.version == 23 for o in model.opset_import)
        assert sum(n.op_type == "Attention" for n in model.graph.node) > 0, g.file
        for inp in model.graph.input:
            assert all(d.HasField("dim_value") for d in inp.type.tensor_type.shape.dim), inp.name


def _reuse_graphs(monkeypatch):
    """Skip the slow torch.onnx.export: copy the graphs of the cached bundle (the parity check still runs)."""
    def fake_export(model, out_dir, layout, inputs, log=print):
        src = load_bundle(tiny_bundle())
        for g in src.manifest.graphs:
            shutil.copy(src.path(g.file), out_dir / g.file)
        return list(src.manifest.graphs)

    monkeypatch.setattr(export_mod, "export_graphs", fake_export)


def test_parity_gate_blocks_a_graph_that_disagrees(tmp_path, monkeypatch):
    """Graphs from other weights than the checkpoint's must be caught before anything is written."""
    from vla_jepa.checkpoint import load_checkpoint, save_checkpoint

    model, _, stats, _ = load_checkpoint(tiny_checkpoint(), with_world_model=False)
    with torch.no_grad():
        for p in model.action_model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    other = save_checkpoint(tmp_path / "other_ckpt", model, stats)
    _reuse_graphs(monkeypatch)
    with pytest.raises(ParityError, match=r"min cosine .* \(limit 0\.999\).* bundle not written"):
        export_bundle(other, tmp_path / "out", log=lambda *_: None)
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob(".export_*"))  # temporary folder cleaned


def test_parity_gate_max_abs_bound(tmp_path, monkeypatch):
    _reuse_graphs(monkeypatch)
    with pytest.raises(ParityError, match=r"max abs error .* \(limit 1e-12\)"):
        export_bundle(tiny_checkpoint(), tmp_path / "out", ExportConfig(max_abs_error=1e-12), log=lambda *_: None)


def test_refuses_wrong_camera_count_and_existing_output(tmp_path):
    with pytest.raises(ValueError, match=r"cameras=\['front'\] \(1\) but the model takes num_views=2"):
        export_bundle(tiny_checkpoint(), tmp_path / "o", ExportConfig(cameras=("front",)))
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("keep me")
    with pytest.raises(ValueError, match="exists and is not empty"):
        export_bundle(tiny_checkpoint(), tmp_path / "full")


@pytest.mark.slow
def test_cli_single_graph_layout_matches_split(tmp_path):
    """`vla-jepa export --layout single` end to end; one graph and prefix+head give the same chunk."""
    from vla_jepa_ros.cli import main

    out = tmp_path / "single"
    assert main(["export", str(tiny_checkpoint()), str(out), "--layout", "single", "--parity-cases", "1",
                 "--no-torch-weights"]) == 0
    single, split = load_bundle(out), load_bundle(tiny_bundle())
    assert [g.name for g in single.manifest.graphs] == ["policy"] and single.torch_checkpoint is None
    recorded = single.manifest.export["checkpoint"]  # names the checkpoint without this machine's paths
    assert not Path(recorded).is_absolute() and recorded.endswith(tiny_checkpoint().name), recorded
    from vla_jepa.checkpoint import load_checkpoint

    _, cfg, _, tok = load_checkpoint(tiny_checkpoint(), with_world_model=False)
    inputs = example_inputs(cfg, tok, 5, "pick up the red cube")
    a, _ = OnnxRuntimeBackend(single, ORT).run(inputs)
    b, _ = OnnxRuntimeBackend(split, ORT).run(inputs)
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_parity_cases_use_the_instructions_the_prompt_holds():
    """224 px puts 2 x 49 image tokens in the prompt: the long parity instruction no longer fits a 320-token prompt
    and is left out (export used to fail on it); a prompt too short for any instruction is refused by its length."""
    from dataclasses import replace

    from vla_jepa.checkpoint import load_checkpoint
    from vla_jepa_ros.runtime.export import PARITY_INSTRUCTIONS, parity_instructions

    _, cfg, _, tokenizer = load_checkpoint(tiny_checkpoint(), with_world_model=False)
    assert parity_instructions(cfg, tokenizer) == PARITY_INSTRUCTIONS
    fine = replace(cfg, image_size=224, max_prompt_len=320)
    assert parity_instructions(fine, tokenizer) == PARITY_INSTRUCTIONS[:2]
    with pytest.raises(ValueError, match="max_prompt_len=280 cannot hold even 'pick up the red cube'"):
        parity_instructions(replace(fine, max_prompt_len=280), tokenizer)

"""Shared, cached artefacts for the runtime tests: a real `tiny` VLA-JEPA checkpoint (random weights, seeded) and
its exported bundle. Built once per pytest process (the export takes ~15 s on this CPU)."""
from __future__ import annotations

import atexit
import shutil
import tempfile
from functools import lru_cache
from pathlib import Path

import numpy as np

_ROOT = Path(tempfile.mkdtemp(prefix="vla_jepa_runtime_test_"))
atexit.register(shutil.rmtree, _ROOT, ignore_errors=True)  # 37 MB a run: never left behind in /tmp


@lru_cache(maxsize=None)
def tiny_checkpoint() -> Path:
    import torch
    from vla_jepa.checkpoint import save_checkpoint
    from vla_jepa.config import get_config
    from vla_jepa.model import make_model
    from vla_jepa.normalize import compute_stats

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = make_model(get_config("tiny"), with_world_model=False).eval()
    rng = np.random.default_rng(0)
    actions = np.concatenate([rng.uniform(-0.02, 0.02, (200, 3)), rng.uniform(-0.1, 0.1, (200, 3)),
                              rng.integers(0, 2, (200, 1))], axis=1)
    return save_checkpoint(_ROOT / "tiny_ckpt", model, compute_stats(actions, tag="franka"))


def tiny_bundle(layout: str = "split") -> Path:
    return _tiny_bundle(layout)


@lru_cache(maxsize=None)
def _tiny_bundle(layout: str) -> Path:
    from vla_jepa_ros.runtime.export import ExportConfig, export_bundle

    out = _ROOT / f"bundle_{layout}"
    export_bundle(tiny_checkpoint(), out, ExportConfig(layout=layout, parity_cases=2), log=lambda *_: None)
    return out


def copy_bundle(dst: Path, layout: str = "split") -> Path:
    """A private copy a test may modify."""
    shutil.copytree(tiny_bundle(layout), dst)
    return dst

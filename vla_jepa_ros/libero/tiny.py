"""A `tiny` VLA-JEPA for exercising the harness: an untrained (seeded) model, its checkpoint and its bundle, in
the same layout as the released-checkpoint path (checkpoint -> `vla-jepa export` -> bundle). Needs torch and
vla_jepa; the bundle export additionally needs onnx/onnxscript (main .venv)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .protocol import CAMERAS


def libero_stats(seed: int = 0) -> dict:
    """Plausible LIBERO-unit action stats (motion dims within [-1, 1], gripper last) for an untrained model."""
    from vla_jepa.normalize import compute_stats

    rng = np.random.default_rng(seed)
    actions = np.concatenate([rng.uniform(-0.9, 0.9, (256, 6)), rng.integers(0, 2, (256, 1))], axis=1)
    states = rng.normal(0, 0.3, (256, 8))
    return compute_stats(actions, states, num_trajectories=4)


# The longest LIBERO instruction (libero_spatial task 4) takes 88 tokens of the tiny character tokenizer and the
# prompt's fixed part 213: the `tiny` preset's 288 leaves 75, so the LIBERO tiny model uses 320.
LIBERO_MAX_PROMPT_LEN = 320


def tiny_libero_config():
    """The `tiny` preset with a prompt long enough for every LIBERO instruction."""
    from vla_jepa.config import get_config, replace

    return replace(get_config("tiny"), max_prompt_len=LIBERO_MAX_PROMPT_LEN)


def make_tiny_checkpoint(out_dir: str | Path, seed: int = 0, stats: dict | None = None,
                         with_world_model: bool = False) -> Path:
    """An untrained tiny model (LIBERO prompt length) saved as a checkpoint; with_world_model for training."""
    import torch
    from vla_jepa.checkpoint import save_checkpoint
    from vla_jepa.model import make_model

    torch.manual_seed(seed)
    model = make_model(tiny_libero_config(), with_world_model=with_world_model).eval()
    return save_checkpoint(out_dir, model, stats or libero_stats(seed))


def make_tiny_bundle(out_dir: str | Path, work_dir: str | Path, seed: int = 0, layout: str = "single") -> Path:
    """Checkpoint + export (onnx, parity-checked) -> bundle folder with LIBERO camera names, 20 Hz steps."""
    from ..runtime.export import ExportConfig, export_bundle

    ck = make_tiny_checkpoint(Path(work_dir) / "tiny_checkpoint", seed)
    export_bundle(ck, out_dir, ExportConfig(layout=layout, cameras=CAMERAS, step_period_s=0.05,
                                            model_id=f"tiny-libero-seed{seed}", overwrite=True),
                  log=lambda *_: None)
    return Path(out_dir)


class TinyModelPolicy:
    """The fallback contract check: a `tiny` model run directly in torch behind `infer(observation)` (no bundle)."""

    def __init__(self, checkpoint: str | None = None, seed: int = 0) -> None:
        import torch
        from vla_jepa.checkpoint import load_checkpoint

        from ..runtime.torch_backend import TorchBackend

        if checkpoint is None:  # random weights: made in a temporary folder, loaded, folder removed
            import tempfile

            with tempfile.TemporaryDirectory(prefix="tiny_ck_") as tmp:
                model, cfg, stats, tokenizer = load_checkpoint(make_tiny_checkpoint(Path(tmp), seed),
                                                               with_world_model=False)
            checkpoint = f"random(seed={seed})"
        else:
            model, cfg, stats, tokenizer = load_checkpoint(checkpoint, with_world_model=False)
        torch.set_num_threads(1)
        self.backend = TorchBackend(model)
        self.cfg, self.stats, self.tokenizer = cfg, stats, tokenizer
        self.model_id = f"tiny-torch:{checkpoint}"
        self.cameras = CAMERAS[:cfg.num_views]
        self.state_dim = cfg.state_dim
        self._rng = np.random.default_rng(seed)

    def reset(self, seed: int) -> None:
        self._rng = np.random.default_rng(seed)

    def infer(self, observation):
        from vla_jepa.normalize import unnormalize_actions
        from vla_jepa.prompt import encode_instruction

        from ..core.images import to_model_input
        from ..core.types import ActionChunk

        cfg = self.cfg
        ids, mask = encode_instruction(self.tokenizer, observation.instruction, cfg.max_prompt_len, cfg=cfg)
        inputs = {"images": to_model_input([observation.images[c] for c in self.cameras], cfg.image_size),
                  "input_ids": ids, "attention_mask": mask,
                  "state": np.asarray(observation.state, np.float32).reshape(1, -1),
                  "noise": self._rng.standard_normal((1, cfg.horizon, cfg.action_dim), dtype=np.float32)}
        out, _ = self.backend.run(inputs)
        stats = self.stats if "action" in self.stats else next(iter(self.stats.values()))
        return ActionChunk(actions=unnormalize_actions(out[0], stats), step_period_s=0.05, model_id=self.model_id)

"""VLA-JEPA: Qwen3-VL backbone + DiT flow-matching head (inference path) + latent world model (training only).

Batch tensors (see data.py):
    images          (B, V, 3, H, W)      uint8 or float in [0, 1], RGB, frame t of every camera, H = W = image_size
    video           (B, 2, T, 3, S, S)   uint8 or float in [0, 1], frames t..t+T-1, S = vjepa.crop_size
    input_ids       (B, L) int64, attention_mask (B, L) int64 (prompt.encode_* with the matching layout)
    actions         (B, horizon, action_dim) normalised (robot batches only)
    objects         (B, N, 3) normalised object positions (optional, cfg.num_aux_objects = N > 0, training only)
    state           (B, state_dim) raw (only when cfg.state_dim > 0)
    sample_seed     (B,) int64: keys the flow-matching noise of each sample
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from tokenizers import Tokenizer

from .action_head import FlowMatchingActionHead
from .config import VLAJEPAConfig
from .prompt import PromptLayout, check_tokenizer_matches, layout_for_config, tokenizer_for_config
from .vlm import Qwen3VLBackbone
from .world_model import ACPredictor, VJEPA2Encoder, causal_step_features


def to_unit_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] or float [0, 1] -> float32 [0, 1]."""
    return x.float() / 255.0 if x.dtype == torch.uint8 else x.float()


class VLAJEPA(nn.Module):
    def __init__(self, cfg: VLAJEPAConfig, tokenizer: Tokenizer | None = None, with_world_model: bool = True) -> None:
        super().__init__()
        self.cfg = cfg
        tokenizer = getattr(tokenizer, "tokenizer", tokenizer)  # unwrap a PromptTokenizer
        self.tokenizer = tokenizer if tokenizer is not None else tokenizer_for_config(cfg)
        check_tokenizer_matches(self.tokenizer, cfg)
        if self.tokenizer.get_vocab_size(with_added_tokens=True) > cfg.text.vocab_size:
            raise ValueError(f"tokenizer has {self.tokenizer.get_vocab_size()} tokens > text.vocab_size="
                             f"{cfg.text.vocab_size}")
        self.robot_layout: PromptLayout = layout_for_config(self.tokenizer, cfg)
        self.video_layout: PromptLayout = layout_for_config(self.tokenizer, cfg, video=True)
        self.vlm = Qwen3VLBackbone(cfg.vision, cfg.text, cfg.image_size)
        self.vlm.language_model.norm.requires_grad_(False)  # features are taken before the final norm: unused
        self.action_model = FlowMatchingActionHead(cfg.action_head, cfg.text.hidden_size, cfg.action_dim, cfg.horizon,
                                                   cfg.state_dim, cfg.num_aux_objects if cfg.action_head_objects else 0)
        # where every tracked object is, from the tokens the action head reads: training only (like the world model)
        # unless cfg.action_head_objects feeds it to the action head
        self.object_head = nn.Sequential(
            nn.LayerNorm(cfg.text.hidden_size), nn.Linear(cfg.text.hidden_size, cfg.text.hidden_size), nn.GELU(),
            nn.Linear(cfg.text.hidden_size, 3 * cfg.num_aux_objects)) if cfg.num_aux_objects else None
        self.with_world_model = with_world_model
        # True for released weights trained on raw state (their state buffers are identity): training keeps state
        # raw by default (train.py); recorded in the checkpoint
        self.raw_state_weights = False
        if with_world_model:
            self.vj_encoder = VJEPA2Encoder(cfg.vjepa)
            self.vj_encoder.requires_grad_(False)  # frozen target encoder: no grad, no EMA
            self.vj_predictor = ACPredictor(cfg.predictor, in_dim=2 * cfg.vjepa.hidden_size,
                                            action_dim=cfg.text.hidden_size, steps=cfg.num_transitions,
                                            grid=cfg.wm_grid, tokens_per_step=cfg.latent_tokens_per_step)
        self.register_buffer("image_mean", torch.tensor(cfg.image_mean).view(1, 1, 3, 1, 1), persistent=False)
        self.register_buffer("image_std", torch.tensor(cfg.image_std).view(1, 1, 3, 1, 1), persistent=False)
        self.register_buffer("wm_mean", torch.tensor(cfg.wm_image_mean).view(1, 1, 3, 1, 1), persistent=False)
        self.register_buffer("wm_std", torch.tensor(cfg.wm_image_std).view(1, 1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> "VLAJEPA":
        super().train(mode)
        if self.with_world_model:
            self.vj_encoder.eval()  # frozen: always in eval mode
        return self

    # ------------------------------------------------------------------------------------------ student pathway

    def vlm_hidden(self, images: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                   layout: PromptLayout) -> torch.Tensor:
        """images (B, V, 3, H, W) in [0, 1] -> hidden (B, L, D), last layer before the final norm."""
        pixels = (to_unit_float(images) - self.image_mean) / self.image_std
        return self.vlm(pixels, input_ids, attention_mask, layout)

    def token_features(self, images: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                       video_prompt: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """-> latent-action states (B, 24, D) and embodied states (B, 32, D) (None for the video prompt)."""
        layout = self.video_layout if video_prompt else self.robot_layout
        h = self.vlm_hidden(images, input_ids, attention_mask, layout)
        latent = h[:, list(layout.latent_positions)]
        embodied = h[:, list(layout.embodied_positions)] if layout.embodied_positions else None
        return latent, embodied

    def object_estimate(self, embodied: torch.Tensor) -> torch.Tensor:
        """embodied (B, 32, D) -> (B, 3 * num_aux_objects) object positions, normalised units."""
        return self.object_head(embodied.mean(dim=1))

    def check_prompt(self, input_ids: torch.Tensor, video_prompt: bool = False) -> None:
        """Training-time guard: the special tokens must sit where the static layout says."""
        layout = self.video_layout if video_prompt else self.robot_layout
        ids = input_ids[:, list(layout.latent_positions) + list(layout.embodied_positions)]
        tok = self.tokenizer
        expected = [tok.token_to_id(f"<|action_{i // self.cfg.latent_tokens_per_step}|>")
                    for i in range(len(layout.latent_positions))]
        expected += [tok.token_to_id("<|embodied_action|>")] * len(layout.embodied_positions)
        if not bool((ids == torch.tensor(expected, device=ids.device)).all()):
            raise ValueError("input_ids do not match the prompt layout (wrong max_prompt_len, tokenizer or "
                             "video/robot prompt kind)")

    # ------------------------------------------------------------------------------------------ world model

    def wm_step_features(self, video: torch.Tensor, with_full: bool = False):
        """video (B, 2, T, 3, S, S) in [0, 1] -> per-step features (B, steps, g*g, 2*Dv), leakage-free
        (and, with `with_full`, the bidirectional whole-clip features used as targets in "full" target mode).

        The data pipeline already picked the two world-model cameras (cfg.wm_views); they are concatenated on
        channels per sample. A single-camera clip is duplicated.
        """
        views = (0, 0) if video.shape[1] == 1 else (0, 1)
        causal, full = [], []
        with torch.no_grad():
            for vi in views:
                clip = self._wm_preprocess(to_unit_float(video[:, vi]))
                c, f = causal_step_features(self.vj_encoder, clip, self.cfg.wm_context_mode, return_full=True)
                causal.append(c)
                full.append(f)
        if with_full:
            return torch.cat(causal, dim=-1), torch.cat(full, dim=-1)
        return torch.cat(causal, dim=-1)

    def _wm_preprocess(self, clip: torch.Tensor) -> torch.Tensor:
        """(B, T, 3, S, S) in [0, 1] -> V-JEPA2 input: resize to S*256/224, centre-crop S, ImageNet mean/std."""
        b, t, c, s, _ = clip.shape
        crop = self.cfg.vjepa.crop_size
        big = int(crop * 256 / 224)
        x = F.interpolate(clip.flatten(0, 1), size=(big, big), mode="bilinear", align_corners=False, antialias=True)
        off = (big - crop) // 2
        x = x[:, :, off:off + crop, off:off + crop].reshape(b, t, c, crop, crop)
        return (x - self.wm_mean) / self.wm_std

    def wm_loss(self, latent: torch.Tensor, video: torch.Tensor) -> torch.Tensor:
        """L1 between predicted and target features: context = causal steps 0..T-2, target = steps 1..T-1.

        Targets come from one pass over the whole clip ("full", the public recipe; a label may see the future) or
        from the causal features ("causal"). The context never sees frames after its step.
        """
        feats, full = self.wm_step_features(video, with_full=True)  # (B, steps, g2, 2Dv) each
        context = feats[:, :-1].flatten(1, 2)
        target = (full if self.cfg.wm_target_mode == "full" else feats)[:, 1:].flatten(1, 2)
        pred = self.vj_predictor(context, latent)
        return F.l1_loss(pred.float(), target.float())

    # ------------------------------------------------------------------------------------------ losses

    def robot_losses(self, batch: dict, use_wm: bool = True, use_actions: bool = True) -> dict[str, torch.Tensor]:
        """-> {"action_loss", "wm_loss", "object_loss"} (unweighted; the trainer applies the weights).

        object_loss (auxiliary, optional): MSE between the object head's prediction from the mean embodied token
        and batch["objects"] (B, num_aux_objects, 3), object positions normalised with the dataset statistics.
        Simulation knows where every object is; this teaches the backbone to localise them from few layouts.
        """
        latent, embodied = self.token_features(batch["images"], batch["input_ids"], batch["attention_mask"])
        state = batch.get("state") if self.cfg.state_dim > 0 else None
        out = {}
        objects = self.object_estimate(embodied) if self.object_head is not None else None  # (B, 3N) normalised
        if use_actions:
            noise = t = None
            if "sample_seed" in batch:
                noise, t = self.action_model.draw_noise_and_time(batch["sample_seed"].tolist(), embodied.device)
            out["action_loss"] = self.action_model.loss(embodied, batch["actions"], state, noise, t,
                                                        objects if self.cfg.action_head_objects else None)
        if objects is not None and "objects" in batch:
            out["object_loss"] = F.mse_loss(objects.float(), batch["objects"].flatten(1).float())
        if use_wm and self.with_world_model:
            out["wm_loss"] = self.wm_loss(latent, batch["video"])
        return out

    def video_losses(self, batch: dict) -> dict[str, torch.Tensor]:
        latent, _ = self.token_features(batch["images"], batch["input_ids"], batch["attention_mask"],
                                        video_prompt=True)
        return {"wm_loss": self.wm_loss(latent, batch["video"])}

    def forward(self, batch: dict, kind: str = "robot", use_wm: bool = True,
                use_actions: bool = True) -> dict[str, torch.Tensor]:
        """Training entry point (what DDP/FSDP wrappers call): robot or human-video losses."""
        return self.robot_losses(batch, use_wm, use_actions) if kind == "robot" else self.video_losses(batch)

    # ------------------------------------------------------------------------------------------ inference

    def predict_actions(self, images: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                        state: torch.Tensor | None, noise: torch.Tensor) -> torch.Tensor:
        """-> normalised action chunk (B, horizon, action_dim) after `num_euler_steps` Euler steps from `noise`."""
        _, embodied = self.token_features(images, input_ids, attention_mask)
        objects = self.object_estimate(embodied) if self.cfg.action_head_objects else None
        return self.action_model.sample(embodied, noise, state if self.cfg.state_dim > 0 else None, objects)

    def inference_module(self) -> "InferenceModule":
        return InferenceModule(self)


class InferenceModule(nn.Module):
    """Static-shape policy graph for export: VLM prefix -> 32 embodied states -> Euler-integrated DiT head.

    forward(images (B, V, 3, H, W) float32 RGB in [0, 1] at image_size, input_ids (B, L) int64,
            attention_mask (B, L) int64, state (B, state_dim) float32, noise (B, horizon, action_dim) float32)
        -> actions_normalized (B, horizon, action_dim). `state` is ignored when cfg.state_dim == 0 (pass (B, 1)).
    """

    def __init__(self, model: VLAJEPA) -> None:
        super().__init__()
        self.cfg = model.cfg
        self.vlm = model.vlm
        self.head = HeadModule(model)
        self.layout = model.robot_layout
        self.register_buffer("image_mean", model.image_mean.clone(), persistent=False)
        self.register_buffer("image_std", model.image_std.clone(), persistent=False)

    def forward(self, images: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                state: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        pixels = (images - self.image_mean) / self.image_std
        return self.head(self.prefix(images, input_ids, attention_mask), state, noise)

    def prefix(self, images: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """VLM part only: -> embodied states (B, 32, D) (for a split prefix + head export)."""
        pixels = (images - self.image_mean) / self.image_std
        return self.vlm(pixels, input_ids, attention_mask, self.layout)[:, list(self.layout.embodied_positions)]


class HeadModule(nn.Module):
    """Action head alone: (embodied (B, 32, D), state, noise) -> actions_normalized (split export); with
    cfg.action_head_objects it holds the object head too."""

    def __init__(self, model: VLAJEPA) -> None:
        super().__init__()
        self.cfg = model.cfg
        self.action_model = model.action_model
        self.object_head = model.object_head if model.cfg.action_head_objects else None

    def forward(self, embodied: torch.Tensor, state: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        objects = self.object_head(embodied.mean(dim=1)) if self.object_head is not None else None
        return self.action_model.sample(embodied, noise, state if self.cfg.state_dim > 0 else None, objects)


class PrefixModule(nn.Module):
    def __init__(self, model: VLAJEPA) -> None:
        super().__init__()
        self.inner = InferenceModule(model)

    def forward(self, images: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.inner.prefix(images, input_ids, attention_mask)


def make_model(cfg: VLAJEPAConfig, tokenizer: Tokenizer | None = None, with_world_model: bool = True,
               device: str | torch.device = "cpu") -> VLAJEPA:
    """Build a randomly initialised VLA-JEPA (device="meta" builds it without memory)."""
    with torch.device(device):
        return VLAJEPA(cfg, tokenizer, with_world_model)

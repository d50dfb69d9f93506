"""Frozen, self-validating configs and the named preset registry (`tiny`, `small`, `paper`).

Every size of VLA-JEPA is one `VLAJEPAConfig`; the same code builds all of them. Checkpoints store the
resolved config as JSON (`config_to_dict` / `config_from_dict`).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
from dataclasses import dataclass
from typing import Any


def _check_positive(owner: str, **values: float) -> None:
    for name, value in values.items():
        if value <= 0:
            raise ValueError(f"{owner}.{name} must be > 0, got {value!r}")


def _check_divisible(owner: str, name: str, value: int, divisor_name: str, divisor: int) -> None:
    if value % divisor != 0:
        raise ValueError(f"{owner}.{name}={value} must be divisible by {divisor_name}={divisor}")


@dataclass(frozen=True)
class VisionConfig:
    """Qwen3-VL vision tower (ViT with 2x2 patch merge and deepstack mergers)."""

    hidden_size: int = 1024
    depth: int = 24
    num_heads: int = 16
    intermediate_size: int = 4096
    out_hidden_size: int = 2048  # = LM hidden size
    patch_size: int = 16
    temporal_patch_size: int = 2
    spatial_merge_size: int = 2
    num_position_embeddings: int = 2304
    deepstack_visual_indexes: tuple[int, ...] = (5, 11, 17)
    rope_theta: float = 10000.0
    layer_norm_eps: float = 1e-6

    def __post_init__(self) -> None:
        _check_positive("VisionConfig", hidden_size=self.hidden_size, depth=self.depth, num_heads=self.num_heads,
                        intermediate_size=self.intermediate_size, out_hidden_size=self.out_hidden_size,
                        patch_size=self.patch_size, spatial_merge_size=self.spatial_merge_size)
        _check_divisible("VisionConfig", "hidden_size", self.hidden_size, "num_heads", self.num_heads)
        if (self.hidden_size // self.num_heads) % 4 != 0:
            raise ValueError(f"VisionConfig head_dim={self.hidden_size // self.num_heads} must be divisible by 4 "
                             "(2D rotary embedding)")
        side = int(round(self.num_position_embeddings ** 0.5))
        if side * side != self.num_position_embeddings:
            raise ValueError(f"VisionConfig.num_position_embeddings={self.num_position_embeddings} must be a square")
        for i in self.deepstack_visual_indexes:
            if not 0 <= i < self.depth:
                raise ValueError(f"VisionConfig.deepstack_visual_indexes contains {i}, outside [0, depth={self.depth})")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads


@dataclass(frozen=True)
class TextConfig:
    """Qwen3 decoder (GQA, q/k RMSNorm, interleaved multimodal RoPE)."""

    vocab_size: int = 151936
    hidden_size: int = 2048
    intermediate_size: int = 6144
    num_layers: int = 28
    num_heads: int = 16
    num_kv_heads: int = 8
    head_dim: int = 128
    rope_theta: float = 5_000_000.0
    mrope_section: tuple[int, int, int] = (24, 20, 20)
    rms_norm_eps: float = 1e-6

    def __post_init__(self) -> None:
        _check_positive("TextConfig", vocab_size=self.vocab_size, hidden_size=self.hidden_size,
                        intermediate_size=self.intermediate_size, num_layers=self.num_layers,
                        num_heads=self.num_heads, num_kv_heads=self.num_kv_heads, head_dim=self.head_dim)
        _check_divisible("TextConfig", "num_heads", self.num_heads, "num_kv_heads", self.num_kv_heads)
        if sum(self.mrope_section) != self.head_dim // 2:
            raise ValueError(f"TextConfig.mrope_section={self.mrope_section} must sum to head_dim/2="
                             f"{self.head_dim // 2}")


@dataclass(frozen=True)
class VJEPAConfig:
    """Frozen V-JEPA2 target encoder (ViT with 3D patches and 3D RoPE)."""

    hidden_size: int = 1024
    num_layers: int = 24
    num_heads: int = 16
    mlp_ratio: float = 4.0
    patch_size: int = 16
    tubelet_size: int = 2
    crop_size: int = 256
    layer_norm_eps: float = 1e-6
    qkv_bias: bool = True

    def __post_init__(self) -> None:
        _check_positive("VJEPAConfig", hidden_size=self.hidden_size, num_layers=self.num_layers,
                        num_heads=self.num_heads, patch_size=self.patch_size, tubelet_size=self.tubelet_size,
                        crop_size=self.crop_size)
        _check_divisible("VJEPAConfig", "hidden_size", self.hidden_size, "num_heads", self.num_heads)
        _check_divisible("VJEPAConfig", "crop_size", self.crop_size, "patch_size", self.patch_size)
        if self.hidden_size // self.num_heads < 12:
            raise ValueError(f"VJEPAConfig head_dim={self.hidden_size // self.num_heads} must be >= 12 (3D RoPE)")


@dataclass(frozen=True)
class PredictorConfig:
    """Action-conditioned V-JEPA2-AC predictor (block-causal, 3D RoPE)."""

    width: int = 1024
    depth: int = 12
    num_heads: int = 8
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    layer_norm_eps: float = 1e-5
    init_std: float = 0.02

    def __post_init__(self) -> None:
        _check_positive("PredictorConfig", width=self.width, depth=self.depth, num_heads=self.num_heads)
        _check_divisible("PredictorConfig", "width", self.width, "num_heads", self.num_heads)
        if self.width // self.num_heads < 12:
            raise ValueError(f"PredictorConfig head_dim={self.width // self.num_heads} must be >= 12: with fewer "
                             "dims the per-axis RoPE slice is too small (see reference)")


@dataclass(frozen=True)
class ActionHeadConfig:
    """DiT flow-matching action head (GR00T-N1.5 style)."""

    num_heads: int = 12
    head_dim: int = 64
    num_layers: int = 16
    hidden_size: int = 1024  # DiT output dim / decoder and state-encoder hidden
    dropout: float = 0.2
    num_future_tokens: int = 32
    max_seq_len: int = 1024
    timestep_buckets: int = 1000
    beta_alpha: float = 1.5
    beta_beta: float = 1.0
    noise_s: float = 0.999
    repeated_diffusion_steps: int = 4
    num_euler_steps: int = 4

    def __post_init__(self) -> None:
        _check_positive("ActionHeadConfig", num_heads=self.num_heads, head_dim=self.head_dim,
                        num_layers=self.num_layers, hidden_size=self.hidden_size,
                        num_future_tokens=self.num_future_tokens, repeated_diffusion_steps=self.repeated_diffusion_steps,
                        num_euler_steps=self.num_euler_steps, beta_alpha=self.beta_alpha, beta_beta=self.beta_beta)
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"ActionHeadConfig.dropout must be in [0, 1), got {self.dropout}")

    @property
    def inner_dim(self) -> int:
        return self.num_heads * self.head_dim


@dataclass(frozen=True)
class VLAJEPAConfig:
    """The whole model: VLM + action head (inference path) + target encoder and predictor (training only)."""

    name: str
    vision: VisionConfig
    text: TextConfig
    vjepa: VJEPAConfig
    predictor: PredictorConfig
    action_head: ActionHeadConfig
    image_size: int = 256  # VLM input side (px), square; the runtime resizes to this
    num_views: int = 2  # cameras fed to the VLM
    wm_views: tuple[int, int] = (0, 1)  # views concatenated on channels for the world model
    state_dim: int = 8  # 0 disables the state token
    action_dim: int = 7
    horizon: int = 7
    num_frames: int = 8  # clip length for the world model (frames t..t+7)
    latent_tokens_per_step: int = 8
    num_embodied_tokens: int = 32
    max_action_tokens: int = 28  # <|action_0..27|> added to the tokenizer, only the first T/tubelet-1 used
    max_prompt_len: int = 512
    image_mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    image_std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    wm_image_mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    wm_image_std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    wm_context_mode: str = "prefix"  # "prefix" (causal prefix clips) or "per_step" (each tubelet alone)
    wm_target_mode: str = "full"  # "full": one pass over the whole clip (public code); "causal": as the context
    num_aux_objects: int = 0  # >0: a training-only head regresses that many objects' (x, y, z) from the embodied tokens
    # the action head also reads the object head's estimate (each object relative to the gripper, added to the state
    # token); the object head then is part of the inference graph
    action_head_objects: bool = False
    # vocabulary the weights are trained with: "byte-level" (256 byte symbols, built in), "qwen3-vl" (Qwen's BPE,
    # built at install time from the pinned ranks), "custom" (whatever tokenizer.json comes with the checkpoint)
    tokenizer: str = "byte-level"

    def __post_init__(self) -> None:
        if self.tokenizer not in ("byte-level", "qwen3-vl", "custom"):
            raise ValueError(f"VLAJEPAConfig.tokenizer must be 'byte-level', 'qwen3-vl' or 'custom', got "
                             f"{self.tokenizer!r}")
        _check_positive("VLAJEPAConfig", image_size=self.image_size, num_views=self.num_views,
                        action_dim=self.action_dim, horizon=self.horizon, num_frames=self.num_frames,
                        latent_tokens_per_step=self.latent_tokens_per_step,
                        num_embodied_tokens=self.num_embodied_tokens, max_prompt_len=self.max_prompt_len)
        if self.wm_context_mode not in ("prefix", "per_step"):
            raise ValueError(f"VLAJEPAConfig.wm_context_mode must be 'prefix' or 'per_step', got "
                             f"{self.wm_context_mode!r}")
        if self.wm_target_mode not in ("full", "causal"):
            raise ValueError(f"VLAJEPAConfig.wm_target_mode must be 'full' or 'causal', got {self.wm_target_mode!r}")
        if self.num_aux_objects < 0:
            raise ValueError(f"VLAJEPAConfig.num_aux_objects must be >= 0, got {self.num_aux_objects}")
        if self.state_dim < 0:
            raise ValueError(f"VLAJEPAConfig.state_dim must be >= 0 (0 = no state token), got {self.state_dim}")
        if self.action_head_objects and (self.num_aux_objects == 0 or self.state_dim < 3):
            raise ValueError(f"VLAJEPAConfig.action_head_objects needs an object head (num_aux_objects="
                             f"{self.num_aux_objects} > 0) and the gripper position in the state (state_dim="
                             f"{self.state_dim} >= 3)")
        unit = self.vision.patch_size * self.vision.spatial_merge_size
        if self.image_size % unit != 0:
            raise ValueError(f"VLAJEPAConfig.image_size={self.image_size} must be divisible by "
                             f"patch_size*spatial_merge_size={unit}")
        if self.vision.out_hidden_size != self.text.hidden_size:
            raise ValueError(f"vision.out_hidden_size={self.vision.out_hidden_size} must equal "
                             f"text.hidden_size={self.text.hidden_size}")
        if len(self.vision.deepstack_visual_indexes) > self.text.num_layers:
            raise ValueError(f"{len(self.vision.deepstack_visual_indexes)} deepstack features need at least as many "
                             f"LM layers, got text.num_layers={self.text.num_layers}")
        if self.num_frames % self.vjepa.tubelet_size != 0 or self.num_frames // self.vjepa.tubelet_size < 2:
            raise ValueError(f"VLAJEPAConfig.num_frames={self.num_frames} must be a multiple of tubelet_size="
                             f"{self.vjepa.tubelet_size} giving >= 2 steps")
        if self.num_transitions > self.max_action_tokens:
            raise ValueError(f"{self.num_transitions} transitions need <= max_action_tokens={self.max_action_tokens}")
        if len(self.wm_views) != 2 or any(not 0 <= v < self.num_views for v in self.wm_views):
            raise ValueError(f"VLAJEPAConfig.wm_views={self.wm_views} must be 2 view indices in [0, {self.num_views})")
        if self.horizon + 1 + self.action_head.num_future_tokens > self.action_head.max_seq_len:
            raise ValueError(f"horizon={self.horizon} exceeds action_head.max_seq_len={self.action_head.max_seq_len}")
        if self.image_tokens_per_view * self.num_views + 64 > self.max_prompt_len:
            raise ValueError(f"max_prompt_len={self.max_prompt_len} too small for {self.num_views} views of "
                             f"{self.image_tokens_per_view} image tokens each")

    @property
    def num_steps(self) -> int:
        """World-model time steps (tubelets) per clip, e.g. 4 for 8 frames."""
        return self.num_frames // self.vjepa.tubelet_size

    @property
    def num_transitions(self) -> int:
        """Predicted transitions (context steps), e.g. 3."""
        return self.num_steps - 1

    @property
    def num_latent_tokens(self) -> int:
        return self.num_transitions * self.latent_tokens_per_step

    @property
    def grid_size(self) -> int:
        """Vision patches per side of one VLM image."""
        return self.image_size // self.vision.patch_size

    @property
    def image_tokens_per_view(self) -> int:
        return (self.grid_size // self.vision.spatial_merge_size) ** 2

    @property
    def num_euler_steps(self) -> int:
        return self.action_head.num_euler_steps

    @property
    def wm_grid(self) -> int:
        return self.vjepa.crop_size // self.vjepa.patch_size


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation and loop settings (the model size comes from the preset)."""

    stage: int = 2  # 1: alternate robot + human-video batches; 2: robot only
    total_steps: int = 200  # optimizer steps
    batch_size: int = 8  # global batch (split over ranks)
    video_batch_size: int = 8
    grad_accum_steps: int = 1
    lr_vlm: float = 1e-5
    lr_action_head: float = 1e-4
    lr_predictor: float = 3e-5
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    weight_decay: float = 1e-8
    warmup_steps: int = 20
    min_lr: float = 1e-6  # as in HF cosine_with_min_lr: ratio min_lr / lr_predictor applied to every group
    grad_clip: float = 1.0
    bf16: bool = False
    use_wm_loss: bool = True  # False = the "without JEPA objective" ablation
    wm_weight_robot: float = 0.1
    wm_weight_video: float = 1.0
    action_loss_weight: float = 1.0  # 0: no action loss (object-only pretraining on rendered layouts)
    object_loss_weight: float = 0.0  # >0: auxiliary object-position loss (needs a dataset with object positions)
    seed: int = 0
    num_workers: int = 0
    log_every: int = 1
    save_every: int = 0  # 0: only at the end
    fsdp: bool = False

    def __post_init__(self) -> None:
        if self.stage not in (1, 2):
            raise ValueError(f"TrainConfig.stage must be 1 or 2, got {self.stage}")
        _check_positive("TrainConfig", total_steps=self.total_steps, batch_size=self.batch_size,
                        grad_accum_steps=self.grad_accum_steps, lr_vlm=self.lr_vlm,
                        lr_action_head=self.lr_action_head, lr_predictor=self.lr_predictor)
        if self.object_loss_weight < 0 or self.action_loss_weight < 0:
            raise ValueError(f"TrainConfig.object_loss_weight={self.object_loss_weight} and action_loss_weight="
                             f"{self.action_loss_weight} must be >= 0")
        if self.action_loss_weight == 0 and self.object_loss_weight == 0 and not self.use_wm_loss:
            raise ValueError("TrainConfig: action_loss_weight=0, object_loss_weight=0 and no JEPA loss leave "
                             "nothing to train")
        if self.warmup_steps < 0 or self.min_lr < 0 or self.grad_clip < 0:
            raise ValueError(f"TrainConfig warmup_steps={self.warmup_steps}, min_lr={self.min_lr}, "
                             f"grad_clip={self.grad_clip} must be >= 0")
        if self.batch_size % self.grad_accum_steps != 0:
            raise ValueError(f"TrainConfig.batch_size={self.batch_size} must be divisible by "
                             f"grad_accum_steps={self.grad_accum_steps}")


# ---------------------------------------------------------------------------------------------- presets

def _tiny() -> VLAJEPAConfig:
    return VLAJEPAConfig(
        name="tiny",
        vision=VisionConfig(hidden_size=128, depth=2, num_heads=4, intermediate_size=256, out_hidden_size=128,
                            num_position_embeddings=64, deepstack_visual_indexes=(0,)),
        text=TextConfig(vocab_size=320, hidden_size=128, intermediate_size=384, num_layers=3, num_heads=4,
                        num_kv_heads=2, head_dim=32, rope_theta=10000.0, mrope_section=(6, 5, 5)),
        vjepa=VJEPAConfig(hidden_size=64, num_layers=2, num_heads=4, crop_size=64),
        predictor=PredictorConfig(width=64, depth=2, num_heads=4),
        action_head=ActionHeadConfig(num_heads=4, head_dim=32, num_layers=4, hidden_size=128, dropout=0.0),
        image_size=128,
        max_prompt_len=288,
    )


def _small() -> VLAJEPAConfig:
    return VLAJEPAConfig(
        name="small",
        vision=VisionConfig(hidden_size=256, depth=4, num_heads=4, intermediate_size=1024, out_hidden_size=384,
                            num_position_embeddings=196, deepstack_visual_indexes=(1, 2)),
        text=TextConfig(vocab_size=320, hidden_size=384, intermediate_size=1024, num_layers=6, num_heads=6,
                        num_kv_heads=2, head_dim=64, rope_theta=10000.0, mrope_section=(12, 10, 10)),
        vjepa=VJEPAConfig(hidden_size=192, num_layers=4, num_heads=6, crop_size=128),
        predictor=PredictorConfig(width=192, depth=4, num_heads=6),
        action_head=ActionHeadConfig(num_heads=6, head_dim=32, num_layers=8, hidden_size=256, dropout=0.1),
        image_size=224,
        max_prompt_len=384,
    )


def _paper() -> VLAJEPAConfig:
    return VLAJEPAConfig(
        name="paper",
        vision=VisionConfig(),
        text=TextConfig(),
        vjepa=VJEPAConfig(),
        predictor=PredictorConfig(),
        action_head=ActionHeadConfig(),
        image_size=256,  # 224 px client images are upsampled to 256 by Qwen's min_pixels: 64 tokens per image
        max_prompt_len=320,
        tokenizer="qwen3-vl",
    )


def _build_registry(factories: list) -> dict[str, VLAJEPAConfig]:
    registry: dict[str, VLAJEPAConfig] = {}
    for factory in factories:
        cfg = factory()
        if cfg.name in registry:
            raise ValueError(f"duplicate preset name {cfg.name!r}")
        registry[cfg.name] = cfg
    return registry


PRESETS: dict[str, VLAJEPAConfig] = _build_registry([_tiny, _small, _paper])


def get_config(name: str) -> VLAJEPAConfig:
    """Return the preset called `name`; unknown names raise with a "did you mean" hint."""
    if name not in PRESETS:
        close = difflib.get_close_matches(name, list(PRESETS), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown preset {name!r}; known: {sorted(PRESETS)}.{hint}")
    return PRESETS[name]


def replace(cfg: Any, **changes: Any) -> Any:
    """`dataclasses.replace` (re-runs validation)."""
    return dataclasses.replace(cfg, **changes)


# ---------------------------------------------------------------------------------------------- (de)serialisation

_NESTED = {"vision": VisionConfig, "text": TextConfig, "vjepa": VJEPAConfig, "predictor": PredictorConfig,
           "action_head": ActionHeadConfig}


def config_to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def _tuplify(cls: type, data: dict) -> dict:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(data) - set(fields)
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown keys {sorted(unknown)}")
    return {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}


def config_from_dict(data: dict) -> VLAJEPAConfig:
    data = dict(data)
    for key, cls in _NESTED.items():
        data[key] = cls(**_tuplify(cls, data[key]))
    return VLAJEPAConfig(**_tuplify(VLAJEPAConfig, data))


def train_config_from_dict(data: dict) -> TrainConfig:
    return TrainConfig(**_tuplify(TrainConfig, data))


def config_to_json(cfg: Any) -> str:
    return json.dumps(config_to_dict(cfg), indent=2)

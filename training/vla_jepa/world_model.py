"""Latent world model: frozen V-JEPA2 target encoder, action-conditioned predictor, leakage-free features.

* `VJEPA2Encoder`: the V-JEPA2 ViT (3D patches, 3D RoPE); parameter names follow transformers' `VJEPA2Model.encoder`.
* `ACPredictor`: V-JEPA2-AC style predictor; parameter names follow the public code's `vj_predictor`.
* `causal_step_features`: per-step features where step s is computed from frames <= the end of step s only
  (each prefix clip is encoded on its own), so context features for transition t never see later frames.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import PredictorConfig, VJEPAConfig


def rope_axis_dim(head_dim: int) -> int:
    """Dims rotated per axis (t, h, w) in V-JEPA2's 3D RoPE; the remainder is left unrotated."""
    return int(2 * ((head_dim // 3) // 2))


def vjepa_rope_tables(t: torch.Tensor, h: torch.Tensor | None, w: torch.Tensor | None,
                      head_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token (N, head_dim) cos/sin tables for V-JEPA2's RoPE; h/w None = rotate the temporal slice only.

    V-JEPA2 rotates interleaved pairs but repeats the frequency table as [f, f] (not [f0, f0, f1, f1]); this
    reproduces that exactly.
    """
    d = rope_axis_dim(head_dim)
    omega = torch.arange(d // 2, dtype=torch.float) / (d / 2.0)
    omega = 1.0 / 10000 ** omega
    cos = torch.ones(t.shape[0], head_dim)
    sin = torch.zeros(t.shape[0], head_dim)
    for i, pos in enumerate((t, h, w)):
        if pos is None:
            continue
        freq = pos.float()[:, None] * omega  # (N, d/2)
        cos[:, i * d:(i + 1) * d] = freq.cos().repeat(1, 2)
        sin[:, i * d:(i + 1) * d] = freq.sin().repeat(1, 2)
    return cos, sin


def rotate_pairs(x: torch.Tensor) -> torch.Tensor:
    """(x0, x1, x2, x3, ...) -> (-x1, x0, -x3, x2, ...)."""
    y = x.unflatten(-1, (-1, 2))
    return torch.stack((-y[..., 1], y[..., 0]), dim=-1).flatten(-2)


class RopeSelfAttention(nn.Module):
    """Multi-head self-attention with V-JEPA2 RoPE on q/k; separate or fused qkv projections."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool, fused: bool) -> None:
        super().__init__()
        self.h, self.fused = num_heads, fused
        if fused:
            self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        else:
            self.query = nn.Linear(dim, dim, bias=qkv_bias)
            self.key = nn.Linear(dim, dim, bias=qkv_bias)
            self.value = nn.Linear(dim, dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        b, n, d = x.shape  # (B, N, D)
        if self.fused:
            q, k, v = self.qkv(x).view(b, n, 3, self.h, -1).permute(2, 0, 3, 1, 4).unbind(0)  # (B, H, N, hd)
        else:
            q, k, v = (lin(x).view(b, n, self.h, -1).transpose(1, 2) for lin in (self.query, self.key, self.value))
        q = q * cos + rotate_pairs(q) * sin
        k = k * cos + rotate_pairs(k) * sin
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class MLP(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


# ------------------------------------------------------------------------------------------------ target encoder


class _PatchEmbeddings(nn.Module):
    def __init__(self, cfg: VJEPAConfig) -> None:
        super().__init__()
        k = (cfg.tubelet_size, cfg.patch_size, cfg.patch_size)
        self.proj = nn.Conv3d(3, cfg.hidden_size, kernel_size=k, stride=k)


class _Embeddings(nn.Module):
    def __init__(self, cfg: VJEPAConfig) -> None:
        super().__init__()
        self.patch_embeddings = _PatchEmbeddings(cfg)


class VJEPA2Layer(nn.Module):
    def __init__(self, cfg: VJEPAConfig) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.attention = RopeSelfAttention(cfg.hidden_size, cfg.num_heads, cfg.qkv_bias, fused=False)
        self.norm2 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.mlp = MLP(cfg.hidden_size, int(cfg.hidden_size * cfg.mlp_ratio))

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.norm1(x), cos, sin)
        return x + self.mlp(self.norm2(x))


class VJEPA2Encoder(nn.Module):
    """V-JEPA2 video encoder. forward: (B, T, 3, S, S) normalised clip -> (B, T/tubelet * g*g, D)."""

    def __init__(self, cfg: VJEPAConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embeddings = _Embeddings(cfg)
        self.layer = nn.ModuleList([VJEPA2Layer(cfg) for _ in range(cfg.num_layers)])
        self.layernorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self._tables: dict = {}

    def _rope(self, n_tokens: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        key = (n_tokens, str(device))
        if key not in self._tables:
            g = self.cfg.crop_size // self.cfg.patch_size
            ids = torch.arange(n_tokens)
            cos, sin = vjepa_rope_tables(ids // (g * g), (ids % (g * g)) // g, ids % g,
                                         self.cfg.hidden_size // self.cfg.num_heads)
            self._tables[key] = (cos.to(device), sin.to(device))
        return self._tables[key]

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        x = clip.permute(0, 2, 1, 3, 4)  # (B, 3, T, S, S)
        if x.shape[2] < self.cfg.tubelet_size:
            x = x.repeat(1, 1, self.cfg.tubelet_size, 1, 1)
        proj = self.embeddings.patch_embeddings.proj
        x = proj(x.to(proj.weight.dtype)).flatten(2).transpose(1, 2)  # (B, N, D)
        cos, sin = self._rope(x.shape[1], x.device)
        for layer in self.layer:
            x = layer(x, cos.to(x.dtype), sin.to(x.dtype))
        return self.layernorm(x)


def causal_step_features(encoder: VJEPA2Encoder, clip: torch.Tensor, mode: str = "prefix",
                         return_full: bool = False):
    """Leakage-free per-step features. clip (B, T, 3, S, S) -> (B, T/tubelet, g*g, D).

    mode "prefix": step s = last step of the encoding of frames [0, (s+1)*tubelet) (causal, sees its past);
    mode "per_step": step s = encoding of its own tubelet only. Neither ever sees frames after step s.
    return_full: also return the bidirectional encoding of the whole clip (B, T/tubelet, g*g, D) (in "prefix"
    mode this is the last prefix, so it costs nothing extra).
    """
    tub = encoder.cfg.tubelet_size
    steps = clip.shape[1] // tub
    g2 = (encoder.cfg.crop_size // encoder.cfg.patch_size) ** 2
    feats, full = [], None
    for s in range(steps):
        start = 0 if mode == "prefix" else s * tub
        out = encoder(clip[:, start:(s + 1) * tub])
        feats.append(out[:, -g2:])
        if mode == "prefix" and s == steps - 1:
            full = out
    causal = torch.stack(feats, dim=1)
    if not return_full:
        return causal
    if full is None:
        full = encoder(clip)
    return causal, full.view(full.shape[0], steps, g2, -1)


# ------------------------------------------------------------------------------------------------ predictor


class ACBlock(nn.Module):
    def __init__(self, cfg: PredictorConfig) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.width, eps=cfg.layer_norm_eps)
        self.attn = RopeSelfAttention(cfg.width, cfg.num_heads, cfg.qkv_bias, fused=True)
        self.norm2 = nn.LayerNorm(cfg.width, eps=cfg.layer_norm_eps)
        self.mlp = MLP(cfg.width, int(cfg.width * cfg.mlp_ratio))

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), cos, sin, mask)
        return x + self.mlp(self.norm2(x))


def block_causal_mask(steps: int, tokens_per_step: int) -> torch.Tensor:
    """(N, N) boolean SDPA mask (True = attend): every token of step t attends to all tokens of steps <= t."""
    step_of = torch.arange(steps).repeat_interleave(tokens_per_step)
    return step_of[:, None] >= step_of[None, :]


class ACPredictor(nn.Module):
    """Predicts next-step features from context features and latent-action tokens (teacher forced, all steps).

    forward(context (B, T*g*g, Din), actions (B, T*k, Dact)) -> (B, T*g*g, Din), where step t's output is the
    prediction of step t+1 and depends only on context and actions of steps <= t.
    """

    def __init__(self, cfg: PredictorConfig, in_dim: int, action_dim: int, steps: int, grid: int,
                 tokens_per_step: int) -> None:
        super().__init__()
        self.cfg, self.steps, self.grid, self.k = cfg, steps, grid, tokens_per_step
        self.predictor_embed = nn.Linear(in_dim, cfg.width)
        self.action_encoder = nn.Linear(action_dim, cfg.width)
        self.predictor_blocks = nn.ModuleList([ACBlock(cfg) for _ in range(cfg.depth)])
        self.predictor_norm = nn.LayerNorm(cfg.width, eps=cfg.layer_norm_eps)
        self.predictor_proj = nn.Linear(cfg.width, in_dim)
        per_step = tokens_per_step + grid * grid
        self.register_buffer("attn_mask", block_causal_mask(steps, per_step), persistent=False)
        t_act = torch.arange(steps).repeat_interleave(tokens_per_step)
        hd = cfg.width // cfg.num_heads
        a_cos, a_sin = vjepa_rope_tables(t_act, None, None, hd)
        ids = torch.arange(steps * grid * grid)
        x_cos, x_sin = vjepa_rope_tables(ids // (grid * grid), (ids % (grid * grid)) // grid, ids % grid, hd)
        # interleave per step: [k action tokens | g*g patch tokens]
        cos = torch.cat([a_cos.view(steps, tokens_per_step, hd), x_cos.view(steps, grid * grid, hd)], 1).flatten(0, 1)
        sin = torch.cat([a_sin.view(steps, tokens_per_step, hd), x_sin.view(steps, grid * grid, hd)], 1).flatten(0, 1)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=self.cfg.init_std)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for i, blk in enumerate(self.predictor_blocks):
            blk.attn.proj.weight.data.div_(math.sqrt(2.0 * (i + 1)))
            blk.mlp.fc2.weight.data.div_(math.sqrt(2.0 * (i + 1)))

    def forward(self, context: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        b = context.shape[0]
        t, g2, k = self.steps, self.grid * self.grid, self.k
        x = self.predictor_embed(context).view(b, t, g2, -1)
        a = self.action_encoder(actions).view(b, t, k, -1)
        x = torch.cat([a, x], dim=2).flatten(1, 2)  # (B, T*(k+g2), W)
        cos, sin = self.rope_cos.to(x.dtype), self.rope_sin.to(x.dtype)
        for blk in self.predictor_blocks:
            x = blk(x, cos, sin, self.attn_mask)
        x = x.view(b, t, k + g2, -1)[:, :, k:].flatten(1, 2)  # drop action tokens
        return self.predictor_proj(self.predictor_norm(x))

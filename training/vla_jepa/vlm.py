"""Qwen3-VL backbone (vision tower + Qwen3 decoder) with static shapes.

Parameter names follow transformers' `Qwen3VLModel` (`visual.*`, `language_model.*`), so an HF checkpoint loads
with a prefix strip. Differences from HF are only in *how* things are computed, never in what:
  * every image has the same size, so patch order, position-embedding interpolation taps, vision RoPE and the
    multimodal RoPE positions of the image block are precomputed constants;
  * the image block sits at fixed positions (see `prompt.py`), so images are placed and deepstack features
    added with constant gathers instead of `masked_scatter`;
  * attention is `F.scaled_dot_product_attention` only (exports to the ONNX `Attention` op).
`forward` returns the last decoder layer's output BEFORE the final RMSNorm.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .config import TextConfig, VisionConfig
from .prompt import PromptLayout


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


# ------------------------------------------------------------------------------------------------ vision tower


class VisionPatchEmbed(nn.Module):
    def __init__(self, cfg: VisionConfig) -> None:
        super().__init__()
        k = (cfg.temporal_patch_size, cfg.patch_size, cfg.patch_size)
        self.proj = nn.Conv3d(3, cfg.hidden_size, kernel_size=k, stride=k, bias=True)
        self.patch_size = cfg.patch_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) -> (N, D, H/p, W/p). A still image is its frame repeated over the temporal patch, so the
        Conv3d equals a Conv2d with the kernel summed over time."""
        w = self.proj.weight.sum(dim=2)
        return F.conv2d(x.to(w.dtype), w, self.proj.bias, stride=self.patch_size)


class VisionMLP(nn.Module):
    def __init__(self, cfg: VisionConfig) -> None:
        super().__init__()
        self.linear_fc1 = nn.Linear(cfg.hidden_size, cfg.intermediate_size)
        self.linear_fc2 = nn.Linear(cfg.intermediate_size, cfg.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_fc2(F.gelu(self.linear_fc1(x), approximate="tanh"))


class VisionAttention(nn.Module):
    def __init__(self, cfg: VisionConfig) -> None:
        super().__init__()
        self.num_heads = cfg.num_heads
        self.qkv = nn.Linear(cfg.hidden_size, 3 * cfg.hidden_size)
        self.proj = nn.Linear(cfg.hidden_size, cfg.hidden_size)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        n, s, d = x.shape  # (N images, S patches, D)
        q, k, v = self.qkv(x).view(n, s, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)  # (N, H, S, hd)
        dtype = q.dtype
        q = (q.float() * cos + rotate_half(q.float()) * sin).to(dtype)
        k = (k.float() * cos + rotate_half(k.float()) * sin).to(dtype)
        out = F.scaled_dot_product_attention(q, k, v)  # full attention within each image
        return self.proj(out.transpose(1, 2).reshape(n, s, d))


class VisionBlock(nn.Module):
    def __init__(self, cfg: VisionConfig) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.norm2 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.attn = VisionAttention(cfg)
        self.mlp = VisionMLP(cfg)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), cos, sin)
        return x + self.mlp(self.norm2(x))


class VisionPatchMerger(nn.Module):
    def __init__(self, cfg: VisionConfig, postshuffle_norm: bool) -> None:
        super().__init__()
        self.merged = cfg.hidden_size * cfg.spatial_merge_size ** 2
        self.postshuffle_norm = postshuffle_norm
        self.norm = nn.LayerNorm(self.merged if postshuffle_norm else cfg.hidden_size, eps=1e-6)
        self.linear_fc1 = nn.Linear(self.merged, self.merged)
        self.linear_fc2 = nn.Linear(self.merged, cfg.out_hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, S, D) in merge-block order -> (N, S/4, out)."""
        n = x.shape[0]
        x = self.norm(x.reshape(n, -1, self.merged)) if self.postshuffle_norm else self.norm(x).reshape(
            n, -1, self.merged)
        return self.linear_fc2(F.gelu(self.linear_fc1(x)))


def _interp_taps(index: torch.Tensor, size: int, side: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Bilinear, align_corners=True taps of a `side` table sampled at `size` points (HF's closed form)."""
    src = index.float() * (side - 1) / max(size - 1, 1)
    floor = torch.floor(src)
    offsets = torch.arange(0, 2)
    taps = (floor.long()[:, None] + offsets).clamp(0, side - 1)
    weights = (1 - (src[:, None] - floor[:, None] - offsets).abs()).clamp(min=0)
    return taps, weights


class VisionModel(nn.Module):
    """Qwen3-VL vision tower for fixed-size images; returns merged tokens and deepstack features."""

    def __init__(self, cfg: VisionConfig, image_size: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.patch_embed = VisionPatchEmbed(cfg)
        self.pos_embed = nn.Embedding(cfg.num_position_embeddings, cfg.hidden_size)
        self.blocks = nn.ModuleList([VisionBlock(cfg) for _ in range(cfg.depth)])
        self.merger = VisionPatchMerger(cfg, postshuffle_norm=False)
        self.deepstack_merger_list = nn.ModuleList(
            [VisionPatchMerger(cfg, postshuffle_norm=True) for _ in cfg.deepstack_visual_indexes])
        self._build_constants(image_size)

    def _build_constants(self, image_size: int) -> None:
        cfg, m = self.cfg, self.cfg.spatial_merge_size
        g = image_size // cfg.patch_size
        # merge-block order: (block_row, block_col, in_row, in_col)
        br, bc, ir, ic = torch.meshgrid(torch.arange(g // m), torch.arange(g // m), torch.arange(m), torch.arange(m),
                                        indexing="ij")
        row, col = (br * m + ir).flatten(), (bc * m + ic).flatten()
        self.register_buffer("patch_order", row * g + col, persistent=False)  # (S,)
        side = int(round(cfg.num_position_embeddings ** 0.5))
        ht, hw = _interp_taps(row, g, side)
        wt, ww = _interp_taps(col, g, side)
        self.register_buffer("interp_idx", (ht[:, :, None] * side + wt[:, None, :]).reshape(-1, 4), persistent=False)
        self.register_buffer("interp_w", (hw[:, :, None] * ww[:, None, :]).reshape(-1, 4), persistent=False)
        hd = cfg.head_dim
        inv_freq = 1.0 / (cfg.rope_theta ** (torch.arange(0, hd // 2, 2, dtype=torch.float) / (hd // 2)))
        freqs = torch.cat([row[:, None].float() * inv_freq, col[:, None].float() * inv_freq], dim=-1)
        emb = torch.cat([freqs, freqs], dim=-1)  # (S, hd)
        self.register_buffer("rope_cos", emb.cos(), persistent=False)
        self.register_buffer("rope_sin", emb.sin(), persistent=False)

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """pixels (N, 3, H, W) normalised -> merged (N, S/4, out), deepstack list of (N, S/4, out)."""
        x = self.patch_embed(pixels).flatten(2).transpose(1, 2)  # (N, S, D) raster order
        x = x[:, self.patch_order]  # merge-block order
        pos = (self.pos_embed(self.interp_idx) * self.interp_w[:, :, None].to(x.dtype)).sum(1)  # (S, D)
        x = x + pos
        deepstack = []
        for i, blk in enumerate(self.blocks):
            x = blk(x, self.rope_cos, self.rope_sin)
            if i in self.cfg.deepstack_visual_indexes:
                deepstack.append(self.deepstack_merger_list[self.cfg.deepstack_visual_indexes.index(i)](x))
        return self.merger(x), deepstack


# ------------------------------------------------------------------------------------------------ text decoder


class TextAttention(nn.Module):
    def __init__(self, cfg: TextConfig) -> None:
        super().__init__()
        self.h, self.kv, self.hd = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        self.q_proj = nn.Linear(cfg.hidden_size, self.h * self.hd, bias=False)
        self.k_proj = nn.Linear(cfg.hidden_size, self.kv * self.hd, bias=False)
        self.v_proj = nn.Linear(cfg.hidden_size, self.kv * self.hd, bias=False)
        self.o_proj = nn.Linear(self.h * self.hd, cfg.hidden_size, bias=False)
        self.q_norm = RMSNorm(self.hd, cfg.rms_norm_eps)
        self.k_norm = RMSNorm(self.hd, cfg.rms_norm_eps)

    def key_value(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, L, D) normed input -> keys (B, KV, L, hd) after k_norm and RoPE, values (B, KV, L, hd): what later
        tokens read of these ones (the prefix cache keeps them)."""
        b, l, _ = x.shape
        k = self.k_norm(self.k_proj(x).view(b, l, self.kv, self.hd)).transpose(1, 2)  # (B, KV, L, hd)
        v = self.v_proj(x).view(b, l, self.kv, self.hd).transpose(1, 2)
        cos, sin = cos[:, None], sin[:, None]
        return k * cos + rotate_half(k) * sin, v

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor,
                past: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """past: keys/values (B, KV, P, hd) of P earlier tokens (`key_value`), read before this call's own;
        mask is then (B, 1, L, P + L)."""
        b, l, _ = x.shape  # (B, L, D)
        q = self.q_norm(self.q_proj(x).view(b, l, self.h, self.hd)).transpose(1, 2)  # (B, H, L, hd)
        k = self.k_norm(self.k_proj(x).view(b, l, self.kv, self.hd)).transpose(1, 2)  # (B, KV, L, hd)
        v = self.v_proj(x).view(b, l, self.kv, self.hd).transpose(1, 2)
        cos, sin = cos[:, None], sin[:, None]
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin  # the same as key_value (kept inline: the exported graph's node order)
        if past is not None:
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)  # (B, KV, P + L, hd)
        s = l if past is None else k.shape[2]
        rep = self.h // self.kv  # grouped-query attention: repeat K/V heads explicitly (exports everywhere)
        k = k[:, :, None].expand(b, self.kv, rep, s, self.hd).reshape(b, self.h, s, self.hd)
        v = v[:, :, None].expand(b, self.kv, rep, s, self.hd).reshape(b, self.h, s, self.hd)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.o_proj(out.transpose(1, 2).reshape(b, l, self.h * self.hd))


class TextMLP(nn.Module):
    def __init__(self, cfg: TextConfig) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, cfg: TextConfig) -> None:
        super().__init__()
        self.self_attn = TextAttention(cfg)
        self.mlp = TextMLP(cfg)
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor,
                past: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask, past)
        return x + self.mlp(self.post_attention_layernorm(x))


class TextModel(nn.Module):
    def __init__(self, cfg: TextConfig) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList([DecoderLayer(cfg) for _ in range(cfg.num_layers)])
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)  # loaded for completeness; features are pre-norm


def mrope_axis_map(cfg: TextConfig) -> torch.Tensor:
    """Which position axis (0=t, 1=h, 2=w) drives each rotary frequency (Qwen3-VL interleaved layout)."""
    axis = torch.zeros(cfg.head_dim // 2, dtype=torch.long)
    for dim, offset in ((1, 1), (2, 2)):
        axis[offset:cfg.mrope_section[dim] * 3:3] = dim
    return axis


# ------------------------------------------------------------------------------------------------ backbone


class Qwen3VLBackbone(nn.Module):
    """Images + fixed-layout prompt -> last decoder layer's hidden states before the final norm."""

    def __init__(self, vision: VisionConfig, text: TextConfig, image_size: int) -> None:
        super().__init__()
        self.vision_cfg, self.text_cfg = vision, text
        self.visual = VisionModel(vision, image_size)
        self.language_model = TextModel(text)
        self.merged_grid = image_size // vision.patch_size // vision.spatial_merge_size
        inv_freq = 1.0 / (text.rope_theta ** (torch.arange(0, text.head_dim, 2, dtype=torch.float) / text.head_dim))
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        self.register_buffer("axis_onehot", F.one_hot(mrope_axis_map(text), 3).T.float(), persistent=False)  # (3, F)
        self._layout_cache: dict = {}

    def _layout_tensors(self, layout: PromptLayout, device: torch.device) -> dict:
        key = (layout, str(device))
        if key not in self._layout_cache:
            g = self.merged_grid
            pos, cur = [], 0
            prefix = list(layout.prefix_ids)
            img_set = set(layout.image_positions)
            i = 0
            while i < len(prefix):
                if i in img_set:  # an image block of g*g tokens starts here
                    rr, cc = torch.meshgrid(torch.arange(g), torch.arange(g), indexing="ij")
                    for r, c in zip(rr.flatten().tolist(), cc.flatten().tolist()):
                        pos.append((cur, cur + r, cur + c))
                    cur += g
                    i += g * g
                else:
                    pos.append((cur, cur, cur))
                    cur += 1
                    i += 1
            gather = torch.zeros(layout.max_len, dtype=torch.long)
            gather[list(layout.image_positions)] = torch.arange(1, len(layout.image_positions) + 1)
            self._layout_cache[key] = {
                "prefix_pos": torch.tensor(pos, dtype=torch.long, device=device).T.contiguous(),  # (3, P)
                "text_base": cur,
                "gather": gather.to(device),
                "is_image": (gather > 0).to(device),
                "causal": torch.ones(layout.max_len, layout.max_len, dtype=torch.bool, device=device).tril(),
            }
        return self._layout_cache[key]

    def position_ids(self, attention_mask: torch.Tensor, layout: PromptLayout) -> torch.Tensor:
        """(B, L) mask -> (3, B, L) multimodal RoPE positions, as HF computes them on the unpadded prompt."""
        t = self._layout_tensors(layout, attention_mask.device)
        b = attention_mask.shape[0]
        p = layout.prefix_len
        body = t["text_base"] + torch.cumsum(attention_mask[:, p:], dim=-1) - 1  # (B, L-P)
        prefix = t["prefix_pos"][:, None, :].expand(3, b, p)
        return torch.cat([prefix, body[None].expand(3, b, -1)], dim=-1)

    def rope(self, pos3: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        freqs = pos3[..., None].float() * self.inv_freq  # (3, B, L, F)
        freqs = (freqs * self.axis_onehot[:, None, None, :]).sum(0)  # pick t/h/w per frequency -> (B, L, F)
        emb = torch.cat([freqs, freqs], dim=-1)
        return emb.cos().to(dtype), emb.sin().to(dtype)

    def forward(self, pixels: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                layout: PromptLayout) -> torch.Tensor:
        """pixels (B, V, 3, H, W) normalised, input_ids/attention_mask (B, L) -> hidden (B, L, D) pre-norm."""
        b, v = pixels.shape[:2]
        if v != layout.num_images:
            raise ValueError(f"got {v} images per sample, prompt layout expects {layout.num_images}")
        t = self._layout_tensors(layout, input_ids.device)
        merged, deepstack = self.visual(pixels.flatten(0, 1))  # (B*V, n, D)
        d = merged.shape[-1]
        lm = self.language_model
        x = lm.embed_tokens(input_ids)  # (B, L, D)

        def scatter_images(feat: torch.Tensor) -> torch.Tensor:
            feat = feat.reshape(b, -1, d).to(x.dtype)  # (B, V*n, D) image-major like the prompt
            return torch.cat([feat.new_zeros(b, 1, d), feat], dim=1)[:, t["gather"]]  # (B, L, D), zeros off-image

        x = torch.where(t["is_image"][None, :, None], scatter_images(merged), x)
        cos, sin = self.rope(self.position_ids(attention_mask, layout), x.dtype)
        mask = t["causal"][None, None] & attention_mask[:, None, None, :].bool()  # (B, 1, L, L)
        for i, layer in enumerate(lm.layers):
            x = layer(x, cos, sin, mask)
            if i < len(deepstack):
                x = x + scatter_images(deepstack[i])
        return x

    # -------------------------------------------------------------------------------- per-task prefix reuse

    @torch.no_grad()
    def task_prefix(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, layout: PromptLayout,
                    drop_padding: bool = True) -> TaskPrefix:
        """input_ids/attention_mask (B, L) of one task's prompt -> its `TaskPrefix` (see there). drop_padding:
        leave out the positions padded in every sample (exact: masked keys get zero attention weight)."""
        if input_ids.shape != attention_mask.shape or input_ids.shape[1] != layout.max_len:
            raise ValueError(f"input_ids {tuple(input_ids.shape)} / attention_mask {tuple(attention_mask.shape)} "
                             f"do not fit the prompt layout of length {layout.max_len}")
        t = self._layout_tensors(layout, input_ids.device)
        lm = self.language_model
        dtype = lm.embed_tokens.weight.dtype
        p = layout.image_positions[0]  # tokens before the first image: the cached head
        keep = torch.arange(p, layout.max_len, device=input_ids.device)
        if drop_padding:
            keep = keep[attention_mask[:, p:].bool().any(dim=0)]
        cos, sin = self.rope(self.position_ids(attention_mask, layout), dtype)  # (B, L, hd)
        valid = attention_mask.bool()[:, None, None, :]  # (B, 1, 1, L) keys that exist
        # the head on its own: causal among itself, never sees an image
        x = lm.embed_tokens(input_ids[:, :p])
        head_mask = t["causal"][:p, :p][None, None] & valid[..., :p]
        kv = []
        for i, layer in enumerate(lm.layers):
            k, v = layer.self_attn.key_value(layer.input_layernorm(x), cos[:, :p], sin[:, :p])
            kv.append(torch.stack([k, v]))
            if i + 1 < len(lm.layers):
                x = layer(x, cos[:, :p], sin[:, :p], head_mask)
        body_mask = t["causal"][keep][:, keep][None, None] & valid[..., keep]  # (B, 1, K, K)
        head_cols = t["causal"][keep][:, :p][None, None] & valid[..., :p]  # (B, 1, K, P)
        b = input_ids.shape[0]
        return TaskPrefix(
            past_kv=torch.stack(kv), embeds=lm.embed_tokens(input_ids[:, keep]), cos=cos[:, keep].contiguous(),
            sin=sin[:, keep].contiguous(), mask=torch.cat([head_cols.expand(b, -1, -1, -1), body_mask], dim=-1),
            gather=t["gather"][keep], is_image=t["is_image"][keep], positions=keep)

    def forward_with_prefix(self, pixels: torch.Tensor, prefix: TaskPrefix) -> torch.Tensor:
        """pixels (B, V, 3, H, W) normalised + the task's prefix -> hidden (B, K, D) pre-norm of the computed
        positions `prefix.positions` (equal to `forward(...)[:, prefix.positions]` up to float rounding)."""
        b = pixels.shape[0]
        if b != prefix.embeds.shape[0]:
            raise ValueError(f"got {b} samples, the task prefix was built for {prefix.embeds.shape[0]}")
        merged, deepstack = self.visual(pixels.flatten(0, 1))  # (B*V, n, D)
        d = merged.shape[-1]
        x = prefix.embeds

        def scatter_images(feat: torch.Tensor) -> torch.Tensor:
            feat = feat.reshape(b, -1, d).to(x.dtype)
            return torch.cat([feat.new_zeros(b, 1, d), feat], dim=1)[:, prefix.gather]  # (B, K, D)

        x = torch.where(prefix.is_image[None, :, None], scatter_images(merged), x)
        for i, layer in enumerate(self.language_model.layers):
            x = layer(x, prefix.cos, prefix.sin, prefix.mask, (prefix.past_kv[i, 0], prefix.past_kv[i, 1]))
            if i < len(deepstack):
                x = x + scatter_images(deepstack[i])
        return x


def prefix_index(prefix: TaskPrefix, positions) -> torch.Tensor:
    """Full-prompt positions (e.g. the embodied tokens') -> their indices among the prefix's computed tokens."""
    pos = torch.as_tensor(list(positions), dtype=torch.long, device=prefix.positions.device)
    idx = torch.searchsorted(prefix.positions, pos)
    if bool((idx >= len(prefix.positions)).any()) or not bool((prefix.positions[idx.clamp(max=len(
            prefix.positions) - 1)] == pos).all()):
        raise ValueError("a requested position is cached or padding, not computed per call")
    return idx


class TaskPrefix(NamedTuple):
    """What one prompt (the same input_ids and attention_mask on every call of a task) fixes before any image is
    seen; `Qwen3VLBackbone.task_prefix` builds it, `forward_with_prefix` uses it. K = tokens computed per call.

    Exact because the decoder is causal and the prompt starts with text: the P tokens before the first image
    (`<|im_start|>user\n<|vision_start|>`) attend only to each other, so their keys/values in every layer are
    the same on every call. Everything after the first image depends on the images and is computed per call;
    of it, the token embeddings, multimodal RoPE tables and the attention mask depend only on the prompt. Padding
    positions (attention_mask 0 in every sample) are read by no other token, so they can be left out entirely.
    """

    past_kv: torch.Tensor  # (layers, 2, B, KV, P, hd): keys (after k_norm + RoPE) and values of the P head tokens
    embeds: torch.Tensor  # (B, K, D) token embeddings of the computed positions (image slots overwritten per call)
    cos: torch.Tensor  # (B, K, hd) multimodal RoPE of the computed positions
    sin: torch.Tensor  # (B, K, hd)
    mask: torch.Tensor  # (B, 1, K, P + K) bool: which keys (head, then computed) each computed token reads
    gather: torch.Tensor  # (K,) long: 1 + index of the image token placed there (image-major), 0 off-image
    is_image: torch.Tensor  # (K,) bool
    positions: torch.Tensor  # (K,) long: where each computed token sits in the full (max_len) prompt


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


__all__ = ["Qwen3VLBackbone", "TaskPrefix", "prefix_index", "VisionModel", "TextModel", "RMSNorm", "count_params"]

"""The predictor's fused RoPE tables equal the public algorithm: action tokens and frame tokens get separate
qkv passes, action tokens rotate only the temporal slice, frames rotate t/h/w slices (legacy repeat layout)."""

import torch
import torch.nn.functional as F

from vla_jepa.config import PredictorConfig
from vla_jepa.world_model import ACPredictor, block_causal_mask, rope_axis_dim


def rotate_legacy(x, pos):
    """Reference V-JEPA2 rotation of a slice x (..., N, D) at positions pos (N,)."""
    d = x.shape[-1]
    omega = 1.0 / 10000 ** (torch.arange(d // 2, dtype=x.dtype) / (d / 2.0))
    freq = pos[:, None].to(x.dtype) * omega
    sin, cos = freq.sin().repeat(1, 2), freq.cos().repeat(1, 2)
    y = x.unflatten(-1, (-1, 2))
    y = torch.stack((-y[..., 1], y[..., 0]), dim=-1).flatten(-2)
    return x * cos + y * sin


def reference_attention(attn, x, t, h, w, a):
    b, n, c = x.shape
    heads = attn.h
    hd = c // heads
    dd = rope_axis_dim(hd)
    x = x.view(b, t, a + h * w, c)
    aq, ak, av = [], [], []
    for i in range(a):
        qkv = attn.qkv(x[:, :, i]).unflatten(-1, (3, heads, -1)).permute(2, 0, 3, 1, 4)  # (3, B, H, T, hd)
        q, k, v = qkv[0], qkv[1], qkv[2]
        steps = torch.arange(t)
        aq.append(torch.cat([rotate_legacy(q[..., :dd], steps), q[..., dd:]], -1)[:, :, :, None])
        ak.append(torch.cat([rotate_legacy(k[..., :dd], steps), k[..., dd:]], -1)[:, :, :, None])
        av.append(v[:, :, :, None])
    aq, ak, av = (torch.cat(z, dim=3) for z in (aq, ak, av))  # (B, H, T, A, hd)
    frames = x[:, :, a:].flatten(1, 2)
    qkv = attn.qkv(frames).unflatten(-1, (3, heads, -1)).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    ids = torch.arange(t * h * w)
    pos = (ids // (h * w), (ids % (h * w)) // w, ids % w)

    def rot(z):
        parts = [rotate_legacy(z[..., j * dd:(j + 1) * dd], pos[j]) for j in range(3)]
        return torch.cat(parts + [z[..., 3 * dd:]], -1)

    q, k = rot(q), rot(k)

    def merge(tx, ta):
        return torch.cat([ta, tx.view(b, heads, t, h * w, -1)], dim=3).flatten(2, 3)

    q, k, v = merge(q, aq), merge(k, ak), merge(v, av)
    mask = block_causal_mask(t, a + h * w)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return attn.proj(out.transpose(1, 2).reshape(b, n, c))


def test_predictor_matches_reference_algorithm():
    torch.manual_seed(0)
    cfg = PredictorConfig(width=96, depth=2, num_heads=2)  # head_dim 48: 3 x 16 rotated, none left
    t, g, a = 3, 4, 8
    pred = ACPredictor(cfg, in_dim=40, action_dim=24, steps=t, grid=g, tokens_per_step=a).eval()
    ctx, act = torch.randn(2, t * g * g, 40), torch.randn(2, t * a, 24)
    with torch.no_grad():
        ours = pred(ctx, act)
        x = torch.cat([pred.action_encoder(act).view(2, t, a, -1),
                       pred.predictor_embed(ctx).view(2, t, g * g, -1)], 2).flatten(1, 2)
        for blk in pred.predictor_blocks:
            x = x + reference_attention(blk.attn, blk.norm1(x), t, g, g, a)
            x = x + blk.mlp(blk.norm2(x))
        ref = pred.predictor_proj(pred.predictor_norm(x.view(2, t, a + g * g, -1)[:, :, a:].flatten(1, 2)))
    assert (ours - ref).abs().max().item() < 1e-5


def test_predictor_reference_with_unrotated_dims():
    torch.manual_seed(1)
    cfg = PredictorConfig(width=64, depth=1, num_heads=4)  # head_dim 16: 3 x 4 rotated, 4 left
    pred = ACPredictor(cfg, in_dim=32, action_dim=16, steps=2, grid=2, tokens_per_step=3).eval()
    ctx, act = torch.randn(1, 2 * 4, 32), torch.randn(1, 2 * 3, 16)
    with torch.no_grad():
        ours = pred(ctx, act)
        x = torch.cat([pred.action_encoder(act).view(1, 2, 3, -1),
                       pred.predictor_embed(ctx).view(1, 2, 4, -1)], 2).flatten(1, 2)
        blk = pred.predictor_blocks[0]
        x = x + reference_attention(blk.attn, blk.norm1(x), 2, 2, 2, 3)
        x = x + blk.mlp(blk.norm2(x))
        ref = pred.predictor_proj(pred.predictor_norm(x.view(1, 2, 7, -1)[:, :, 3:].flatten(1, 2)))
    assert (ours - ref).abs().max().item() < 1e-5

"""DiT flow-matching action head (GR00T-N1.5 style), parameter names as the public code's `action_model`.

Token sequence: [state (optional) | 32 learned future tokens | horizon action tokens]. Optionally the state token
also carries where an object estimate (the model's object head) puts each object relative to the gripper. Even DiT blocks
cross-attend to the 32 embodied-token states of the VLM, odd blocks self-attend; AdaLN on the timestep.
Training: Beta(1.5, 1) time, x_t = (1-t) eps + t a, velocity target a - eps, MSE, R noise draws per sample.
Inference: Euler from the given noise in `num_euler_steps` steps (noise is an input, so runs reproduce).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import ActionHeadConfig

OBJECT_OFFSET_SCALE_M = 0.1  # object-minus-gripper offsets enter the object encoder in units of 10 cm


def timestep_sinusoid(t: torch.Tensor, dim: int = 256) -> torch.Tensor:
    """diffusers `Timesteps(dim, flip_sin_to_cos=True, downscale_freq_shift=1)`: (B,) -> (B, dim)."""
    half = dim // 2
    exponent = -math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=t.device) / (half - 1)
    emb = t.float()[:, None] * torch.exp(exponent)[None]
    return torch.cat([emb.cos(), emb.sin()], dim=-1)


def action_sinusoid(t: torch.Tensor, dim: int) -> torch.Tensor:
    """GR00T SinusoidalPositionalEncoding of the t bucket: (B, T) -> (B, T, dim)."""
    half = dim // 2
    exponent = -torch.arange(half, dtype=torch.float32, device=t.device) * (math.log(10000.0) / half)
    freqs = t.float()[..., None] * exponent.exp()
    return torch.cat([freqs.sin(), freqs.cos()], dim=-1)


class TimestepEmbedder(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.linear_1 = nn.Linear(256, dim)
        self.linear_2 = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(F.silu(self.linear_1(x)))


class TimestepEncoder(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.timestep_embedder = TimestepEmbedder(dim)

    def forward(self, t_bucket: torch.Tensor) -> torch.Tensor:
        emb = timestep_sinusoid(t_bucket)
        return self.timestep_embedder(emb.to(self.timestep_embedder.linear_1.weight.dtype))


class AdaLayerNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.linear = nn.Linear(dim, 2 * dim)
        self.norm = nn.LayerNorm(dim, eps=eps, elementwise_affine=False)

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        scale, shift = self.linear(F.silu(temb)).chunk(2, dim=-1)  # per-block split is (scale, shift)
        return self.norm(x) * (1 + scale[:, None]) + shift[:, None]


class Attention(nn.Module):
    """diffusers-style attention (to_q/to_k/to_v/to_out.0); cross-attention when kv_dim is given."""

    def __init__(self, dim: int, heads: int, head_dim: int, kv_dim: int | None, dropout: float) -> None:
        super().__init__()
        inner = heads * head_dim
        self.heads = heads
        self.to_q = nn.Linear(dim, inner)
        self.to_k = nn.Linear(kv_dim or dim, inner)
        self.to_v = nn.Linear(kv_dim or dim, inner)
        self.to_out = nn.ModuleList([nn.Linear(inner, dim), nn.Dropout(dropout)])

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        b, n, _ = x.shape
        ctx = x if context is None else context
        q = self.to_q(x).view(b, n, self.heads, -1).transpose(1, 2)
        k = self.to_k(ctx).view(b, ctx.shape[1], self.heads, -1).transpose(1, 2)
        v = self.to_v(ctx).view(b, ctx.shape[1], self.heads, -1).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, -1)
        return self.to_out[1](self.to_out[0](out))


class GELUProj(nn.Module):
    def __init__(self, dim: int, inner: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, inner)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.proj(x), approximate="tanh")


class FeedForward(nn.Module):
    def __init__(self, dim: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.ModuleList([GELUProj(dim, 4 * dim), nn.Dropout(dropout), nn.Linear(4 * dim, dim),
                                  nn.Dropout(dropout)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.net:
            x = layer(x)
        return x


class BasicTransformerBlock(nn.Module):
    def __init__(self, dim: int, heads: int, head_dim: int, kv_dim: int | None, dropout: float) -> None:
        super().__init__()
        self.cross = kv_dim is not None
        self.norm1 = AdaLayerNorm(dim)
        self.attn1 = Attention(dim, heads, head_dim, kv_dim, dropout)
        self.norm3 = nn.LayerNorm(dim, eps=1e-5, elementwise_affine=False)
        self.ff = FeedForward(dim, dropout)
        self.final_dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, context: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.attn1(self.norm1(x, temb), context if self.cross else None)
        x = x + self.final_dropout(h)
        return x + self.ff(self.norm3(x))


class DiT(nn.Module):
    def __init__(self, cfg: ActionHeadConfig, cross_dim: int) -> None:
        super().__init__()
        d = cfg.inner_dim
        self.timestep_encoder = TimestepEncoder(d)
        self.transformer_blocks = nn.ModuleList([
            BasicTransformerBlock(d, cfg.num_heads, cfg.head_dim, cross_dim if i % 2 == 0 else None, cfg.dropout)
            for i in range(cfg.num_layers)])
        self.norm_out = nn.LayerNorm(d, eps=1e-6, elementwise_affine=False)
        self.proj_out_1 = nn.Linear(d, 2 * d)
        self.proj_out_2 = nn.Linear(d, cfg.hidden_size)

    def forward(self, x: torch.Tensor, context: torch.Tensor, t_bucket: torch.Tensor) -> torch.Tensor:
        temb = self.timestep_encoder(t_bucket)  # (B, D)
        for blk in self.transformer_blocks:
            x = blk(x, context, temb)
        shift, scale = self.proj_out_1(F.silu(temb)).chunk(2, dim=-1)  # final split is (shift, scale)
        return self.proj_out_2(self.norm_out(x) * (1 + scale[:, None]) + shift[:, None])


class TwoLayerMLP(nn.Module):
    def __init__(self, din: int, hidden: int, dout: int) -> None:
        super().__init__()
        self.layer1 = nn.Linear(din, hidden)
        self.layer2 = nn.Linear(hidden, dout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer2(F.relu(self.layer1(x)))


class ActionEncoder(nn.Module):
    def __init__(self, action_dim: int, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.layer1 = nn.Linear(action_dim, dim)
        self.layer2 = nn.Linear(2 * dim, dim)
        self.layer3 = nn.Linear(dim, dim)

    def forward(self, actions: torch.Tensor, t_bucket: torch.Tensor) -> torch.Tensor:
        """actions (B, T, A), t_bucket (B,) -> (B, T, D)."""
        a = self.layer1(actions)
        tau = action_sinusoid(t_bucket[:, None].expand(-1, actions.shape[1]), self.dim).to(a.dtype)
        return self.layer3(F.silu(self.layer2(torch.cat([a, tau], dim=-1))))


class FlowMatchingActionHead(nn.Module):
    def __init__(self, cfg: ActionHeadConfig, cross_dim: int, action_dim: int, horizon: int, state_dim: int,
                 num_objects: int = 0) -> None:
        super().__init__()
        self.cfg, self.action_dim, self.horizon = cfg, action_dim, horizon
        d = cfg.inner_dim
        self.model = DiT(cfg, cross_dim)
        self.state_encoder = TwoLayerMLP(state_dim, cfg.hidden_size, d) if state_dim > 0 else None
        # state -> (state - mean) / std before the encoder, inside the exported graph (identity until
        # `set_state_normalization`; checkpoints made before it existed load as identity = the raw state they saw)
        self.register_buffer("state_mean", torch.zeros(max(state_dim, 1)))
        self.register_buffer("state_std", torch.ones(max(state_dim, 1)))
        self.object_encoder = None
        if num_objects:
            # (B, 3N) object offsets from the gripper -> added to the state token. Zero output at first, so an
            # existing head gains the input without changing what it does.
            self.object_encoder = TwoLayerMLP(3 * num_objects, cfg.hidden_size, d)
            nn.init.zeros_(self.object_encoder.layer2.weight)
            nn.init.zeros_(self.object_encoder.layer2.bias)
            # the object head's output is normalised; these turn it back into metres (`set_object_normalization`)
            self.register_buffer("object_mean", torch.zeros(3 * num_objects))
            self.register_buffer("object_std", torch.ones(3 * num_objects))
        self.action_encoder = ActionEncoder(action_dim, d)
        self.action_decoder = TwoLayerMLP(cfg.hidden_size, cfg.hidden_size, action_dim)
        self.future_tokens = nn.Embedding(cfg.num_future_tokens, d)
        self.position_embedding = nn.Embedding(cfg.max_seq_len, d)
        nn.init.normal_(self.future_tokens.weight, std=0.02)
        nn.init.normal_(self.position_embedding.weight, std=0.02)

    def object_offsets(self, objects: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """objects (B, 3N) normalised estimate, state (B, S) raw (x, y, z first) -> (B, 3N) object - gripper in
        units of OBJECT_OFFSET_SCALE_M."""
        b = objects.shape[0]
        metres = (objects * self.object_std.to(objects.dtype) + self.object_mean.to(objects.dtype)).view(b, -1, 3)
        return ((metres - state[:, None, :3].to(objects.dtype)) / OBJECT_OFFSET_SCALE_M).flatten(1)

    def velocity(self, embodied: torch.Tensor, x_t: torch.Tensor, t_bucket: torch.Tensor,
                 state: torch.Tensor | None, objects: torch.Tensor | None = None) -> torch.Tensor:
        """embodied (B, 32, Dl), x_t (B, H, A), t_bucket (B,) long, state (B, S), objects (B, 3N) (with an
        object encoder) -> velocity (B, H, A)."""
        b = x_t.shape[0]
        tokens = self.action_encoder(x_t, t_bucket) + self.position_embedding.weight[None, :x_t.shape[1]]
        out = self.model(torch.cat(self.fixed_tokens(b, tokens.dtype, state, objects) + [tokens], dim=1), embodied,
                         t_bucket)
        return self.action_decoder(out[:, -x_t.shape[1]:])

    def fixed_tokens(self, b: int, dtype: torch.dtype, state: torch.Tensor | None,
                     objects: torch.Tensor | None = None) -> list[torch.Tensor]:
        """The tokens before the action tokens, the same in every Euler step: [state (B, 1, D) (with an encoder),
        future tokens (B, 32, D)]."""
        parts = [self.future_tokens.weight[None].expand(b, -1, -1)]
        if self.state_encoder is not None:
            if state is None:
                raise ValueError("this action head was built with a state token; pass state (B, state_dim)")
            raw = state.to(dtype)
            token = self.state_encoder((raw - self.state_mean.to(dtype)) / self.state_std.to(dtype))
            if self.object_encoder is not None:
                if objects is None:
                    raise ValueError("this action head reads the object estimate; pass objects (B, 3N)")
                token = token + self.object_encoder(self.object_offsets(objects.to(dtype), raw))
            parts.insert(0, token[:, None])
        return parts

    def set_state_normalization(self, mean, std, min_std: float = 1e-2) -> None:
        """mean, std (state_dim,) in robot units (dataset statistics); std is floored at `min_std` so a nearly
        constant input (e.g. the roll of a tool that always points down) is not blown up into noise."""
        mean = torch.as_tensor(mean, dtype=torch.float32).flatten()
        std = torch.as_tensor(std, dtype=torch.float32).flatten().clamp_min(min_std)
        if mean.shape != self.state_mean.shape or std.shape != self.state_std.shape:
            raise ValueError(f"state statistics of shape {tuple(mean.shape)}/{tuple(std.shape)} != state_dim "
                             f"{tuple(self.state_mean.shape)}")
        self.state_mean.copy_(mean)
        self.state_std.copy_(std)

    def set_object_normalization(self, mean, std, min_std: float = 1e-3) -> None:
        """mean, std (N, 3) object positions in metres: how the object head's targets were normalised."""
        mean = torch.as_tensor(mean, dtype=torch.float32).flatten()
        std = torch.as_tensor(std, dtype=torch.float32).flatten().clamp_min(min_std)
        if self.object_encoder is None or mean.shape != self.object_mean.shape or std.shape != self.object_std.shape:
            raise ValueError(f"object statistics of shape {tuple(mean.shape)} do not fit this head ("
                             f"{None if self.object_encoder is None else tuple(self.object_mean.shape)})")
        self.object_mean.copy_(mean)
        self.object_std.copy_(std)

    def draw_noise_and_time(self, sample_seeds: list[int], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-sample deterministic noise (R, B, H, A) and flow time t (R, B) from integer seeds.

        Keyed by sample (not by batch position), so 1-process and N-process training see the same draws.
        """
        r = self.cfg.repeated_diffusion_steps
        noises, times = [], []
        for seed in sample_seeds:
            g = torch.Generator().manual_seed(int(seed))
            noises.append(torch.randn(r, self.horizon, self.action_dim, generator=g))
            times.append(self._time_from_uniform(torch.rand(r, generator=g)))
        return torch.stack(noises, 1).to(device), torch.stack(times, 1).to(device)

    def _time_from_uniform(self, u: torch.Tensor) -> torch.Tensor:
        """u ~ U(0,1) -> Beta(alpha, beta) by inverse CDF (exact when alpha or beta is 1) -> flow time t."""
        a, b = self.cfg.beta_alpha, self.cfg.beta_beta
        if b == 1.0:
            x = u.pow(1.0 / a)
        elif a == 1.0:
            x = 1 - (1 - u).pow(1.0 / b)
        else:
            x = torch.distributions.Beta(torch.tensor(a), torch.tensor(b)).sample(u.shape)
        x = x.clamp(max=self.cfg.noise_s)
        return (self.cfg.noise_s - x) / self.cfg.noise_s

    def loss(self, embodied: torch.Tensor, actions: torch.Tensor, state: torch.Tensor | None = None,
             noise: torch.Tensor | None = None, t: torch.Tensor | None = None,
             objects: torch.Tensor | None = None) -> torch.Tensor:
        """Flow-matching MSE with R = repeated_diffusion_steps noise draws per sample.

        embodied (B, 32, Dl), actions (B, H, A) normalised, state (B, S); noise (R, B, H, A) and t (R, B) optional
        (drawn from the global RNG when absent).
        """
        r = self.cfg.repeated_diffusion_steps
        b = actions.shape[0]
        if noise is None or t is None:
            noise = torch.randn(r, *actions.shape, device=actions.device)
            t = self._time_from_uniform(torch.rand(r, b)).to(actions.device)
        emb = embodied.repeat(r, 1, 1)  # (R*B, 32, Dl), repeat-major like the public code
        a = actions.to(embodied.dtype).repeat(r, 1, 1)
        st = state.repeat(r, 1) if state is not None else None
        obj = objects.repeat(r, 1) if objects is not None else None
        eps = noise.reshape(r * b, *actions.shape[1:]).to(a.dtype)
        tt = t.reshape(r * b).to(a.dtype)
        x_t = (1 - tt[:, None, None]) * eps + tt[:, None, None] * a
        pred = self.velocity(emb, x_t, (tt * self.cfg.timestep_buckets).long(), st, obj)
        return F.mse_loss(pred.float(), (a - eps).float())

    def sample(self, embodied: torch.Tensor, noise: torch.Tensor, state: torch.Tensor | None = None,
               objects: torch.Tensor | None = None) -> torch.Tensor:
        """Euler integration from `noise` (B, H, A) -> normalised actions (B, H, A). Static, unrolled."""
        x = noise.to(embodied.dtype)
        n = self.cfg.num_euler_steps
        dt = 1.0 / n
        for i in range(n):
            bucket = int(i / n * self.cfg.timestep_buckets)
            t_bucket = torch.full((x.shape[0],), bucket, dtype=torch.long, device=x.device)
            x = x + dt * self.velocity(embodied, x, t_bucket, state, objects)
        return x


class FusedEulerSampler(nn.Module):
    """`FlowMatchingActionHead.sample` for inference with the work that does not change between Euler steps
    done once (exact: the same operations on the same values, in a different order):

      * per step, the timestep embedding, every block's AdaLN (scale, shift), the output (shift, scale) and the
        action encoder's time sinusoid depend only on the step's fixed time bucket and the weights: computed
        here, at construction, for the `num_euler_steps` buckets;
      * per call, the cross-attention keys/values of the embodied states and the state/future tokens are the
        same in every step: computed once instead of `num_euler_steps` times.

    Build it after the head has its final weights, dtype and device (the constants are taken then). Dropout is
    not applied (inference only). One forward = all Euler steps, so one CUDA graph captures the whole loop.
    """

    def __init__(self, head: FlowMatchingActionHead) -> None:
        super().__init__()
        self.head = head
        dit = head.model
        n = head.cfg.num_euler_steps
        self.dt = 1.0 / n
        w = dit.proj_out_1.weight
        mods, outs, taus = [], [], []
        with torch.no_grad():
            for i in range(n):
                bucket = torch.full((1,), int(i / n * head.cfg.timestep_buckets), dtype=torch.long, device=w.device)
                temb = dit.timestep_encoder(bucket)  # (1, D)
                mods.append([blk.norm1.linear(F.silu(temb)).chunk(2, dim=-1) for blk in dit.transformer_blocks])
                outs.append(dit.proj_out_1(F.silu(temb)).chunk(2, dim=-1))  # (shift, scale)
                tau = action_sinusoid(bucket[:, None].expand(-1, head.horizon), head.action_encoder.dim)
                taus.append(tau.to(w.dtype))  # (1, H, D)
        self._mods, self._outs, self._taus = mods, outs, taus

    def _tokens(self, x: torch.Tensor, step: int) -> torch.Tensor:
        enc = self.head.action_encoder
        a = enc.layer1(x)
        tau = self._taus[step].expand(x.shape[0], -1, -1)
        return enc.layer3(F.silu(enc.layer2(torch.cat([a, tau], dim=-1))))

    def forward(self, embodied: torch.Tensor, noise: torch.Tensor, state: torch.Tensor | None = None,
                objects: torch.Tensor | None = None) -> torch.Tensor:
        """As `FlowMatchingActionHead.sample`: embodied (B, 32, Dl), noise (B, H, A) -> actions (B, H, A)."""
        head, dit = self.head, self.head.model
        x = noise.to(embodied.dtype)
        b, horizon = x.shape[:2]
        fixed = torch.cat(head.fixed_tokens(b, x.dtype, state, objects), dim=1)  # (B, S+32, D): same every step
        kv = []  # cross-attention keys/values of the embodied states, per cross block
        for blk in dit.transformer_blocks:
            if blk.cross:
                attn = blk.attn1
                kv.append((attn.to_k(embodied).view(b, embodied.shape[1], attn.heads, -1).transpose(1, 2),
                           attn.to_v(embodied).view(b, embodied.shape[1], attn.heads, -1).transpose(1, 2)))
            else:
                kv.append(None)
        pos = head.position_embedding.weight[None, :horizon]
        for step in range(len(self._taus)):
            h = torch.cat([fixed, self._tokens(x, step) + pos], dim=1)
            for blk, (scale, shift), blk_kv in zip(dit.transformer_blocks, self._mods[step], kv):
                h = _block(blk, h, scale, shift, blk_kv)
            shift, scale = self._outs[step]
            out = dit.proj_out_2(dit.norm_out(h) * (1 + scale[:, None]) + shift[:, None])
            x = x + self.dt * head.action_decoder(out[:, -horizon:])
        return x


def _block(blk: BasicTransformerBlock, x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor,
           kv: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
    """BasicTransformerBlock.forward with a precomputed AdaLN modulation and (cross blocks) precomputed K/V."""
    attn = blk.attn1
    h = blk.norm1.norm(x) * (1 + scale[:, None]) + shift[:, None]
    b, n, _ = h.shape
    q = attn.to_q(h).view(b, n, attn.heads, -1).transpose(1, 2)
    if kv is None:
        k = attn.to_k(h).view(b, n, attn.heads, -1).transpose(1, 2)
        v = attn.to_v(h).view(b, n, attn.heads, -1).transpose(1, 2)
    else:
        k, v = kv
    out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, -1)
    x = x + attn.to_out[0](out)
    return x + blk.ff.net[2](blk.ff.net[0](blk.norm3(x)))

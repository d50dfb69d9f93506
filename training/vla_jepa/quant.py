"""FP8 (E4M3) linear layers, chosen per module by name patterns.

`Fp8Linear` stores its weight as `torch.float8_e4m3fn` with a float32 scale (one per tensor, or one per output
channel) and quantises its input on every call with a scale from the input's absolute maximum (per tensor, or per
token = per row). The product is

    y = (x_q @ w_q^T) * s_x * s_w + bias,   x_q = fp8(x / s_x), w_q = fp8(w / s_w), s = amax / 448

accumulated in float32 and returned in the input's dtype. Two ways to compute it, same numbers up to the order of
the float32 accumulation:
  * "scaled_mm": `torch._scaled_mm` (FP8 tensor cores on H100/H200; torch 2.13 also runs it on the CPU).
    Per-tensor scales are scalars; per-channel/per-token ("rowwise") scales are (M, 1) and (1, N). Needs K and N
    multiples of 16 (layers that are not stay unquantised);
  * "emulate": the fp8 values cast back to float32 and multiplied in float32 (any device): for accuracy tests.

`quantize_linears(model, rules)` swaps the `nn.Linear`s whose qualified names match an "fp8" rule (fnmatch
patterns, first match wins, unmatched layers stay as they are). Weights are quantised from the layer's current
values, so call it after loading the checkpoint and before moving to bf16 (or after: the scale is computed in
float32 either way).
"""

from __future__ import annotations

import fnmatch

import torch
import torch.nn.functional as F
from torch import nn

FP8 = torch.float8_e4m3fn
FP8_MAX = 448.0  # largest finite E4M3 value
_MIN_AMAX = 1e-12  # an all-zero row/tensor gets a tiny scale instead of a division by zero
SCALINGS = ("tensor", "channel")
MODES = ("auto", "scaled_mm", "emulate")

# Named rule sets (module-name pattern -> fp8 | bf16), in the VLAJEPA model's naming. "bf16" rules only shield
# layers from later "fp8" rules; unmatched layers keep the model's dtype.
FP8_PRESETS: dict[str, tuple[tuple[str, str], ...]] = {
    "none": (),
    "lm": (("vlm.language_model.layers.*", "fp8"),),
    "vlm": (("vlm.language_model.layers.*", "fp8"), ("vlm.visual.blocks.*", "fp8")),
    # the AdaLN linears see one row (the timestep embedding): nothing to gain, and the fused head precomputes them
    "all": (("*.norm1.linear", "bf16"), ("vlm.language_model.layers.*", "fp8"), ("vlm.visual.blocks.*", "fp8"),
            ("vlm.visual.*merger*", "fp8"), ("action_model.model.transformer_blocks.*", "fp8")),
}


def parse_rules(spec: str) -> tuple[tuple[str, str], ...]:
    """A preset name (`FP8_PRESETS`) or "pattern=fp8|bf16,pattern=..." -> rules. Raises on anything else."""
    spec = spec.strip()
    if spec in FP8_PRESETS:
        return FP8_PRESETS[spec]
    if "=" not in spec:
        raise ValueError(f"fp8={spec!r}: not a preset {sorted(FP8_PRESETS)} nor 'pattern=fp8|bf16,...'")
    rules = []
    for part in spec.split(","):
        pattern, _, kind = part.strip().partition("=")
        if kind not in ("fp8", "bf16") or not pattern:
            raise ValueError(f"fp8 rule {part.strip()!r} must be 'module-name-pattern=fp8' or '...=bf16'")
        rules.append((pattern, kind))
    return tuple(rules)


def _amax_scale(t: torch.Tensor, per_row: bool) -> torch.Tensor:
    """t (M, K) float32 -> scale amax / 448: () per tensor, (M, 1) per row."""
    amax = t.abs().amax(dim=-1, keepdim=True) if per_row else t.abs().amax()
    return amax.clamp(min=_MIN_AMAX) / FP8_MAX


def quantize(t: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """float t / scale, clamped to +-448, rounded to E4M3 (round to nearest even)."""
    return (t.float() / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8)


class Fp8Linear(nn.Module):
    """Drop-in for `nn.Linear` with E4M3 weights and dynamically quantised E4M3 inputs (see module docstring)."""

    def __init__(self, linear: nn.Linear, scaling: str = "channel", mode: str = "auto") -> None:
        super().__init__()
        if scaling not in SCALINGS:
            raise ValueError(f"scaling={scaling!r} must be one of {SCALINGS}")
        if mode not in MODES:
            raise ValueError(f"mode={mode!r} must be one of {MODES}")
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.scaling, self.mode = scaling, mode
        w = linear.weight.detach().float()  # (N, K)
        scale = _amax_scale(w, per_row=scaling == "channel")  # () or (N, 1)
        self.register_buffer("weight_fp8", quantize(w, scale))  # (N, K) E4M3
        self.register_buffer("weight_scale", scale)
        self.bias = linear.bias  # kept in the model's dtype

    def _apply(self, fn, recurse=True):
        """`.to(dtype)` / `.bfloat16()` change the bias only: the E4M3 weight and its float32 scale keep their
        dtypes (they follow device moves)."""
        w, s = self.weight_fp8, self.weight_scale
        super()._apply(fn, recurse)
        self.weight_fp8, self.weight_scale = w.to(self.weight_fp8.device), s.to(self.weight_scale.device)
        return self

    @property
    def weight(self) -> torch.Tensor:
        """The dequantised weight (N, K) float32 (what the layer effectively multiplies with)."""
        return self.weight_fp8.float() * self.weight_scale

    def _scaled_mm(self, x: torch.Tensor) -> bool:
        if self.mode != "auto":
            return self.mode == "scaled_mm"
        if x.device.type != "cuda":
            return False
        return torch.cuda.get_device_capability(x.device) >= (8, 9)  # FP8 tensor cores: Ada, Hopper and later

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x2 = x.reshape(-1, self.in_features)  # (M, K)
        per_row = self.scaling == "channel"
        sx = _amax_scale(x2.float(), per_row)  # () or (M, 1)
        xq = quantize(x2, sx)
        bias = self.bias
        if self._scaled_mm(x):
            sw = self.weight_scale.t() if per_row else self.weight_scale  # (1, N) or ()
            # rowwise scaling takes no bias on every build: add it after
            out = torch._scaled_mm(xq, self.weight_fp8.t(), scale_a=sx, scale_b=sw,
                                   bias=None if per_row or bias is None else bias.to(x.dtype), out_dtype=x.dtype)
            if per_row and bias is not None:
                out = out + bias.to(out.dtype)
        else:
            out = (xq.float() @ self.weight_fp8.float().t()) * (sx * self.weight_scale.t() if per_row
                                                                  else sx * self.weight_scale)
            if bias is not None:
                out = out + bias.float()
            out = out.to(x.dtype)
        return out.reshape(*shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"scaling={self.scaling}, mode={self.mode}")


def fp8_eligible(linear: nn.Linear) -> bool:
    """`torch._scaled_mm` needs K and N to be multiples of 16."""
    return linear.in_features % 16 == 0 and linear.out_features % 16 == 0


def plan(model: nn.Module, rules) -> dict[str, str]:
    """-> {linear name: "fp8" | "bf16" (a rule keeps it) | "shape" (fp8 asked, K or N not a multiple of 16) |
    "default" (no rule matched: unchanged)} for every nn.Linear of `model`."""
    out = {}
    for name, mod in model.named_modules():
        if not isinstance(mod, nn.Linear):
            continue
        kind = next((k for pattern, k in rules if fnmatch.fnmatchcase(name, pattern)), "default")
        out[name] = "shape" if kind == "fp8" and not fp8_eligible(mod) else kind
    return out


def quantize_linears(model: nn.Module, rules, scaling: str = "channel", mode: str = "auto") -> dict[str, str]:
    """Replace the nn.Linear layers that `plan` marks fp8 by `Fp8Linear` in place; returns the plan."""
    if isinstance(rules, str):
        rules = parse_rules(rules)
    decided = plan(model, rules)
    for name, kind in decided.items():
        if kind != "fp8":
            continue
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        linear = getattr(parent, child) if not child.isdigit() else parent[int(child)]
        new = Fp8Linear(linear, scaling, mode)
        if child.isdigit():
            parent[int(child)] = new
        else:
            setattr(parent, child, new)
    return decided


def chunk_metrics(reference: torch.Tensor, got: torch.Tensor) -> dict[str, float]:
    """Action chunks (B, H, A) -> cosine of the flattened chunks (worst sample) and max |difference|."""
    r, g = reference.float().flatten(1), got.float().flatten(1)
    cos = F.cosine_similarity(r, g, dim=1).min()
    return {"cosine": float(cos), "max_abs_err": float((r - g).abs().max())}


__all__ = ["Fp8Linear", "FP8_PRESETS", "parse_rules", "plan", "quantize_linears", "quantize", "chunk_metrics",
           "fp8_eligible"]

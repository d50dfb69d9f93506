"""`TorchBackend`: the torch model itself (CPU or CUDA; bf16 on GPU; SDPA flash attention; optional
torch.compile and CUDA graphs). Loads the bundle's inference-only checkpoint (`torch/`); a bundle exported without
one (ONNX only, like models/tiny_sim) gets its weights read back from the ONNX graphs and checked against them.
On CUDA it takes the raw camera frames and resizes them on the GPU (`device_resize`; OpenCV's result to 1/255).

Faster-inference options (docs/gpu_inference.md): `prefix_cache` computes what the prompt alone fixes once per
task (exact), `fused_head` runs the Euler loop with its step-invariant work hoisted (exact), `fp8` swaps chosen
linear layers for E4M3 ones (approximate; torch._scaled_mm on H100/H200, a float32 emulation elsewhere)."""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import time

import numpy as np

from ..core.images import device_resize_matrices
from .bundle import Bundle

_DTYPES = ("auto", "float32", "bfloat16", "float16")
_SDPA = ("flash", "efficient", "cudnn", "math", "auto")
_COMPILE_MODES = ("default", "max-autotune-no-cudagraphs")
_DEVICE_RESIZE = ("auto", "on", "off")


@dataclasses.dataclass(frozen=True)
class TorchBackendConfig:
    device: str = "cpu"  # cpu | cuda | cuda:N
    dtype: str = "auto"  # auto = bfloat16 on CUDA, float32 on CPU
    num_threads: int = 1  # CPU intra-op threads (torch.set_num_threads); 0 = leave torch's default
    sdpa: str = "flash"  # preferred scaled_dot_product_attention kernel on CUDA (falls back in order if ineligible)
    compile: bool = False  # torch.compile the prefix and head
    compile_mode: str = "default"  # torch.compile mode; max-autotune-no-cudagraphs tunes for minutes at paper size
    cuda_graphs: bool = False  # capture prefix and head as CUDA graphs with static I/O buffers (CUDA only)
    # resize camera frames on the model's device (two float32 matrix products, = OpenCV's INTER_AREA to 1/255)
    # instead of OpenCV on the host: auto = on CUDA only (on the CPU OpenCV is faster)
    device_resize: str = "auto"
    # compute the prompt's per-task part (head K/V before the first image, embeddings, RoPE, mask; padding left
    # out) once per task, keyed by input_ids + attention_mask (exact up to float rounding)
    prefix_cache: bool = False
    # Euler loop with AdaLN modulations, time sinusoids, cross-attention K/V and fixed tokens computed once
    fused_head: bool = False
    # FP8 (E4M3) linear layers: "none", a vla_jepa.quant.FP8_PRESETS name, or "pattern=fp8|bf16,..." on module names
    fp8: str = "none"
    fp8_scaling: str = "channel"  # channel: per-output-channel weights, per-token inputs; tensor: one scale each
    fp8_mode: str = "auto"  # auto: torch._scaled_mm on CUDA sm_89+, float32 emulation elsewhere; scaled_mm; emulate

    def __post_init__(self) -> None:
        if self.dtype not in _DTYPES:
            raise ValueError(f"dtype={self.dtype!r} must be one of {_DTYPES}")
        if self.sdpa not in _SDPA:
            raise ValueError(f"sdpa={self.sdpa!r} must be one of {_SDPA}")
        if self.compile_mode not in _COMPILE_MODES:
            raise ValueError(f"compile_mode={self.compile_mode!r} must be one of {_COMPILE_MODES} (CUDA graphs: "
                             "use cuda_graphs=True, not a compile mode)")
        if self.cuda_graphs and not self.device.startswith("cuda"):
            raise ValueError(f"cuda_graphs=True needs a CUDA device, got device={self.device!r}")
        if self.num_threads < 0:
            raise ValueError(f"num_threads={self.num_threads} must be >= 0")
        if self.device_resize not in _DEVICE_RESIZE:
            raise ValueError(f"device_resize={self.device_resize!r} must be one of {_DEVICE_RESIZE}")
        from vla_jepa.quant import MODES, SCALINGS, parse_rules

        parse_rules(self.fp8)  # raises with the offending rule
        if self.fp8_scaling not in SCALINGS:
            raise ValueError(f"fp8_scaling={self.fp8_scaling!r} must be one of {SCALINGS}")
        if self.fp8_mode not in MODES:
            raise ValueError(f"fp8_mode={self.fp8_mode!r} must be one of {MODES}")


def _sdpa_context(preferred: str):
    """Enable SDPA kernels with `preferred` first (flash cannot take an attention mask; others then serve)."""
    if preferred == "auto":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    order = {"flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION,
             "cudnn": SDPBackend.CUDNN_ATTENTION, "math": SDPBackend.MATH}
    backends = [order[preferred]] + [b for k, b in order.items() if k != preferred]
    try:
        return sdpa_kernel(backends, set_priority=True)
    except TypeError:  # older torch without set_priority
        return sdpa_kernel(backends)


def _prefix_module(model):
    """VLM prefix -> embodied states (B, 32, D), as vla_jepa's PrefixModule, but gathering the embodied positions
    with a device index buffer: indexing with a Python list copies a CPU index to the GPU on every call, which
    CUDA-graph capture does not allow."""
    import torch
    from torch import nn

    class Prefix(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.vlm = model.vlm
            self.layout = model.robot_layout
            self.register_buffer("image_mean", model.image_mean.clone(), persistent=False)
            self.register_buffer("image_std", model.image_std.clone(), persistent=False)
            self.register_buffer("embodied_idx", torch.tensor(self.layout.embodied_positions, dtype=torch.long,
                                                              device=model.image_mean.device), persistent=False)

        def forward(self, images, input_ids, attention_mask):  # (B, V, 3, H, W), (B, L), (B, L) -> (B, 32, D)
            pixels = (images - self.image_mean) / self.image_std
            h = self.vlm(pixels, input_ids, attention_mask, self.layout)
            return h.index_select(1, self.embodied_idx)

    return Prefix().eval()


def _cached_prefix_module(model):
    """VLM prefix with the per-task part precomputed (`task_inputs`, once per prompt): forward(images, *task
    tensors) -> embodied states (B, 32, D)."""
    import torch
    from torch import nn
    from vla_jepa.vlm import TaskPrefix, prefix_index

    class CachedPrefix(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.vlm = model.vlm
            self.layout = model.robot_layout
            self.register_buffer("image_mean", model.image_mean.clone(), persistent=False)
            self.register_buffer("image_std", model.image_std.clone(), persistent=False)

        @torch.no_grad()
        def task_inputs(self, input_ids, attention_mask) -> dict:
            """(B, L) prompt -> the task tensors forward takes after the images (in order)."""
            p = self.vlm.task_prefix(input_ids, attention_mask, self.layout)
            return {"task_past_kv": p.past_kv, "task_embeds": p.embeds, "task_cos": p.cos, "task_sin": p.sin,
                    "task_mask": p.mask, "task_gather": p.gather, "task_is_image": p.is_image,
                    "task_out_idx": prefix_index(p, self.layout.embodied_positions)}

        def forward(self, images, past_kv, embeds, cos, sin, mask, gather, is_image, out_idx):
            pixels = (images - self.image_mean) / self.image_std
            h = self.vlm.forward_with_prefix(pixels, TaskPrefix(past_kv, embeds, cos, sin, mask, gather, is_image,
                                                                out_idx))
            return h.index_select(1, out_idx)  # (B, 32, D)

    return CachedPrefix().eval()


def _fused_head_module(model):
    """HeadModule with the Euler loop of `FusedEulerSampler` (build after the final dtype and device)."""
    from torch import nn
    from vla_jepa.action_head import FusedEulerSampler

    class FusedHead(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.cfg = model.cfg
            self.sampler = FusedEulerSampler(model.action_model)
            self.object_head = model.object_head if model.cfg.action_head_objects else None

        def forward(self, embodied, state, noise):  # (B, 32, D), (B, S), (B, H, A) -> (B, H, A)
            objects = self.object_head(embodied.mean(dim=1)) if self.object_head is not None else None
            return self.sampler(embodied, noise, state if self.cfg.state_dim > 0 else None, objects)

    return FusedHead().eval()


class _EagerReplay:
    """Where no GPU is: stands in for a captured CUDA graph by running the same call on the same static buffers,
    so the graph path's buffer handling (copy in, task refill or new capture, read out) runs on the CPU too."""

    def __init__(self, fn) -> None:
        self.replay = fn


class TorchBackend:
    """Runs VLA-JEPA's inference path in torch as two stages: VLM prefix, then the Euler-integrated DiT head."""

    name = "torch"

    def __init__(self, model, config: TorchBackendConfig = TorchBackendConfig()) -> None:
        """model: a vla_jepa VLAJEPA (the world model may be absent)."""
        import torch
        from vla_jepa.model import HeadModule

        self.config = config
        self.device = torch.device(config.device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device={config.device!r} but torch.cuda.is_available() is False")
        if self.device.type == "cpu" and config.num_threads > 0:
            torch.set_num_threads(config.num_threads)
        dtype = config.dtype if config.dtype != "auto" else ("bfloat16" if self.device.type == "cuda" else "float32")
        self.dtype = getattr(torch, dtype)
        self.cfg = model.cfg
        self.fp8_plan: dict[str, str] = {}
        if config.fp8 != "none":
            from vla_jepa.quant import quantize_linears

            model = copy.deepcopy(model)  # quantised in place: leave the caller's model as it was
            self.fp8_plan = quantize_linears(model.eval(), config.fp8, config.fp8_scaling, config.fp8_mode)
        model = model.eval().to(device=self.device, dtype=self.dtype)
        self.prefix = (_cached_prefix_module if config.prefix_cache else _prefix_module)(model)
        self._prefix_eager = self.prefix
        self.head = _fused_head_module(model) if config.fused_head else HeadModule(model).eval()
        self._torch = torch
        self._task_key: tuple[bytes, bytes] | None = None
        self._task: dict = {}  # task tensors of the current prompt (prefix_cache)
        # the CUDA-graph path (static buffers) with eager replays on a CPU: for tests of its buffer handling
        self.static_buffers_on_cpu = False
        self.captures = 0  # graph captures so far (a new prompt length captures again)
        if config.compile:
            self.prefix = torch.compile(self.prefix, mode=config.compile_mode, fullgraph=False)
            self.head = torch.compile(self.head, mode=config.compile_mode, fullgraph=False)
        self._graphs = None  # (prefix graph, head graph, static inputs, static embodied, static out)
        self.resizes_frames = config.device_resize == "on" or (config.device_resize == "auto"
                                                               and self.device.type == "cuda")
        self._resize_weights: dict[tuple[int, int], tuple] = {}  # (H, W) -> (Wy (S, H), Wx^T (W, S)) on device

    @classmethod
    def from_bundle(cls, bundle: Bundle, config: TorchBackendConfig = TorchBackendConfig(),
                    model=None) -> "TorchBackend":
        """model: the bundle's `load_model` result, to share one load between backends (it is copied: the
        backend moves its model to its device and dtype)."""
        return cls(copy.deepcopy(model) if model is not None else cls.load_model(bundle), config)

    @staticmethod
    def load_model(bundle: Bundle):
        """The bundle's VLAJEPA on the CPU: its torch checkpoint, or for an ONNX-only bundle (--no-torch-weights)
        the weights read back from its graphs (verified: exported again, they must reproduce the graphs)."""
        from vla_jepa.checkpoint import load_checkpoint

        if bundle.torch_checkpoint is None:
            from vla_jepa.recover import model_from_bundle

            return model_from_bundle(bundle.root, verify=True)[0]
        return load_checkpoint(bundle.torch_checkpoint, with_world_model=False)[0]

    def _tensor(self, name: str, value: np.ndarray):
        t = self._torch.from_numpy(np.ascontiguousarray(value)).to(self.device, non_blocking=True)
        return t if t.dtype == self._torch.int64 else t.to(self.dtype)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            self._torch.cuda.synchronize(self.device)

    def run(self, inputs: dict[str, np.ndarray]) -> tuple[np.ndarray, dict[str, float]]:
        """inputs: the graph inputs, where `frames` (V (H, W, 3) uint8 arrays) may stand for `images` when
        `resizes_frames` (ModelPolicy sends them then); the resize is timed as resize_ms."""
        torch = self._torch
        with torch.inference_mode(), _sdpa_context(self.config.sdpa if self.device.type == "cuda" else "auto"):
            t_resize = time.perf_counter()
            x = {k: self._tensor(k, v) for k, v in inputs.items() if k != "frames"}
            stages = {}
            if "frames" in inputs:
                x["images"] = self._resize(inputs["frames"])
                self._sync()
                stages["resize_ms"] = (time.perf_counter() - t_resize) * 1e3
            task_changed = self._update_task(inputs, x, stages)
            if self.config.cuda_graphs or self.static_buffers_on_cpu:
                return self._run_graphs(x, stages, task_changed)
            t0 = time.perf_counter()
            embodied = self.prefix(*self._prefix_args(x).values())  # (1, 32, D)
            self._sync()
            t1 = time.perf_counter()
            actions = self.head(embodied, x["state"], x["noise"])  # (1, horizon, action_dim)
            out = actions.float().cpu().numpy()
            t2 = time.perf_counter()
        return out, {**stages, "prefix_ms": (t1 - t0) * 1e3, "head_ms": (t2 - t1) * 1e3}

    def _update_task(self, inputs: dict, x: dict, stages: dict) -> bool:
        """prefix_cache: rebuild the task tensors when the prompt (input_ids, attention_mask) changed."""
        if not self.config.prefix_cache:
            return False
        key = (inputs["input_ids"].tobytes(), inputs["attention_mask"].tobytes())
        if key == self._task_key:
            return False
        t = time.perf_counter()
        self._task = self._prefix_eager.task_inputs(x["input_ids"], x["attention_mask"])
        self._sync()
        stages["task_prefix_ms"] = (time.perf_counter() - t) * 1e3
        self._task_key = key
        return True

    def _prefix_args(self, x: dict) -> dict:
        """The prefix module's inputs, in order."""
        if self.config.prefix_cache:
            return {"images": x["images"], **self._task}
        return {k: x[k] for k in ("images", "input_ids", "attention_mask")}

    def _resize(self, frames: tuple[np.ndarray, ...]):
        """V (H, W, 3) uint8 frames -> (1, V, 3, S, S) images in [0, 1] in the model's dtype, each resized on the
        device in float32 as Wy @ frame @ Wx^T and rounded like OpenCV's uint8 output."""
        torch = self._torch
        views = []
        for frame in frames:
            h, w = frame.shape[:2]
            weights = self._resize_weights.get((h, w))
            if weights is None:
                mats = device_resize_matrices(h, w, self.cfg.image_size)
                if mats is None:
                    raise ValueError(f"a {w}x{h} px frame is smaller than the model's {self.cfg.image_size} px: "
                                     "resize it on the host (device_resize only shrinks)")
                wy, wx = (torch.from_numpy(m).to(self.device) for m in mats)
                weights = self._resize_weights[(h, w)] = (wy, wx.T.contiguous())
            wy, wx_t = weights
            f = torch.from_numpy(np.ascontiguousarray(frame)).to(self.device, non_blocking=True)
            f = f.permute(2, 0, 1).float()  # (3, H, W)
            views.append(torch.matmul(torch.matmul(wy, f), wx_t))  # (3, S, W) -> (3, S, S)
        out = torch.stack(views)[None]  # (1, V, 3, S, S), 0..255
        return (torch.floor(out + 0.5) * (1.0 / 255.0)).to(self.dtype)

    def _run_graphs(self, x: dict, stages: dict, task_changed: bool) -> tuple[np.ndarray, dict[str, float]]:
        per_call = {**self._prefix_args(x), "state": x["state"], "noise": x["noise"]}
        if self._graphs is not None and task_changed:
            static = self._graphs[2]
            if all(static[k].shape == v.shape for k, v in self._task.items()):
                for k, v in self._task.items():  # same shapes: refill the captured buffers, no new capture
                    static[k].copy_(v)
            else:  # another prompt length (padding left out): capture again
                self._graphs = None
        if self._graphs is None:
            self._capture(per_call)
        g_prefix, g_head, static = self._graphs
        for k, v in per_call.items():
            if not k.startswith("task_"):
                static[k].copy_(v)
        t0 = time.perf_counter()
        g_prefix.replay()
        self._sync()
        t1 = time.perf_counter()
        g_head.replay()
        out = static["actions"].float().cpu().numpy()
        t2 = time.perf_counter()
        return out, {**stages, "prefix_ms": (t1 - t0) * 1e3, "head_ms": (t2 - t1) * 1e3}

    def _capture(self, x: dict) -> None:
        """Warm up on a side stream, then capture prefix and head with static buffers (shapes are fixed).
        x: the prefix inputs in order, then state and noise."""
        torch = self._torch
        static = {k: v.clone() for k, v in x.items()}
        prefix_args = [static[k] for k in x if k not in ("state", "noise")]
        if self.device.type != "cuda":  # static_buffers_on_cpu
            static["embodied"] = self.prefix(*prefix_args)
            static["actions"] = self.head(static["embodied"], static["state"], static["noise"])
            self._graphs = (_EagerReplay(lambda: static["embodied"].copy_(self.prefix(*prefix_args))),
                            _EagerReplay(lambda: static["actions"].copy_(self.head(static["embodied"], static["state"],
                                                                                   static["noise"]))), static)
            self.captures += 1
            return
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(3):
                emb = self.prefix(*prefix_args)
                self.head(emb, static["state"], static["noise"])
        torch.cuda.current_stream(self.device).wait_stream(side)
        g_prefix, g_head = torch.cuda.CUDAGraph(), torch.cuda.CUDAGraph()
        with torch.cuda.graph(g_prefix):
            static["embodied"] = self.prefix(*prefix_args)
        with torch.cuda.graph(g_head):
            static["actions"] = self.head(static["embodied"], static["state"], static["noise"])
        self._graphs = (g_prefix, g_head, static)
        self.captures += 1

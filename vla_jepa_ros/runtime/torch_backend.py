"""`TorchBackend`: the torch model itself (CPU or CUDA; bf16 on GPU; SDPA flash attention; optional
torch.compile and CUDA graphs). Loads the bundle's inference-only checkpoint (`torch/`); a bundle exported without
one (ONNX only, like models/tiny_sim) gets its weights read back from the ONNX graphs and checked against them.
On CUDA it takes the raw camera frames and resizes them on the GPU (`device_resize`; OpenCV's result to 1/255)."""
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
        model = model.eval().to(device=self.device, dtype=self.dtype)
        self.prefix = _prefix_module(model)
        self.head = HeadModule(model).eval()
        self._torch = torch
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
            if self.config.cuda_graphs:
                return self._run_graphs(x, stages)
            t0 = time.perf_counter()
            embodied = self.prefix(x["images"], x["input_ids"], x["attention_mask"])  # (1, 32, D)
            self._sync()
            t1 = time.perf_counter()
            actions = self.head(embodied, x["state"], x["noise"])  # (1, horizon, action_dim)
            out = actions.float().cpu().numpy()
            t2 = time.perf_counter()
        return out, {**stages, "prefix_ms": (t1 - t0) * 1e3, "head_ms": (t2 - t1) * 1e3}

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

    def _run_graphs(self, x: dict, stages: dict) -> tuple[np.ndarray, dict[str, float]]:
        if self._graphs is None:
            self._capture(x)
        g_prefix, g_head, static = self._graphs
        for k, v in x.items():
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
        """Warm up on a side stream, then capture prefix and head with static buffers (shapes are fixed)."""
        torch = self._torch
        static = {k: v.clone() for k, v in x.items()}
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(3):
                emb = self.prefix(static["images"], static["input_ids"], static["attention_mask"])
                self.head(emb, static["state"], static["noise"])
        torch.cuda.current_stream(self.device).wait_stream(side)
        g_prefix, g_head = torch.cuda.CUDAGraph(), torch.cuda.CUDAGraph()
        with torch.cuda.graph(g_prefix):
            static["embodied"] = self.prefix(static["images"], static["input_ids"], static["attention_mask"])
        with torch.cuda.graph(g_head):
            static["actions"] = self.head(static["embodied"], static["state"], static["noise"])
        self._graphs = (g_prefix, g_head, static)

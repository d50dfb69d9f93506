"""Build the policy the node's parameters ask for: the scripted expert, or a model bundle on one backend.

The backend is named by a string parameter and maps to one class each; nothing else chooses between them.
"""
from __future__ import annotations

import dataclasses

BACKENDS = ("onnxruntime", "torch", "tensorrt")


@dataclasses.dataclass(frozen=True)
class BackendParams:
    backend: str = "onnxruntime"
    threads: int = 1  # CPU inference threads (onnxruntime intra-op, torch.set_num_threads)
    torch_device: str = "cpu"
    torch_compile: bool = False
    torch_cuda_graphs: bool = False
    torch_prefix_cache: bool = False  # the prompt's per-task part once per task (exact; docs/gpu_inference.md)
    torch_fused_head: bool = False  # Euler loop with its step-invariant work hoisted (exact)
    torch_fp8: str = "none"  # FP8 E4M3 linear layers: none | lm | vlm | all | "pattern=fp8|bf16,..." (approximate)
    tensorrt_precision: str = "bf16"
    seed: int = 0  # flow-matching noise generator
    noise_scale: float = 1.0  # flow start noise: 1 samples as trained, 0 = deterministic (checked by ModelPolicy)

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"backend={self.backend!r} is unknown; known: {', '.join(BACKENDS)}")


def make_backend(bundle, params: BackendParams):
    if params.backend == "onnxruntime":
        from .onnxruntime_backend import OnnxRuntimeBackend, OnnxRuntimeConfig

        return OnnxRuntimeBackend(bundle, OnnxRuntimeConfig(intra_op_threads=params.threads))
    if params.backend == "torch":
        from .torch_backend import TorchBackend, TorchBackendConfig

        return TorchBackend.from_bundle(bundle, TorchBackendConfig(
            device=params.torch_device, num_threads=params.threads, compile=params.torch_compile,
            cuda_graphs=params.torch_cuda_graphs, prefix_cache=params.torch_prefix_cache,
            fused_head=params.torch_fused_head, fp8=params.torch_fp8))
    from .tensorrt_backend import TensorRTBackend, TensorRTConfig

    return TensorRTBackend(bundle, TensorRTConfig(precision=params.tensorrt_precision))


def make_model_policy(bundle_path: str, params: BackendParams, **expected):
    """Load + verify the bundle, refuse it when it disagrees with `expected` (check_compatible keys), build the
    backend and return a ModelPolicy."""
    from .bundle import check_compatible, load_bundle
    from .policy import ModelPolicy

    if not bundle_path:
        raise ValueError("policy=bundle needs the bundle_path parameter (a folder made by `vla-jepa export`)")
    bundle = load_bundle(bundle_path)
    check_compatible(bundle.manifest, **expected)
    return ModelPolicy(bundle, make_backend(bundle, params), seed=params.seed, noise_scale=params.noise_scale)

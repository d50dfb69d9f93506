"""`TensorRTBackend`: a bundle's ONNX graph(s) as TensorRT engines (TensorRT >= 10.15 Python API).

    - engines are built from the bundle's ONNX with FP16 or BF16 (or FP32), with a persistent timing cache;
    - engine cache key = GPU name + TensorRT version + ONNX SHA-256 + precision: <bundle>/engines/<graph>-<key>.engine
      (a different GPU, TensorRT or graph never loads a stale engine);
    - I/O buffers are preallocated once on the GPU (torch tensors); a chained graph's output buffer IS the next
      graph's input buffer (no copy); everything runs on one CUDA stream; CUDA events time each graph.

TensorRT cannot be installed on the development machines (see FRANKA_SIM_AND_RUNTIMES.md): this module imports
`tensorrt` only when a backend is built. What can be checked without it lives here too:
`check_tensorrt_support(onnx_model)` compares the graph with the ONNX-parser support list in
tensorrt_onnx_ops.yaml (the targeted version, with its source).
"""
from __future__ import annotations

import dataclasses
import hashlib
import time
from functools import lru_cache
from pathlib import Path

import numpy as np
import yaml

from .bundle import Bundle

SUPPORT_FILE = Path(__file__).with_name("tensorrt_onnx_ops.yaml")
PRECISIONS = ("fp16", "bf16", "fp32")
MIN_TENSORRT = (10, 15)  # RMSNormalization import (10.15); Attention -> IAttention since 10.14


# ------------------------------------------------------------------------------------------ checks without TensorRT

@lru_cache(maxsize=1)
def load_support() -> dict:
    data = yaml.safe_load(SUPPORT_FILE.read_text())
    data["supported"] = frozenset(data["supported"])
    return data


def check_tensorrt_support(model) -> dict:
    """onnx.ModelProto -> {target_version, ops, unsupported, problems}; `problems` empty means the parser of the
    targeted TensorRT version accepts every node (op type, opset range, Attention restrictions)."""
    import onnx

    support = load_support()
    problems: list[str] = []
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is None or not support["min_opset"] <= opset <= support["max_opset"]:
        problems.append(f"opset {opset} outside TensorRT {support['target_version']}'s range "
                        f"[{support['min_opset']}, {support['max_opset']}]")
    nodes = list(model.graph.node)
    for fn in model.functions:  # local functions are inlined by the parser: check their bodies as well
        nodes += list(fn.node)
    ops = sorted({n.op_type for n in nodes if n.domain in ("", "ai.onnx")})
    custom = sorted({f"{n.domain}::{n.op_type}" for n in nodes if n.domain not in ("", "ai.onnx")}
                    - {f"{f.domain}::{f.name}" for f in model.functions})
    unsupported = [op for op in ops if op not in support["supported"]]
    problems += [f"op {op} is not supported by the TensorRT {support['target_version']} ONNX parser"
                 for op in unsupported]
    problems += [f"custom-domain op {op} needs a TensorRT plugin" for op in custom]
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    ranks = {v.name: len(v.type.tensor_type.shape.dim) for v in
             list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output)}
    for n in nodes:
        if n.op_type != "Attention":
            continue
        for i, name in enumerate(list(n.input)[:4]):
            if name and ranks.get(name, 4) != 4:
                problems.append(f"Attention {n.name}: input {i} ({name}) has rank {ranks[name]}, TensorRT needs 4D")
        if any(list(n.input)[4:]):
            problems.append(f"Attention {n.name}: past_key/past_value/nonpad_kv_seqlen inputs are unsupported")
        if sum(1 for o in n.output if o) > 1:
            problems.append(f"Attention {n.name}: only the first output is supported")
        for a in n.attribute:
            if a.name in ("softcap", "qk_matmul_output_mode") and (a.f or a.i):
                problems.append(f"Attention {n.name}: attribute {a.name} is unsupported")
    return {"target_version": support["target_version"], "opset": opset, "ops": ops, "unsupported": unsupported,
            "problems": problems}


def engine_cache_key(gpu_name: str, tensorrt_version: str, onnx_sha256: str, precision: str) -> str:
    """16 hex chars identifying an engine: it is only valid for this GPU, TensorRT version, graph and precision."""
    text = f"{gpu_name}|{tensorrt_version}|{onnx_sha256}|{precision}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text).strip("_")


# ------------------------------------------------------------------------------------------ the backend

@dataclasses.dataclass(frozen=True)
class TensorRTConfig:
    precision: str = "bf16"  # fp16 | bf16 | fp32 (fp32 everywhere else)
    device: int = 0  # CUDA device index
    workspace_gib: float = 4.0
    builder_optimization_level: int = 3  # 0..5; higher = longer build, maybe faster engine
    rebuild: bool = False  # ignore cached engines

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision={self.precision!r} must be one of {PRECISIONS}")
        if not self.workspace_gib > 0:
            raise ValueError(f"workspace_gib={self.workspace_gib} must be > 0")
        if not 0 <= self.builder_optimization_level <= 5:
            raise ValueError(f"builder_optimization_level={self.builder_optimization_level} must be in [0, 5]")


def import_tensorrt():
    """`import tensorrt`, checking the version (>= 10.15); clear errors when it is absent."""
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise RuntimeError("TensorRT is not installed (pip install tensorrt-cu12 on a machine with an NVIDIA GPU "
                           f"and access to NVIDIA's package index): {exc}") from None
    major, minor = (int(x) for x in trt.__version__.split(".")[:2])
    if (major, minor) < MIN_TENSORRT:
        raise RuntimeError(f"TensorRT {trt.__version__} is too old: the exported graphs need >= "
                           f"{MIN_TENSORRT[0]}.{MIN_TENSORRT[1]} (ONNX Attention + RMSNormalization import)")
    return trt


def build_engine(onnx_path: Path, config: TensorRTConfig, timing_cache_path: Path, log=print) -> bytes:
    """Parse the ONNX graph and build a serialized engine; reads and updates the timing cache."""
    trt = import_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path}: {errors}")
    bconf = builder.create_builder_config()
    bconf.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(config.workspace_gib * (1 << 30)))
    bconf.builder_optimization_level = config.builder_optimization_level
    if config.precision == "fp16":
        bconf.set_flag(trt.BuilderFlag.FP16)
    elif config.precision == "bf16":
        bconf.set_flag(trt.BuilderFlag.BF16)
    cache_bytes = timing_cache_path.read_bytes() if timing_cache_path.exists() else b""
    cache = bconf.create_timing_cache(cache_bytes)
    bconf.set_timing_cache(cache, False)  # (cache, ignore_mismatch)
    t0 = time.perf_counter()
    serialized = builder.build_serialized_network(network, bconf)
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build an engine from {onnx_path} (precision {config.precision})")
    timing_cache_path.write_bytes(memoryview(bconf.get_timing_cache().serialize()))
    log(f"built TensorRT engine for {onnx_path.name} ({config.precision}) in {time.perf_counter() - t0:.1f} s")
    return bytes(memoryview(serialized))


class TensorRTBackend:
    """One engine per bundle graph, preallocated device I/O, one CUDA stream."""

    name = "tensorrt"

    def __init__(self, bundle: Bundle, config: TensorRTConfig = TensorRTConfig(), log=print) -> None:
        import torch

        trt = import_tensorrt()
        if not torch.cuda.is_available():
            raise RuntimeError("TensorRTBackend needs a CUDA GPU (torch.cuda.is_available() is False)")
        self.config = config
        self.device = torch.device("cuda", config.device)
        torch.cuda.set_device(self.device)
        self._torch = torch
        self.graphs = bundle.manifest.graphs
        gpu = torch.cuda.get_device_name(self.device)
        cache_dir = bundle.engine_cache_dir
        cache_dir.mkdir(parents=True, exist_ok=True)
        timing_cache = cache_dir / f"timing-{_slug(gpu)}-trt{trt.__version__}.cache"
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self.engine_paths: list[Path] = []
        self.engines, self.contexts = [], []
        for g in self.graphs:
            key = engine_cache_key(gpu, trt.__version__, bundle.manifest.files[g.file], config.precision)
            path = cache_dir / f"{g.name}-{key}.engine"
            if config.rebuild or not path.exists():
                path.write_bytes(build_engine(bundle.path(g.file), config, timing_cache, log))
            engine = self._runtime.deserialize_cuda_engine(path.read_bytes())
            if engine is None:
                raise RuntimeError(f"{path}: TensorRT could not deserialize the engine (delete it to rebuild)")
            self.engine_paths.append(path)
            self.engines.append(engine)
            self.contexts.append(engine.create_execution_context())
        self.stream = torch.cuda.Stream(self.device)
        self.buffers: dict[str, torch.Tensor] = {}  # tensor name -> preallocated device buffer
        for engine, context in zip(self.engines, self.contexts):
            for i in range(engine.num_io_tensors):
                name = engine.get_tensor_name(i)
                shape = tuple(engine.get_tensor_shape(name))
                dtype = torch.from_numpy(np.empty(0, dtype=trt.nptype(engine.get_tensor_dtype(name)))).dtype
                buf = self.buffers.get(name)
                if buf is None:
                    buf = self.buffers[name] = torch.empty(shape, dtype=dtype, device=self.device)
                elif tuple(buf.shape) != shape or buf.dtype != dtype:
                    raise RuntimeError(f"tensor {name}: {tuple(buf.shape)} {buf.dtype} in one engine, {shape} {dtype} "
                                       "in the next")
                context.set_tensor_address(name, buf.data_ptr())
        out = self.graphs[-1].outputs[0].name
        self._host_out = torch.empty(self.buffers[out].shape, dtype=torch.float32, pin_memory=True)
        self._events = [torch.cuda.Event(enable_timing=True) for _ in range(len(self.graphs) + 1)]

    def run(self, inputs: dict[str, np.ndarray]) -> tuple[np.ndarray, dict[str, float]]:
        torch = self._torch
        with torch.cuda.stream(self.stream):
            for g in self.graphs:
                for t in g.inputs:
                    if t.name in inputs:
                        buf = self.buffers[t.name]
                        buf.copy_(torch.from_numpy(np.ascontiguousarray(inputs[t.name])).to(buf.dtype),
                                  non_blocking=True)
            self._events[0].record(self.stream)
            for i, context in enumerate(self.contexts):
                if not context.execute_async_v3(self.stream.cuda_stream):
                    raise RuntimeError(f"TensorRT execution of graph {self.graphs[i].name} failed")
                self._events[i + 1].record(self.stream)
            out = self.buffers[self.graphs[-1].outputs[0].name]
            self._host_out.copy_(out.float(), non_blocking=True)
        self.stream.synchronize()
        timings = {f"{g.name}_ms": self._events[i].elapsed_time(self._events[i + 1]) for i, g in enumerate(self.graphs)}
        return self._host_out.numpy().copy(), timings


def verify_engine(bundle: Bundle, config: TensorRTConfig, iterations: int = 50, min_cosine: float = 0.99,
                  max_abs_error: float = 0.05, log=print) -> dict:
    """Build (or load) the engines, run TensorRT and onnxruntime on the same fixed inputs, compare, time both.

    Reduced precision is compared with looser limits than the fp32 export parity (defaults: cosine >= 0.99,
    max abs error <= 0.05 in normalised units)."""
    from .export import compare
    from .onnxruntime_backend import OnnxRuntimeBackend, OnnxRuntimeConfig

    trt_backend = TensorRTBackend(bundle, config, log)
    ort_backend = OnnxRuntimeBackend(bundle, OnnxRuntimeConfig(intra_op_threads=0))
    rng = np.random.default_rng(0)
    inputs = {}
    for t in bundle.manifest.inputs:
        if t.dtype == "int64":
            inputs[t.name] = np.ones(t.shape, np.int64)  # prompt ids/mask: replaced below
        else:
            inputs[t.name] = rng.random(t.shape, dtype=np.float32) if t.name == "images" else \
                rng.standard_normal(t.shape, dtype=np.float32)
    from .policy import PromptCache

    inputs["input_ids"], inputs["attention_mask"] = PromptCache(bundle).get("pick up the red cube")
    ref, _ = ort_backend.run(inputs)
    got, _ = trt_backend.run(inputs)
    result = compare(ref, got)
    times = []
    for _ in range(iterations):
        t0 = time.perf_counter()
        trt_backend.run(inputs)
        times.append((time.perf_counter() - t0) * 1e3)
    result.update({"precision": config.precision, "engines": [str(p) for p in trt_backend.engine_paths],
                   "tensorrt_median_ms": float(np.median(times)), "tensorrt_p99_ms": float(np.percentile(times, 99)),
                   "ok": result["finite"] and result["cosine"] >= min_cosine and result["max_abs_error"] <= max_abs_error,
                   "limits": {"min_cosine": min_cosine, "max_abs_error": max_abs_error}})
    return result

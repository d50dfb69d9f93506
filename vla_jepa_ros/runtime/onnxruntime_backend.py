"""`OnnxRuntimeBackend`: runs a bundle's ONNX graph(s) with onnxruntime (CPU by default; CUDA EP if asked)."""
from __future__ import annotations

import dataclasses
import time

import numpy as np

from .bundle import Bundle

_OPT_LEVELS = ("disable", "basic", "extended", "all")


@dataclasses.dataclass(frozen=True)
class OnnxRuntimeConfig:
    intra_op_threads: int = 1  # this machine: 1 (the sim needs the other core); 0 = onnxruntime's default
    inter_op_threads: int = 1
    graph_optimization: str = "all"  # disable | basic | extended | all
    allow_spinning: bool = False  # busy-wait threads: lower latency, but burns a core the sim may need
    providers: tuple[str, ...] = ("CPUExecutionProvider",)

    def __post_init__(self) -> None:
        if self.intra_op_threads < 0 or self.inter_op_threads < 0:
            raise ValueError(f"intra_op_threads={self.intra_op_threads}, inter_op_threads={self.inter_op_threads} "
                             "must be >= 0")
        if self.graph_optimization not in _OPT_LEVELS:
            raise ValueError(f"graph_optimization={self.graph_optimization!r} must be one of {_OPT_LEVELS}")


def session_options(config: OnnxRuntimeConfig):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = config.intra_op_threads
    so.inter_op_num_threads = config.inter_op_threads
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL  # one chain of ops; parallelism is intra-op
    so.graph_optimization_level = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL, "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}[config.graph_optimization]
    so.enable_mem_pattern = True  # static shapes: plan memory once
    so.enable_cpu_mem_arena = True
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if config.allow_spinning else "0")
    so.add_session_config_entry("session.inter_op.allow_spinning", "1" if config.allow_spinning else "0")
    so.add_session_config_entry("session.set_denormal_as_zero", "1")
    so.log_severity_level = 3
    return so


class OnnxRuntimeBackend:
    """One onnxruntime session per bundle graph; graphs run in the manifest's order, outputs feed later graphs."""

    name = "onnxruntime"

    def __init__(self, bundle: Bundle, config: OnnxRuntimeConfig = OnnxRuntimeConfig()) -> None:
        import onnxruntime as ort

        available = ort.get_available_providers()
        missing = [p for p in config.providers if p not in available]
        if missing:
            raise ValueError(f"onnxruntime providers {missing} are not available (available: {available})")
        self.config = config
        self.graphs = bundle.manifest.graphs
        so = session_options(config)
        self.sessions = [ort.InferenceSession(str(bundle.path(g.file)), so, providers=list(config.providers))
                         for g in self.graphs]
        for g, s in zip(self.graphs, self.sessions):
            have = [i.name for i in s.get_inputs()]
            want = [t.name for t in g.inputs]
            if have != want:
                raise ValueError(f"{g.file}: graph inputs {have} disagree with the manifest {want}")

    def run(self, inputs: dict[str, np.ndarray]) -> tuple[np.ndarray, dict[str, float]]:
        env = dict(inputs)
        timings: dict[str, float] = {}
        out = None
        for g, s in zip(self.graphs, self.sessions):
            t0 = time.perf_counter()
            outs = s.run([t.name for t in g.outputs], {t.name: env[t.name] for t in g.inputs})
            timings[f"{g.name}_ms"] = (time.perf_counter() - t0) * 1e3
            env.update({t.name: o for t, o in zip(g.outputs, outs)})
            out = outs[0]
        return out, timings

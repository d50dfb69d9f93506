"""`vla-jepa bench`: where the policy's time goes, per backend, on this machine.

In-process part (no ROS): every backend runs ModelPolicy.infer on the same observations, interleaved in rounds so
that load from other processes hits all backends alike. Per backend: median and p99 of the whole call, and the
stage medians (preprocess = resize + normalise, tokenize (cached), VLM prefix, head (4 Euler steps of the DiT),
postprocess = checks + de-normalisation), and the ratio to torch eager measured in the same run.

Across processes (ROS; rclpy is imported only here): the policy node runs the bundle on onnxruntime in its own
process; this process publishes camera frames (stamp = publish time), robot state and a RUNNING task, and
receives the chunks. For each frame, the first chunk computed from it gives end-to-end latency = receive time -
frame stamp; minus the chunk's model time (inference_ms) that is the stack overhead (waiting for the inference
tick, decoding, preprocessing, DDS both ways).
"""
from __future__ import annotations

import dataclasses
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from ..core.types import Observation

# torch-graphs: CUDA graphs; torch-graphs-host: the same with the frames resized by OpenCV on the host (on CUDA the
# torch variants resize on the GPU)
BACKEND_NAMES = ("torch", "torch-compile", "torch-graphs", "torch-graphs-host", "onnxruntime", "tensorrt")
STAGES = ("preprocess_ms", "prefix_ms", "head_ms", "postprocess_ms")


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    bundle: str | None = None  # None: export a random-weight bundle of `preset`
    preset: str = "tiny"
    backends: tuple[str, ...] = ("torch", "onnxruntime")
    device: str = "cpu"
    threads: int = 1
    iterations: int = 100
    warmup: int = 5
    e2e_seconds: float = 20.0
    e2e_rate_hz: float = 10.0
    e2e_width_px: int = 320  # raw rgb8 frames (640x480 and larger need the stack's DDS profile: docs/cameras.md)
    e2e_height_px: int = 240
    e2e_transport: str = "raw"  # raw: Image rgb8; compressed: CompressedImage JPEG (encoded by the bench)
    plot: str = "bench_latency.png"
    json_path: str = ""

    def __post_init__(self) -> None:
        unknown = [b for b in self.backends if b not in BACKEND_NAMES]
        if unknown:
            raise ValueError(f"unknown backends {unknown}; known: {', '.join(BACKEND_NAMES)}")
        if self.iterations < 2 or self.warmup < 0 or self.e2e_seconds < 0 or not self.e2e_rate_hz > 0:
            raise ValueError(f"iterations={self.iterations} must be >= 2, warmup={self.warmup} >= 0, "
                             f"e2e_seconds={self.e2e_seconds} >= 0, e2e_rate_hz={self.e2e_rate_hz} > 0")
        if self.e2e_transport not in ("raw", "compressed"):
            raise ValueError(f"e2e_transport={self.e2e_transport!r} must be raw or compressed")


def random_bundle(preset: str, out_dir: Path, log=print) -> Path:
    """A bundle of `preset` with random (seeded) weights: latency does not depend on the weights' values."""
    import torch
    from vla_jepa.checkpoint import save_checkpoint
    from vla_jepa.config import get_config
    from vla_jepa.model import make_model
    from vla_jepa.normalize import compute_stats

    from .export import ExportConfig, export_bundle

    torch.manual_seed(0)
    model = make_model(get_config(preset), with_world_model=False).eval()
    rng = np.random.default_rng(0)
    actions = np.concatenate([rng.uniform(-0.02, 0.02, (100, 6)), rng.integers(0, 2, (100, 1))], axis=1)
    ckpt = save_checkpoint(out_dir / "checkpoint", model, compute_stats(actions))
    export_bundle(ckpt, out_dir / "bundle", ExportConfig(parity_cases=1), log=log)
    return out_dir / "bundle"


def make_observation(cameras: tuple[str, ...], seed: int = 0) -> Observation:
    rng = np.random.default_rng(seed)
    return Observation(images={c: rng.integers(0, 256, (480, 640, 3), dtype=np.uint8) for c in cameras},
                       image_stamps_s={c: 0.0 for c in cameras}, state=rng.standard_normal(8).astype(np.float32) * 0.1,
                       instruction="put the red cube in the bowl", task_id="bench")


def make_bench_policy(name: str, bundle, config: BenchConfig, torch_model=None):
    """torch_model: the bundle's model loaded once (TorchBackend.load_model) for every torch variant."""
    from .policy import ModelPolicy

    if name.startswith("torch"):
        from .torch_backend import TorchBackend, TorchBackendConfig

        backend = TorchBackend.from_bundle(bundle, TorchBackendConfig(
            device=config.device, num_threads=config.threads, compile=name == "torch-compile",
            cuda_graphs=name.startswith("torch-graphs"), device_resize="off" if name.endswith("-host") else "auto"),
            model=torch_model)
        backend.name = name
    elif name == "onnxruntime":
        from .onnxruntime_backend import OnnxRuntimeBackend, OnnxRuntimeConfig

        backend = OnnxRuntimeBackend(bundle, OnnxRuntimeConfig(intra_op_threads=config.threads))
    else:
        from .tensorrt_backend import TensorRTBackend

        backend = TensorRTBackend(bundle)
    return ModelPolicy(bundle, backend)


def bench_backends(bundle, config: BenchConfig, log=print) -> dict[str, list[dict[str, float]]]:
    """-> backend name -> per-call stage timings (ms), interleaved rounds of 10 calls per backend."""
    obs = make_observation(bundle.manifest.cameras)
    policies = {}
    torch_model = None  # loaded once for every torch variant (an ONNX-only bundle's recovery takes seconds)
    if sum(name.startswith("torch") for name in config.backends) > 1:
        from .torch_backend import TorchBackend

        torch_model = TorchBackend.load_model(bundle)
    for name in config.backends:
        try:
            policies[name] = make_bench_policy(name, bundle, config, torch_model)
        except (RuntimeError, ValueError, ImportError) as exc:
            log(f"skipping backend {name}: {exc}")
    for name, p in policies.items():
        for _ in range(config.warmup):
            p.infer(obs)
        log(f"warmed up {name}")
    samples: dict[str, list[dict[str, float]]] = {n: [] for n in policies}
    done = 0
    while done < config.iterations:
        n = min(10, config.iterations - done)
        for name, p in policies.items():
            for _ in range(n):
                p.infer(obs)
                samples[name].append(dict(p.last_timings_ms))
        done += n
        log(f"  {done}/{config.iterations} calls per backend")
    return samples


def summarize(samples: dict[str, list[dict[str, float]]]) -> list[dict]:
    rows = []
    eager = samples.get("torch")
    eager_median = float(np.median([s["total_ms"] for s in eager])) if eager else float("nan")
    for name, runs in samples.items():
        total = np.array([s["total_ms"] for s in runs])
        row = {"backend": name, "median_ms": float(np.median(total)), "p99_ms": float(np.percentile(total, 99)),
               "model_median_ms": float(np.median([s["model_ms"] for s in runs]))}
        for stage in STAGES:
            vals = [s[stage] for s in runs if stage in s]
            row[stage] = float(np.median(vals)) if vals else float("nan")
        row["ratio_to_torch_eager"] = row["median_ms"] / eager_median
        rows.append(row)
    return rows


def format_table(rows: list[dict], title: str) -> str:
    w = max([len("backend")] + [len(r["backend"]) for r in rows]) + 2
    head = (f"{'backend':<{w}}{'median ms':>10}{'p99 ms':>9}{'preproc':>9}{'prefix':>9}{'head':>9}{'postproc':>9}"
            f"{'vs torch':>10}")
    lines = [title, head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['backend']:<{w}}{r['median_ms']:>10.2f}{r['p99_ms']:>9.2f}{r['preprocess_ms']:>9.2f}"
                     f"{r['prefix_ms']:>9.2f}{r['head_ms']:>9.2f}{r['postprocess_ms']:>9.2f}"
                     f"{r['ratio_to_torch_eager']:>9.2f}x")
    return "\n".join(lines)


def measure_end_to_end(bundle_root: Path, seconds: float, rate_hz: float, width_px: int = 320, height_px: int = 240,
                       log=print, transport: str = "raw") -> dict:
    """Policy node in its own process; image published -> chunk received, minus model time. Needs ROS 2."""
    import array
    import threading

    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from sensor_msgs.msg import CompressedImage, Image

    from vla_jepa_interfaces.msg import ActionChunk, RobotState, TaskStatus

    from ..bringup import Bringup
    from ..ros.conversions import s_to_stamp, stamp_to_s
    from ..core.auth import Signer, load_key
    from ..core.images import encode_compressed
    from ..ros.auth import sign_message
    from ..ros.diagnostics import follow_status
    from ..ros.qos import RELIABLE_QOS, SENSOR_QOS, STATUS_QOS
    from .bundle import load_bundle

    from ..ros.dds import use_stack_profile

    use_stack_profile()  # this process publishes the frames: its participant needs the profile too
    cams = load_bundle(bundle_root, verify_hashes=False).manifest.cameras
    params = {"policy": {"use_sim_time": False, "policy": "bundle", "bundle_path": str(bundle_root),
                         "backend": "onnxruntime", "threads": 1, "cameras": list(cams), "inference_rate_hz": 100.0,
                         "max_image_age_s": 1.0, "max_camera_skew_s": 0.1, "use_ground_truth": False,
                         "image_transport": transport}}
    context = rclpy.Context()
    rclpy.init(context=context)
    node = Node("bench_e2e", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    received: list[tuple[float, float, float]] = []  # (receive time, frame stamp, inference_ms)
    node.create_subscription(ActionChunk, "/vla/action_chunk",
                             lambda m: received.append((time.time(), stamp_to_s(m.header.stamp), m.inference_ms)),
                             RELIABLE_QOS)
    policy_values: dict[str, str] = {}  # the policy node's newest /diagnostics (its own frame counters)
    follow_status(node, "policy", policy_values)
    msg_type, suffix = (Image, "image_raw") if transport == "raw" else (CompressedImage, "compressed")
    pubs = {c: node.create_publisher(msg_type, f"/cameras/{c}/{suffix}", SENSOR_QOS) for c in cams}
    state_pub = node.create_publisher(RobotState, "/franka/state", RELIABLE_QOS)
    status_pub = node.create_publisher(TaskStatus, "/vla/task_status", STATUS_QOS)
    rgb = np.random.default_rng(0).integers(0, 256, (height_px, width_px, 3), dtype=np.uint8)
    running = True

    def spin():
        while running and context.ok():
            executor.spin_once(timeout_sec=0.01)

    spinner = threading.Thread(target=spin, daemon=True)
    spinner.start()
    with tempfile.TemporaryDirectory() as logs, Bringup("sim", nodes=["policy"], extra_params=params,
                                                        log_dir=logs) as b:
        # the policy takes signed status only, stamped after it started: sign each one, republish it every 0.5 s
        signer = Signer(load_key(b.auth_key_file), "bench")
        next_status_s = 0.0
        data = array.array("B", rgb.tobytes())
        warm_until = time.time() + 8.0  # node start-up + first inferences
        stop_at = warm_until + seconds
        first_measured = None
        published = 0  # frame pairs published while the policy node's subscriptions were matched
        while time.time() < stop_at:
            b.check()
            now = time.time()
            if now >= next_status_s:
                next_status_s = now + 0.5
                status_pub.publish(sign_message(signer, TaskStatus(
                    task_id="bench", instruction="put the red cube in the bowl", state=TaskStatus.RUNNING)))
            if first_measured is None and now >= warm_until:
                first_measured = now
            st = RobotState(ee_position_m=[0.4, 0.0, 0.3], ee_rpy_rad=[np.pi, 0.0, 0.0], gripper_width_m=0.08,
                            gripper_open_commanded=True)
            state_pub.publish(st)
            matched = all(p.get_subscription_count() > 0 for p in pubs.values())
            for c in cams:
                if transport == "raw":
                    msg = Image(height=height_px, width=width_px, encoding="rgb8", step=width_px * 3, data=data)
                else:  # encoded per frame, as a driver does (the encode time is part of the measured latency)
                    msg = CompressedImage(format="jpeg", data=encode_compressed(rgb, "jpeg", 90))
                msg.header.stamp = s_to_stamp(now)
                pubs[c].publish(msg)
            published += matched
            time.sleep(max(0.0, 1.0 / rate_hz - (time.time() - now)))
        time.sleep(1.5)  # the last chunks, and one more /diagnostics with the node's frame counts
    running = False
    spinner.join(timeout=2)
    node.destroy_node()
    context.try_shutdown()
    first: dict[float, tuple[float, float]] = {}
    for recv, stamp, model_ms in received:
        if first_measured is not None and stamp >= first_measured and stamp not in first:
            first[stamp] = (recv, model_ms)
    if not first:
        raise RuntimeError(f"no chunks received in {seconds} s from the policy node")
    e2e = np.array([(recv - stamp) * 1e3 for stamp, (recv, _) in first.items()])
    overhead = np.array([(recv - stamp) * 1e3 - model for stamp, (recv, model) in first.items()])
    model = np.array([m for _, m in first.values()])
    node_counts = {k: v for k, v in policy_values.items() if k.startswith("frames.")}
    received = min(int(node_counts.get(f"frames.{c}.received", 0)) for c in cams)
    return {"frames": len(first), "published_pairs_measured": int(round(seconds * rate_hz)),
            "published_pairs": published, "node_received_pairs": received, "node_frame_counts": node_counts,
            "e2e_ms": e2e.tolist(), "overhead_ms": overhead.tolist(),
            "e2e_p50_ms": float(np.percentile(e2e, 50)), "e2e_p99_ms": float(np.percentile(e2e, 99)),
            "model_p50_ms": float(np.percentile(model, 50)),
            "overhead_p50_ms": float(np.percentile(overhead, 50)), "overhead_p99_ms": float(np.percentile(overhead, 99))}


def save_histogram(samples: dict, e2e: dict | None, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2 if e2e else 1, figsize=(12 if e2e else 7, 4), squeeze=False)
    ax = axes[0, 0]
    for name, runs in samples.items():
        ax.hist([s["total_ms"] for s in runs], bins=40, alpha=0.6, label=name)
    ax.set_xlabel("Policy.infer latency (ms)")
    ax.set_ylabel("calls")
    ax.set_title("in-process, per backend")
    ax.legend()
    if e2e:
        ax = axes[0, 1]
        ax.hist(e2e["e2e_ms"], bins=40, alpha=0.6, label="image published -> chunk received")
        ax.hist(e2e["overhead_ms"], bins=40, alpha=0.6, label="minus model time (stack overhead)")
        ax.set_xlabel("ms")
        ax.set_title("across processes (policy node, onnxruntime)")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run_bench(config: BenchConfig, log=print) -> dict:
    from .bundle import load_bundle

    with tempfile.TemporaryDirectory(prefix="vla_jepa_bench_") as tmp:
        root = Path(config.bundle) if config.bundle else random_bundle(config.preset, Path(tmp), log)
        bundle = load_bundle(root)
        m = bundle.manifest
        samples = bench_backends(bundle, config, log)
        rows = summarize(samples)
        title = (f"{m.model_id} (preset {m.preset}, {len(m.cameras)} x 640x480 -> {m.image_size_px} px, "
                 f"{len(m.graphs)} graph(s)), {config.threads} thread(s), {config.iterations} calls, medians")
        print(format_table(rows, title))
        e2e = None
        if config.e2e_seconds > 0:
            try:
                e2e = measure_end_to_end(root, config.e2e_seconds, config.e2e_rate_hz, config.e2e_width_px,
                                         config.e2e_height_px, log, config.e2e_transport)
                kind = "rgb8" if config.e2e_transport == "raw" else "JPEG"
                print(f"end to end across processes ({e2e['frames']} frame pairs of {config.e2e_width_px}x"
                      f"{config.e2e_height_px} {kind} at {config.e2e_rate_hz:g} Hz, policy "
                      f"node on onnxruntime): p50 {e2e['e2e_p50_ms']:.1f} ms, p99 {e2e['e2e_p99_ms']:.1f} ms; model "
                      f"p50 {e2e['model_p50_ms']:.1f} ms; stack overhead p50 {e2e['overhead_p50_ms']:.1f} ms, "
                      f"p99 {e2e['overhead_p99_ms']:.1f} ms")
                counts = e2e["node_frame_counts"]
                print(f"  frame pairs producing a chunk: {e2e['frames']} of {e2e['published_pairs_measured']} "
                      f"published in the measured {config.e2e_seconds:g} s; the policy node received "
                      f"{e2e['node_received_pairs']} of the {e2e['published_pairs']} pairs published since it "
                      f"subscribed (warm-up included); its counts: " + ", ".join(f"{k[len('frames.'):]}={v}" for k, v in counts.items()))
            except ImportError as exc:
                log(f"skipping the end-to-end measurement (ROS 2 not importable: {exc})")
        if config.plot:
            save_histogram(samples, e2e, config.plot)
            log(f"saved {config.plot}")
        result = {"title": title, "rows": rows, "e2e": e2e}
        if config.json_path:
            Path(config.json_path).write_text(json.dumps(result, indent=2))
        return result

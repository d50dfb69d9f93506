"""`vla-jepa`: the project's command line. Each command imports only what it needs.

    vla-jepa demo [--episodes N]          simulated Franka, the learned policy on one task through the ROS graph
    vla-jepa export CHECKPOINT OUT_DIR    model bundle (ONNX + manifest), parity-checked against torch
    vla-jepa import SRC OUT_DIR           released VLA-JEPA weights (official .pt, LeRobot folder, HF folders) ->
                                          training checkpoint (and, with --bundle, a model bundle)
    vla-jepa build-engine BUNDLE          TensorRT engines for this GPU (cached in BUNDLE/engines)
    vla-jepa verify-engine BUNDLE         TensorRT vs onnxruntime on the same inputs, with latency
    vla-jepa bench [--bundle B]           latency per backend: stages, ratio to torch eager, stack overhead
    vla-jepa <command> --help             details of one command
"""
from __future__ import annotations

import argparse
import math
import signal
import sys
from pathlib import Path
from typing import Callable

Command = Callable[[list[str]], int]
COMMANDS: dict[str, tuple[str, Command]] = {}


def command(name: str, summary: str) -> Callable[[Command], Command]:
    def register(fn: Command) -> Command:
        if name in COMMANDS:
            raise ValueError(f"command {name!r} registered twice")
        COMMANDS[name] = (summary, fn)
        return fn
    return register


def _parser(name: str, description: str) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(prog=f"vla-jepa {name}", description=description,
                                   formatter_class=argparse.ArgumentDefaultsHelpFormatter)


def _number(kind: type, low: float | None = None, high: float | None = None, above: float | None = None):
    """An argparse type: a finite number of `kind` in [low, high] (and > above); the error names the value and
    the limit, and comes before anything starts."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not {'a whole number' if kind is int else 'a number'}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
        if low is not None and value < low:
            raise argparse.ArgumentTypeError(f"{value} must be >= {low}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"{value} must be <= {high}")
        if above is not None and value <= above:
            raise argparse.ArgumentTypeError(f"{value} must be > {above}")
        return value
    parse.__name__ = kind.__name__  # argparse's "invalid <name> value" fallback
    return parse


COUNT = _number(int, low=1)  # episodes, threads, iterations ...
NON_NEGATIVE = _number(int, low=0)
POSITIVE_S = _number(float, above=0.0)  # durations, rates
FRACTION = _number(float, low=0.0, high=1.0)
IMAGE_PX = _number(int, low=16, high=4096)


DEFAULT_MODEL = "models/tiny_sim"  # the shipped bundle (scripts/make_default_model.sh, models/tiny_sim/README.md)


@command("demo", "run the simulated Franka: send a task through the ROS graph, print a summary, save images")
def _demo(argv: list[str]) -> int:
    from .sim.demo import DEMO_LAYOUT_SEED, INSTRUCTION

    p = _parser("demo", "Bring up the sim graph (franky-sim FR3 in MuJoCo, cameras, policy, controller, task "
                        f"manager), send {INSTRUCTION!r} through /vla/execute_task, wait for the outcome and print "
                        "a summary. By default the shipped learned bundle drives the arm from the cameras and the "
                        f"robot state, on layout {DEMO_LAYOUT_SEED}: a layout it never trained on (its success "
                        "rates on held-out layouts are in its model card, models/tiny_sim/README.md). "
                        "With --episodes N: N layouts from --seed on, and a success rate.")
    p.add_argument("--episodes", type=COUNT, default=1, help="number of randomised episodes")
    p.add_argument("--seed", type=int, default=DEMO_LAYOUT_SEED, help="seed of the first episode's layout")
    p.add_argument("--out-dir", default="demo_out", help="where image strips and the summary go")
    p.add_argument("--policy", default="model", choices=["expert", "model", "bundle"],
                   help="model: the shipped learned bundle models/tiny_sim (cameras + robot state only); expert: "
                        "scripted, reads the simulator's ground truth; bundle: the folder given with --bundle")
    p.add_argument("--bundle", default=None, help="model bundle folder (with --policy bundle)")
    p.add_argument("--noise-scale", type=FRACTION, default=0.0,
                   help="flow start noise of a learned policy: 0 gives deterministic chunks (the demo repeats "
                        "itself up to timing), 1 samples them as trained (as `vla-jepa eval` does by default)")
    p.add_argument("--task-timeout-s", type=_number(float, above=0.0, high=3600.0), default=60.0,
                   help="sim-time limit of each task")
    p.add_argument("--robot-host", default=None,
                   help="loopback address for franky-sim (e.g. 127.0.0.2, with another ROS_DOMAIN_ID, to run beside "
                        "another sim graph)")
    args = p.parse_args(argv)
    from .graph import share_file
    from .sim.demo import run_demo

    if args.policy == "bundle" and not args.bundle:
        p.error("--policy bundle needs --bundle DIR")
    bundle = str(share_file(DEFAULT_MODEL)) if args.policy == "model" else args.bundle
    summary = run_demo(episodes=args.episodes, seed=args.seed, out_dir=args.out_dir,
                       policy="expert" if args.policy == "expert" else "bundle", bundle=bundle,
                       noise_scale=args.noise_scale, task_timeout_s=args.task_timeout_s, robot_host=args.robot_host)
    return 0 if summary["successes"] == summary["episodes"] else 1  # any failed episode is a failed demo


@command("export", "checkpoint -> model bundle (ONNX opset 23 with Attention ops, parity-checked, hashed manifest)")
def _export(argv: list[str]) -> int:
    p = _parser("export", "Export the inference path (VLM prefix -> embodied states -> Euler-integrated DiT head) "
                          "of a vla_jepa checkpoint to a model bundle: static-shape ONNX (dynamo, opset 23), "
                          "onnx.checker, TensorRT op check, then onnxruntime-vs-torch parity on fixed inputs and "
                          "noise BEFORE anything is written to OUT_DIR.")
    p.add_argument("checkpoint", help="checkpoint folder (model.safetensors, config.json, stats, tokenizer.json)")
    p.add_argument("out_dir", help="bundle folder to create")
    p.add_argument("--layout", default="split", choices=["split", "single"],
                   help="prefix.onnx + head.onnx (stage timings, same speed) or one policy.onnx")
    p.add_argument("--cameras", default="front,wrist", help="camera names in the model's view order")
    p.add_argument("--step-period-s", type=POSITIVE_S, default=0.1, help="time between chunk steps on the robot")
    p.add_argument("--model-id", default="", help="default: vla-jepa-<preset>-<graph hash>")
    p.add_argument("--embodiment-tag", default="", help="stats entry to use (default: the only one)")
    p.add_argument("--simplify", action="store_true", help="run onnxslim on the graphs (must be installed)")
    p.add_argument("--min-cosine", type=_number(float, low=-1.0, high=1.0), default=0.999,
                   help="parity gate: smallest cosine between the onnxruntime and torch chunks")
    p.add_argument("--max-abs-error", type=POSITIVE_S, default=1e-3, help="bound on the normalised chunk")
    p.add_argument("--parity-cases", type=COUNT, default=3,
                   help="instruction/noise cases the parity gate compares")
    p.add_argument("--no-torch-weights", action="store_true", help="leave out torch/ (TorchBackend weights)")
    p.add_argument("--overwrite", action="store_true")
    args = p.parse_args(argv)
    from .runtime.export import ExportConfig, ParityError, export_bundle

    config = ExportConfig(layout=args.layout, cameras=tuple(c for c in args.cameras.split(",") if c),
                          step_period_s=args.step_period_s, model_id=args.model_id,
                          embodiment_tag=args.embodiment_tag, simplify=args.simplify, min_cosine=args.min_cosine,
                          max_abs_error=args.max_abs_error, parity_cases=args.parity_cases,
                          torch_weights=not args.no_torch_weights, overwrite=args.overwrite)
    try:
        export_bundle(args.checkpoint, args.out_dir, config)
    except (ParityError, ValueError, FileNotFoundError) as exc:
        print(f"vla-jepa export: {exc}", file=sys.stderr)
        return 1
    return 0


@command("import", "released VLA-JEPA weights (official .pt, LeRobot policy folder, HF Qwen3-VL + V-JEPA2 folders) "
                   "-> training checkpoint, optionally a bundle")
def _import(argv: list[str]) -> int:
    p = _parser("import", "Read VLA-JEPA weights in the layout they were published in and write a vla_jepa training "
                          "checkpoint (safetensors + config + stats + tokenizer, all recorded). SRC: the release's "
                          ".pt (config.yaml and dataset_statistics.json one folder up), a LeRobot vla_jepa policy "
                          "folder, or a Hugging Face Qwen3-VL folder (new head; --vjepa adds the V-JEPA2 encoder). "
                          "Every tensor must find its place, or nothing is written.")
    p.add_argument("src", help="release .pt, LeRobot policy folder, or HF Qwen3-VL folder")
    p.add_argument("out_dir", help="training checkpoint folder to write")
    p.add_argument("--layout", default="auto", choices=["auto", "official", "lerobot", "hf"])
    p.add_argument("--preset", default="paper", help="model sizes the weights have (tiny for test checkpoints)")
    p.add_argument("--vjepa", default=None, help="HF V-JEPA2 folder (with an HF Qwen3-VL SRC)")
    p.add_argument("--tokenizer", default=None, help="tokenizer.json or a folder with one (default: the preset's; "
                                                     "paper: the Qwen3-VL tokenizer built by make install)")
    p.add_argument("--stats", default=None, help="dataset_statistics.json to use instead of the source's")
    p.add_argument("--seed", type=int, default=0, help="seed of the new head (HF folders)")
    p.add_argument("--bundle", default=None, help="also export a model bundle to this folder (ONNX + manifest)")
    p.add_argument("--cameras", default="", help="bundle camera names in view order (default: the names the "
                                                  "weights were trained with)")
    p.add_argument("--step-period-s", type=float, default=0.1, help="bundle: time between chunk steps")
    p.add_argument("--overwrite", action="store_true")
    args = p.parse_args(argv)
    import json

    from vla_jepa.importer import ImportError_, import_checkpoint

    out = Path(args.out_dir)
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        print(f"vla-jepa import: {out} exists and is not empty (pass --overwrite to replace it)", file=sys.stderr)
        return 1
    try:
        res = import_checkpoint(args.src, out, preset=args.preset, vjepa=args.vjepa, tokenizer=args.tokenizer,
                                layout=args.layout, seed=args.seed, stats_path=args.stats)
    except (ImportError_, ValueError, KeyError, FileNotFoundError) as exc:
        print(f"vla-jepa import: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 1
    print(f"imported {res.layout} weights into {out} ({len(res.ignored)} unused tensors ignored)")
    for note in res.notes:
        print(f"  note: {note}")
    if not args.bundle:
        return 0
    from .runtime.export import ExportConfig, ParityError, export_bundle

    meta = json.loads((out / "import.json").read_text())
    cameras = tuple(c for c in args.cameras.split(",") if c) or tuple(meta["cameras"])
    if not all(cameras):
        print("vla-jepa import: the source does not name its cameras: pass --cameras a,b (view order)",
              file=sys.stderr)
        return 1
    try:
        export_bundle(out, args.bundle, ExportConfig(cameras=cameras, step_period_s=args.step_period_s,
                                                     overwrite=args.overwrite, action_space=meta["action_space"],
                                                     state_names=tuple(meta["state_names"])))
    except (ParityError, ValueError, FileNotFoundError) as exc:
        print(f"vla-jepa import: {exc}", file=sys.stderr)
        return 1
    return 0


def _trt_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("bundle", help="model bundle folder")
    p.add_argument("--precision", default="bf16", choices=["fp16", "bf16", "fp32"])
    p.add_argument("--device", type=NON_NEGATIVE, default=0, help="CUDA device index")
    p.add_argument("--workspace-gib", type=POSITIVE_S, default=4.0, help="TensorRT builder workspace (GiB)")
    p.add_argument("--opt-level", type=_number(int, low=0, high=5), default=3, help="TensorRT builder optimization level 0..5")
    p.add_argument("--rebuild", action="store_true", help="ignore cached engines")


def _trt_config(args):
    from .runtime.tensorrt_backend import TensorRTConfig

    return TensorRTConfig(precision=args.precision, device=args.device, workspace_gib=args.workspace_gib,
                          builder_optimization_level=args.opt_level, rebuild=args.rebuild)


@command("build-engine", "build (or reuse) the TensorRT engines of a bundle for this GPU (TensorRT >= 10.15)")
def _build_engine(argv: list[str]) -> int:
    p = _parser("build-engine", "Build TensorRT engines from the bundle's ONNX into <bundle>/engines, keyed by GPU "
                                "name + TensorRT version + ONNX SHA-256 + precision, with a timing cache.")
    _trt_args(p)
    args = p.parse_args(argv)
    from .runtime.bundle import load_bundle
    from .runtime.tensorrt_backend import TensorRTBackend

    try:
        backend = TensorRTBackend(load_bundle(args.bundle), _trt_config(args))
    except (RuntimeError, ValueError) as exc:
        print(f"vla-jepa build-engine: {exc}", file=sys.stderr)
        return 1
    for path in backend.engine_paths:
        print(path)
    return 0


@command("verify-engine", "build the TensorRT engines, compare with onnxruntime on the same inputs, print latency")
def _verify_engine(argv: list[str]) -> int:
    p = _parser("verify-engine", "Build (or load) the engines, run TensorRT and onnxruntime on identical inputs, "
                                 "print cosine / max-abs error and TensorRT latency; exit 1 when outside the limits.")
    _trt_args(p)
    p.add_argument("--iterations", type=COUNT, default=100, help="timed calls per variant")
    p.add_argument("--min-cosine", type=_number(float, low=-1.0, high=1.0), default=0.99,
                   help="smallest cosine between the TensorRT and onnxruntime chunks")
    p.add_argument("--max-abs-error", type=POSITIVE_S, default=0.05,
                   help="largest absolute difference between the TensorRT and onnxruntime chunks")
    args = p.parse_args(argv)
    from .runtime.bundle import load_bundle
    from .runtime.tensorrt_backend import verify_engine

    try:
        r = verify_engine(load_bundle(args.bundle), _trt_config(args), args.iterations, args.min_cosine,
                          args.max_abs_error)
    except (RuntimeError, ValueError) as exc:
        print(f"vla-jepa verify-engine: {exc}", file=sys.stderr)
        return 1
    print(f"TensorRT {r['precision']} vs onnxruntime: cosine {r['cosine']:.6f} (>= {args.min_cosine}), max abs "
          f"error {r['max_abs_error']:.3e} (<= {args.max_abs_error}); latency median {r['tensorrt_median_ms']:.2f} "
          f"ms, p99 {r['tensorrt_p99_ms']:.2f} ms -> {'OK' if r['ok'] else 'FAILED'}")
    return 0 if r["ok"] else 1


@command("bench", "policy latency per backend and preset (stage breakdown, ratio to torch eager, stack overhead)")
def _bench(argv: list[str]) -> int:
    p = _parser("bench", "Median/p99 latency per backend with the stage breakdown (preprocess, VLM prefix, head "
                         "steps, postprocess), ratio to torch eager measured in the same run, and the end-to-end "
                         "latency across processes (image published -> chunk received) minus model time. Prints a "
                         "table and saves a latency histogram.")
    p.add_argument("--bundle", default=None, help="bench this bundle (default: export --preset with random weights)")
    p.add_argument("--preset", default="tiny", help="preset for a random-weight bundle when --bundle is not given")
    p.add_argument("--backends", default="torch,onnxruntime",
                   help="comma list of torch, torch-compile, torch-graphs (CUDA graphs; --device cuda), "
                        "torch-graphs-host (the same, frames resized on the host, not on the GPU), onnxruntime, "
                        "tensorrt")
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda)")
    p.add_argument("--threads", type=COUNT, default=1, help="CPU inference threads")
    p.add_argument("--iterations", type=COUNT, default=100, help="timed calls per variant")
    p.add_argument("--warmup", type=NON_NEGATIVE, default=5, help="untimed calls first")
    p.add_argument("--e2e-seconds", type=_number(float, low=0.0), default=20.0, help="0 skips the across-processes measurement")
    p.add_argument("--e2e-rate-hz", type=POSITIVE_S, default=10.0, help="camera rate for the end-to-end measurement")
    p.add_argument("--e2e-size", default="320x240", help="camera frame WxH for the end-to-end measurement")
    p.add_argument("--e2e-transport", default="raw", choices=("raw", "compressed"),
                   help="end-to-end frames as Image rgb8 (raw) or CompressedImage JPEG (compressed)")
    p.add_argument("--plot", default="bench_latency.png", help="histogram PNG ('' to skip)")
    p.add_argument("--json", default="", help="also write the results as JSON here")
    args = p.parse_args(argv)
    from .runtime.bench import BenchConfig, run_bench

    config = BenchConfig(bundle=args.bundle, preset=args.preset,
                         backends=tuple(b for b in args.backends.split(",") if b), device=args.device,
                         threads=args.threads, iterations=args.iterations, warmup=args.warmup,
                         e2e_seconds=args.e2e_seconds, e2e_rate_hz=args.e2e_rate_hz,
                         e2e_width_px=int(args.e2e_size.split("x")[0]), e2e_height_px=int(args.e2e_size.split("x")[1]),
                         e2e_transport=args.e2e_transport,
                         plot=args.plot,
                         json_path=args.json)
    run_bench(config)
    return 0


@command("libero-eval", "evaluate a model bundle on LIBERO / LIBERO-PRO (paper protocol; needs .venv-libero)")
def _libero_eval(argv: list[str]) -> int:
    p = _parser("libero-eval", "Run BUNDLE on LIBERO suites under the VLA-JEPA paper's protocol (upright cameras "
                               "resized to 224 INTER_AREA, 8-d state, 10 wait steps, 7-step chunks open loop, "
                               "gripper 1-2*(g>0.5)). Writes results.json, results.md (95 % Wilson intervals, "
                               "LIBERO-Plus-shaped robustness table for LIBERO-PRO suites) and videos/. Run it "
                               "with .venv-libero/bin/vla-jepa (make libero).")
    p.add_argument("bundle", nargs="?", help="model bundle folder (manifest.yaml + graphs), e.g. from "
                                             "`vla-jepa export`")
    p.add_argument("--suite", nargs="+", default=["libero_spatial"],
                   help="suites: libero_spatial libero_object libero_goal libero_10 libero_90, or LIBERO-PRO "
                        "variants with _lan _object _swap _task")
    p.add_argument("--pro", action="store_true", help="also run the four LIBERO-PRO variants of each suite")
    p.add_argument("--tasks", type=NON_NEGATIVE, nargs="+", default=None, help="task ids (default: all)")
    p.add_argument("--episodes-per-task", type=COUNT, default=50, help="episodes per task (init states 0..N-1)")
    p.add_argument("--first-init-state", type=NON_NEGATIVE, default=0, help="first fixed init state (held-out splits)")
    p.add_argument("--workers", type=NON_NEGATIVE, default=1, help="parallel episode processes (0: in this process)")
    p.add_argument("--threads", type=COUNT, default=1, help="inference threads per worker")
    p.add_argument("--backend", default="onnxruntime", choices=["onnxruntime", "torch"])
    p.add_argument("--max-steps", type=NON_NEGATIVE, default=0, help="policy steps per episode (0: the suite's: "
                                                              "220/280/300/520/400)")
    p.add_argument("--execute-steps", type=COUNT, default=7, help="steps of each chunk run before re-querying")
    p.add_argument("--executor", action="store_true",
                   help="run chunks through the stack's ChunkExecutor on sim time instead of open loop")
    p.add_argument("--units", default="libero", choices=["libero", "robot"],
                   help="libero: the bundle speaks LIBERO controller units and the paper's state (released "
                        "checkpoint, libero-collect data); robot: metres/radians and the stack's state")
    p.add_argument("--camera-px", type=IMAGE_PX, default=256, help="LIBERO render size")
    p.add_argument("--client-image-px", type=IMAGE_PX, default=224, help="INTER_AREA resize before the policy")
    p.add_argument("--default-rendering", action="store_true",
                   help="LIBERO's default look (MSAA, shadows, reflections; about 6x slower on CPU)")
    p.add_argument("--no-video", action="store_true", help="do not save the first episode of each task")
    p.add_argument("--out-dir", default="libero_out", help="results.json, results.md, videos/")
    p.add_argument("--factory", default=None,
                   help="instead of a bundle: 'module:function' returning a policy with infer(observation)")
    args = p.parse_args(argv)
    if (args.bundle is None) == (args.factory is None):
        p.error(f"give a BUNDLE or --factory, not both/neither (bundle={args.bundle!r}, factory={args.factory!r})")
    from .libero.evaluate import expand_suites, run_eval
    from .libero.protocol import ProtocolConfig
    from .libero.rollout import PolicySpec

    suites = expand_suites(args.suite, args.pro)
    spec = PolicySpec(factory=args.factory, threads=args.threads) if args.factory else \
        PolicySpec(bundle=args.bundle, backend=args.backend, threads=args.threads)
    protocol = ProtocolConfig(suite=suites[0], max_steps=args.max_steps, camera_px=args.camera_px,
                              client_image_px=args.client_image_px, execute_steps=args.execute_steps,
                              executor=args.executor, units=args.units, cheap_rendering=not args.default_rendering)
    report = run_eval(spec, suites, args.out_dir, episodes_per_task=args.episodes_per_task, tasks=args.tasks,
                      workers=args.workers, protocol=protocol, video=not args.no_video,
                      first_init_state=args.first_init_state)
    print((Path(args.out_dir) / "results.md").read_text())
    return 1 if report["crashed"] else 0


@command("libero-collect", "scripted LIBERO demonstrations -> training dataset (+ LeRobot v3); needs .venv-libero")
def _libero_collect(argv: list[str]) -> int:
    p = _parser("libero-collect", "Generate scripted pick-and-place demonstrations on LIBERO: states and actions "
                                  "without cameras, then a bit-exact replay with cameras; only successes are kept. "
                                  "Writes the training package's native dataset to OUT (and LeRobot v3.0 with "
                                  "--lerobot DIR). Assets are read from the installed wheels, never copied.")
    p.add_argument("out", help="output folder (native vla_jepa episode dataset)")
    p.add_argument("--suite", default="libero_spatial")
    p.add_argument("--tasks", type=NON_NEGATIVE, nargs="+", default=None, help="task ids (default: all)")
    p.add_argument("--episodes-per-task", type=COUNT, default=10, help="attempts per task (init states)")
    p.add_argument("--first-init-state", type=NON_NEGATIVE, default=0, help="first init state (keep eval ones held out)")
    p.add_argument("--image-px", type=IMAGE_PX, default=128, help="stored frame size (upright, INTER_AREA)")
    p.add_argument("--camera-px", type=IMAGE_PX, default=256, help="render size before the resize")
    p.add_argument("--workers", type=NON_NEGATIVE, default=1, help="parallel processes (0: in this process)")
    p.add_argument("--lerobot", default=None, help="also write a LeRobot v3.0 dataset here")
    p.add_argument("--overwrite", action="store_true")
    args = p.parse_args(argv)
    from .libero.collect import run_collect

    report = run_collect(args.out, suite=args.suite, tasks=args.tasks, episodes_per_task=args.episodes_per_task,
                         first_init_state=args.first_init_state, image_px=args.image_px, camera_px=args.camera_px,
                         workers=args.workers, lerobot_dir=args.lerobot, overwrite=args.overwrite)
    print(report["table"])
    return 0 if report["kept"] > 0 else 1


@command("bags-to-dataset", "recorded episode bags -> training dataset (+ LeRobot v3), aligned without future leakage")
def _bags_to_dataset(argv: list[str]) -> int:
    p = _parser("bags-to-dataset", "Align camera frames, robot state and the executed action chunks of each recorded "
                                   "episode on the policy's step grid (inputs at or before each step, targets from "
                                   "the executed chunks), write the training package's dataset to OUT (with "
                                   "normalisation stats) and a LeRobot v3 copy to OUT/lerobot_v3. Unreadable bags "
                                   "are reported by name and skipped.")
    p.add_argument("bags", nargs="+", help="episode bag folders, or folders containing them")
    p.add_argument("out", help="output dataset folder")
    p.add_argument("--cameras", nargs="+", default=["front", "wrist"], help="camera names, in model view order")
    p.add_argument("--image-size-px", type=_number(int, low=0, high=4096), default=0, help="resize frames to this square size (0 = keep)")
    p.add_argument("--keep-failed", action="store_true", help="also keep episodes whose task did not succeed")
    p.add_argument("--relabel-expert", action="store_true",
                   help="targets: what the scripted expert would do at each step, from the recorded state and "
                        "/sim/object_poses (DAgger: record a learned policy with `vla-jepa eval --record`, relabel, "
                        "train on it). Keeps failed episodes: their new labels show how to recover")
    p.add_argument("--counterfactual-colours", action="store_true",
                   help="with --relabel-expert: also write each episode's reach phase (up to the first gripper "
                        "close) once per other cube in the scene, the instruction naming that cube and the expert's "
                        "labels for it. Same pictures, different words, different actions: a model can no longer "
                        "ignore which colour it is asked for")
    p.add_argument("--named-object", action="store_true",
                   help="track one more object, 'named_object': where the object the instruction names is at each "
                        "step (needs /sim/object_poses). A model trained with the object loss then learns to find "
                        "the named cube from the words, and an action head that reads the estimate gets the offset "
                        "to its target directly")
    p.add_argument("--min-steps", type=COUNT, default=8, help="skip episodes shorter than this")
    p.add_argument("--include-repaired", action="store_true",
                   help="also use bags that were cut short (repaired with bag-info --repair, or truncated); they "
                        "are skipped by default since part of the episode is missing")
    p.add_argument("--no-lerobot", action="store_true", help="do not write the LeRobot v3 copy")
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset in OUT")
    a = p.parse_args(argv)
    from .dataset.convert import main_from_args

    return main_from_args(a.bags, a.out, a.cameras, a.image_size_px, a.keep_failed, a.min_steps, not a.no_lerobot,
                          a.overwrite, a.relabel_expert, a.counterfactual_colours, a.named_object,
                          a.include_repaired)


@command("bag-info", "summarise recorded episode bags (topics, counts, outcome, drops); --repair fixes killed ones")
def _bag_info(argv: list[str]) -> int:
    from .recording.__main__ import main as bag_main

    return bag_main(argv)


def _episode_args(p: argparse.ArgumentParser, seed: int) -> None:
    p.add_argument("--episodes-per-family", type=COUNT, default=5,
                   help="episodes of each task family (2 families: twice as many episodes in all)")
    p.add_argument("--seed", type=int, default=seed, help="layout seed of the first episode (episode k: seed + k)")
    p.add_argument("--families", nargs="+", default=["pick_up", "put_in_bowl"],
                   help="task families: pick_up ('pick up the <colour> cube'), put_in_bowl")
    p.add_argument("--task-timeout-s", type=POSITIVE_S, default=40.0, help="sim-time limit of each task")
    p.add_argument("--robot-host", default=None,
                   help="loopback address for franky-sim (e.g. 127.0.0.2, with another ROS_DOMAIN_ID, to run beside another sim graph; a second graph in the same domain is refused)")
    p.add_argument("--target", choices=["random", "near"], default="random",
                   help="which cube each task names: random (colours drawn from --seed), or near: the cube nearest "
                        "the robot, far from the front camera and often under the arm (harder for a learned "
                        "policy: demonstrations, rollouts or an evaluation of that case)")


@command("collect", "scripted-expert demonstrations through the sim graph, one recorded MCAP episode bag each")
def _collect(argv: list[str]) -> int:
    p = _parser("collect", "Run randomised episodes of every task family with the scripted expert through the full "
                           "simulated graph, recording each task as an episode bag in OUT. Then: vla-jepa "
                           "bags-to-dataset OUT DATASET.")
    p.add_argument("out", help="folder for the episode bags")
    _episode_args(p, seed=0)
    p.add_argument("--aim-noise-m", type=_number(float, low=0.0), default=0.0,
                   help="DART-style recovery data: the expert steers to points off target by a random xy offset of "
                        "this std (m; redrawn every 1.5 s, none in 30%% of the periods), so the episodes pass through "
                        "near-misses; convert them with bags-to-dataset --relabel-expert, which labels every step "
                        "with the exact expert's correction. 0.015 is a good start")
    a = p.parse_args(argv)
    if not 0.0 <= a.aim_noise_m <= 0.05:
        p.error(f"--aim-noise-m {a.aim_noise_m} must be in [0, 0.05] m (the cube is 0.04 m wide)")
    from .flywheel.commands import collect

    return collect(a.out, a.episodes_per_family, a.seed, tuple(a.families), a.task_timeout_s, a.robot_host, a.aim_noise_m,
                   a.target)


@command("render-layouts", "thousands of random sim layouts, rendered, with object positions (localisation pretraining)")
def _render_layouts(argv: list[str]) -> int:
    p = _parser("render-layouts", "Draw random tabletop layouts, render the policy's cameras with the arm in poses "
                                  "taken from recorded episode bags (or at home), and write a training dataset whose "
                                  "samples carry every object's position and no actions. Pretrain the backbone on it "
                                  "with vla-jepa-train --train.action-loss-weight 0 --train.object-loss-weight 1 "
                                  "--train.no-use-wm-loss, then train on demonstrations with --init-from.")
    p.add_argument("out", help="dataset folder to write")
    p.add_argument("--layouts", type=COUNT, default=1000, help="number of layouts (layout k: seed + k)")
    p.add_argument("--seed", type=int, default=100_000, help="seed of the first layout; keep apart from eval's 1000..")
    p.add_argument("--arm-poses-from", nargs="*", default=[], metavar="BAGS",
                   help="episode bags whose recorded joint positions pose the arm (default: the home pose)")
    p.add_argument("--poses-per-layout", type=COUNT, default=2, help="renders per layout, each with another arm pose")
    p.add_argument("--image-size-px", type=IMAGE_PX, default=128, help="stored image side (the tiny preset's is 128)")
    p.add_argument("--robot-host", default="127.0.0.1", help="loopback address for the franky-sim servers")
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset in OUT")
    a = p.parse_args(argv)
    from .flywheel.layouts import main_from_args

    return main_from_args(a.out, a.layouts, a.seed, a.arm_poses_from, a.poses_per_layout, a.image_size_px,
                          a.robot_host, a.overwrite)


def _backend_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", default="onnxruntime", choices=["onnxruntime", "torch", "tensorrt"],
                   help="inference backend of the policy node")
    p.add_argument("--threads", type=COUNT, default=1, help="inference threads")
    p.add_argument("--noise-scale", type=FRACTION, default=1.0,
                   help="start noise of the flow-matching steps: 1 samples chunks as trained, 0 makes them "
                        "deterministic (every chunk starts at the prior's mean)")


@command("eval", "closed-loop success rate of a model bundle in franky-sim through the full ROS graph")
def _eval(argv: list[str]) -> int:
    p = _parser("eval", "Run randomised episodes per task family with a model bundle in the policy node (sim, "
                        "controller, task manager; recorder with --record). Prints per-episode outcomes and a "
                        "success table with 95 % Wilson intervals; saves an image strip per episode.")
    p.add_argument("bundle", help="model bundle folder")
    _episode_args(p, seed=1000)
    _backend_args(p)
    p.add_argument("--out-dir", default="eval_out", help="image strips and eval_results.json")
    p.add_argument("--record", default=None, metavar="DIR", help="also record every episode as a bag in DIR")
    p.add_argument("--min-success-rate", type=FRACTION, default=0.0,
                   help="exit with code 1 when the overall success rate is below this (0..1; 0: never)")
    p.add_argument("--same-layouts", action="store_true",
                   help="every family on the same layouts and cube (episode k: layout seed + k; one graph per "
                        "family, strips in OUT_DIR/FAMILY) and a table comparing families layout by layout; "
                        "without it families alternate over the layouts, so family rates mix task and layout")
    a = p.parse_args(argv)
    from .flywheel.commands import evaluate

    return evaluate(a.bundle, a.episodes_per_family, a.seed, tuple(a.families), a.backend, a.threads, a.out_dir,
                    a.record, a.task_timeout_s, a.robot_host, a.noise_scale, same_layouts=a.same_layouts,
                    target=a.target, min_success_rate=a.min_success_rate)


@command("offline-eval", "how closely a bundle reproduces the recorded chunks of a dataset (seconds, no simulator)")
def _offline_eval(argv: list[str]) -> int:
    p = _parser("offline-eval", "Feed recorded images, state and instruction of a dataset (bags-to-dataset or "
                                "libero-collect output) through the bundle's inference path and compare the "
                                "predicted chunks with the recorded actions: translation error per step next to a "
                                "never-move policy's, yaw error, gripper agreement; split into reach / after grasp. "
                                "On the training set it says whether the model fit its data; on held-out "
                                "demonstrations whether it generalises. Closed-loop success is `vla-jepa eval`.")
    p.add_argument("bundle", help="model bundle folder")
    p.add_argument("dataset", help="dataset folder (meta.json + episode_*.npz)")
    p.add_argument("--stride", type=COUNT, default=3, help="evaluate every STRIDE-th step of each episode")
    p.add_argument("--max-episodes", type=NON_NEGATIVE, default=0, help="only the first N episodes (0 = all)")
    _backend_args(p)
    p.add_argument("--json", default=None, metavar="FILE", help="also write the table as JSON")
    a = p.parse_args(argv)
    from .flywheel.offline_eval import run

    return run(a.bundle, a.dataset, a.stride, a.max_episodes, a.backend, a.threads, a.json, a.noise_scale)


@command("keygen", "write a new key for signing control messages (mode 0600); give its path to every node")
def _keygen(argv: list[str]) -> int:
    p = _parser("keygen", "Write a fresh per-deployment key (32 random bytes as hex, mode 0600) for the HMAC tags "
                          "on action chunks, task status and e-stop releases. Set auth_key_file: PATH for every node "
                          "(or -p '*.auth_key_file=PATH' with vla-jepa-bringup); copy the file to the other hosts "
                          "over a secure channel, keeping mode 0600 (docs/security.md).")
    p.add_argument("path", help="key file to write")
    p.add_argument("--force", action="store_true", help="replace an existing key file")
    a = p.parse_args(argv)
    from .core.auth import AuthError, write_key

    try:
        path = write_key(a.path, force=a.force)
    except (AuthError, OSError) as exc:
        print(f"vla-jepa keygen: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {path} (mode 0600)")
    return 0


@command("estop-release", "release the e-stop with a signed message (the interrupted task does not resume)")
def _estop_release(argv: list[str]) -> int:
    p = _parser("estop-release", "Publish one signed EStopRelease on /franka/estop_release. The controller "
                                 "accepts only this (Bool false on /franka/estop is refused); the task that was "
                                 "running when the e-stop was engaged stays stopped, a new task moves the arm.")
    p.add_argument("--key", required=True, help="the deployment's key file (auth_key_file of the nodes)")
    p.add_argument("--operator", default="", help="who releases (logged by the controller)")
    p.add_argument("--reason", default="", help="why (logged by the controller)")
    p.add_argument("--wait-s", type=float, default=5.0, help="how long to wait for the controller to subscribe")
    a = p.parse_args(argv)
    from .core.auth import AuthError, load_key

    try:
        key = load_key(a.key)
    except AuthError as exc:
        print(f"vla-jepa estop-release: {exc}", file=sys.stderr)
        return 1
    from .ros.auth import publish_estop_release

    if not publish_estop_release(key, a.operator, a.reason, a.wait_s):
        print(f"vla-jepa estop-release: no subscriber on /franka/estop_release within --wait-s {a.wait_s} s "
              "(is the controller running in this ROS_DOMAIN_ID?)", file=sys.stderr)
        return 1
    print("e-stop release sent")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        width = max(map(len, COMMANDS))
        lines = [f"  {n.ljust(width)}  {summary}" for n, (summary, _) in COMMANDS.items()]
        print(f"usage: vla-jepa COMMAND [ARGS]   (vla-jepa COMMAND --help for details)\n\ncommands:\n"
              + "\n".join(lines))
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        import difflib

        close = difflib.get_close_matches(name, COMMANDS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        print(f"vla-jepa: unknown command {name!r}{hint} (known: {', '.join(COMMANDS)})", file=sys.stderr)
        return 2
    # SIGTERM (timeout, systemd, a CI runner) unwinds like Ctrl-C, so running graphs are stopped cleanly
    signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))
    from .bringup import NodeDied

    try:
        return COMMANDS[name][1](rest)
    except _user_errors() as exc:  # a missing or wrong input: the one thing to tell, not a traceback
        print(f"vla-jepa {name}: {exc}", file=sys.stderr)
        return 2
    except NodeDied as exc:  # the run failed: which node and why, not a traceback
        print(f"vla-jepa {name}: {exc}", file=sys.stderr)
        return 1


def _user_errors() -> tuple[type[Exception], ...]:
    """Exceptions that mean the user named something that is not there or not what it should be (a bundle, a
    dataset, a folder of bags, a running graph in the way): exit code 2 with their one-line message."""
    from vla_jepa.data import DataError

    from .bringup import GraphAlreadyRunning
    from .runtime.bundle import BundleError

    return (GraphAlreadyRunning, BundleError, DataError, FileNotFoundError, NotADirectoryError, FileExistsError)


if __name__ == "__main__":
    raise SystemExit(main())

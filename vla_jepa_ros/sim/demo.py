"""`make demo` / `vla-jepa demo`: the whole closed loop in simulation.

Brings up task_manager, sim, policy and franka_controller as separate processes, sends
"put the red cube in the bowl" through /vla/execute_task, waits for the outcome on /vla/task_status and prints
a summary (outcome, time, chunks, controller clips, latencies), with a progress line every few seconds while the
task runs; saves a captioned strip and a video of the front camera per episode.
With episodes > 1, runs that many randomised layouts (seeds seed, seed+1, ...) and prints the success rate.
"""
from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np

INSTRUCTION = "put the red cube in the bowl"
# The layout `make demo` shows: held out from every training round of models/tiny_sim (its evaluation set
# 2000..2019), one the shipped bundle solves 10 times in 10 with deterministic chunks (noise_scale 0; sampled as
# trained: 10 in 14). Layout 0, the demo's layout before it had a learned default, puts the red cube 7 mm inside
# the edge of the layout range; the bundle fails it (0/5).
DEMO_LAYOUT_SEED = 2011
SIM_NODES = ("task_manager", "sim", "policy", "franka_controller")


class GraphProbe:
    """An in-process rclpy node that drives the graph and records what the demo reports."""

    def __init__(self, frame_period_s: float = 0.1, max_frames: int = 3000) -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rosgraph_msgs.msg import Clock
        from sensor_msgs.msg import Image

        from vla_jepa_interfaces.msg import ActionChunk, ObjectPoses, RobotState, TaskStatus
        from vla_jepa_interfaces.srv import ExecuteTask

        from ..ros.qos import RELIABLE_QOS, SENSOR_QOS, STATUS_QOS

        self._rclpy = rclpy
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node("demo_probe", context=self.context)
        self.lock = threading.Lock()
        self.status = None
        self.robot_state = None
        self.sim_time_s = 0.0
        self.chunks: list[tuple[float, float, float]] = []  # (sim receive time, chunk stamp, inference_ms)
        self.frames: list[tuple[float, np.ndarray]] = []  # (stamp s, (H, W, 3) RGB) of the running task
        self.frame_period_s, self.max_frames = frame_period_s, max_frames
        self.object_poses: dict = {}
        self.record = False
        self.counters: dict[str, int] = {}
        n = self.node
        n.create_subscription(TaskStatus, "/vla/task_status", self._on_status, STATUS_QOS)
        n.create_subscription(RobotState, "/franka/state", self._on_state, RELIABLE_QOS)
        n.create_subscription(ActionChunk, "/vla/action_chunk", self._on_chunk, RELIABLE_QOS)
        n.create_subscription(Image, "/cameras/front/image_raw", self._on_image, SENSOR_QOS)
        n.create_subscription(Clock, "/clock", self._on_clock, 10)
        n.create_subscription(ObjectPoses, "/sim/object_poses", self._on_poses, 10)
        self.execute = n.create_client(ExecuteTask, "/vla/execute_task")
        self.ExecuteTask = ExecuteTask
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(n)
        self._spinning = threading.Event()
        self._spinning.set()
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        while self._spinning.is_set() and self.context.ok():
            self.executor.spin_once(timeout_sec=0.05)

    def _on_status(self, msg) -> None:
        self.status = msg

    def _on_state(self, msg) -> None:
        self.robot_state = msg
        if self.record and msg.task_id:  # counters reset when the task ends: keep the episode's largest
            for key in ("steps_executed", "steps_clipped", "chunks_stale", "chunks_rejected"):
                self.counters[key] = max(self.counters.get(key, 0), int(getattr(msg, key)))

    def _on_poses(self, msg) -> None:
        from ..ros.conversions import object_poses_to_dict

        self.object_poses = object_poses_to_dict(msg)

    def _on_clock(self, msg) -> None:
        self.sim_time_s = msg.clock.sec + msg.clock.nanosec * 1e-9

    def _on_chunk(self, msg) -> None:
        if self.record:
            stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
            with self.lock:
                self.chunks.append((self.sim_time_s, stamp, float(msg.inference_ms)))

    def _on_image(self, msg) -> None:
        from ..ros.conversions import image_to_rgb, stamp_to_s

        t = stamp_to_s(msg.header.stamp)
        running = self.status is not None and self.status.state == 1  # between tasks the next layout is on the table
        if self.record and running and len(self.frames) < self.max_frames and \
                (not self.frames or t - self.frames[-1][0] >= self.frame_period_s - 1e-6):
            with self.lock:
                self.frames.append((t, image_to_rgb(msg).copy()))

    def start_task(self, instruction: str, timeout_s: float, wait_s: float = 60.0, record: bool = False):
        deadline = time.monotonic() + wait_s
        while not self.execute.wait_for_service(timeout_sec=0.5):
            if time.monotonic() > deadline:
                raise TimeoutError("/vla/execute_task did not appear (is the task_manager running?)")
        future = self.execute.call_async(self.ExecuteTask.Request(instruction=instruction, timeout_s=float(timeout_s),
                                                                  record=record))
        while not future.done():
            if time.monotonic() > deadline:
                raise TimeoutError("/vla/execute_task did not answer")
            time.sleep(0.02)
        return future.result()

    def wait_ready(self, cameras=("front",), timeout_s: float = 90.0, check=None) -> None:
        """Wait until the sim publishes frames and the controller reports a connected arm."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if check:
                check()
            st = self.robot_state
            if st is not None and st.mode != 5 and self.sim_time_s > 0:
                return
            time.sleep(0.1)
        raise TimeoutError(f"graph not ready after {timeout_s} s (sim time {self.sim_time_s:.2f} s, "
                           f"robot state {'none' if self.robot_state is None else self.robot_state.mode})")

    def progress(self, instruction: str, task_start_sim_s: float) -> str:
        """One line on the running task: sim time, chunks and steps so far, where the success check sees it."""
        from .tasks import parse_instruction, progress_text

        spec = parse_instruction(instruction)
        where = progress_text(spec, self.object_poses) if spec and self.object_poses else ""
        steps = self.robot_state.steps_executed if self.robot_state is not None else 0
        return (f"{self.sim_time_s - task_start_sim_s:5.1f} s sim: {len(self.chunks)} chunks, {steps} steps"
                + (f"; {where}" if where else ""))

    def wait_outcome(self, task_id: str, wall_timeout_s: float, check=None, on_progress=None,
                     progress_period_s: float = 2.0):
        """The task's terminal TaskStatus. on_progress() is called every progress_period_s of wall time."""
        deadline = time.monotonic() + wall_timeout_s
        next_progress = time.monotonic() + progress_period_s
        while time.monotonic() < deadline:
            if check:
                check()
            if on_progress and time.monotonic() >= next_progress:
                next_progress += progress_period_s
                on_progress()
            s = self.status
            if s is not None and s.task_id == task_id and s.state >= 2:
                return s
            time.sleep(0.05)
        raise TimeoutError(f"task {task_id} had no outcome after {wall_timeout_s} s wall time")

    def close(self) -> None:
        """Stop the spin thread first, then tear down. (executor.shutdown() with executor.spin() still running in
        the other thread once left that thread looping on the GIL, which starved Bringup.stop for minutes.)"""
        self._spinning.clear()
        self._thread.join(timeout=2.0)
        self.executor.shutdown()
        self.node.destroy_node()
        self.context.try_shutdown()


def run_demo(episodes: int = 1, seed: int = DEMO_LAYOUT_SEED, out_dir: str = "demo_out", policy: str = "expert",
             bundle: str | None = None, instruction: str = INSTRUCTION, task_timeout_s: float = 60.0,
             params_file: str | None = None, verbose: bool = True, noise_scale: float | None = None) -> dict:
    """Run `episodes` episodes of `instruction` in the sim graph; returns the summary printed. noise_scale: the
    learned policy's flow start noise (None: the params file's)."""
    from ..bringup import Bringup, ensure_no_running_graph
    from ..flywheel.media import save_strip, write_video

    if episodes < 1:
        raise ValueError(f"episodes={episodes} must be >= 1")
    if bundle:
        policy = "bundle"
    if policy not in ("expert", "bundle") or (policy == "bundle" and not bundle):
        raise ValueError(f"policy={policy!r} bundle={bundle!r}: use policy='expert', or give a bundle folder")
    say = print if verbose else (lambda *a, **k: None)
    out = Path(out_dir)
    policy_params = {"policy": policy}
    if bundle:  # a learned policy must not see the simulator's ground truth
        policy_params.update(bundle_path=str(Path(bundle).resolve()), use_ground_truth=False)
        if noise_scale is not None:
            policy_params["noise_scale"] = float(noise_scale)
    extra = {"sim": {"layout_seed": int(seed)}, "policy": policy_params}
    results = []
    t_start = time.monotonic()
    ensure_no_running_graph()
    noise = "" if noise_scale is None else f", noise_scale {noise_scale:g}"
    driver = (f"{bundle} (cameras and robot state only{noise})" if bundle
              else "the scripted expert (simulator ground truth)")
    layouts = f"{seed}..{seed + episodes - 1}" if episodes > 1 else str(seed)
    say(f"[demo] policy: {driver}; layout seed {layouts}")
    with Bringup("sim", params_file=params_file, extra_params=extra, nodes=SIM_NODES) as graph:
        probe = GraphProbe()
        try:
            probe.wait_ready(check=graph.check)
            say(f"[demo] graph up in {time.monotonic() - t_start:.1f} s (logs in {graph.log_dir})")
            for k in range(episodes):
                with probe.lock:
                    probe.chunks.clear()
                    probe.frames.clear()
                    probe.counters = {}
                probe.record = True
                sim0, wall0 = probe.sim_time_s, time.monotonic()
                reply = probe.start_task(instruction, task_timeout_s)
                if not reply.accepted:
                    raise RuntimeError(f"task refused: {reply.message}")
                final = probe.wait_outcome(reply.task_id, wall_timeout_s=task_timeout_s * 10 + 60, check=graph.check,
                                           on_progress=lambda: say(f"[demo]   {probe.progress(instruction, sim0)}"))
                time.sleep(0.2)
                probe.record = False
                wall = time.monotonic() - wall0
                sim = probe.sim_time_s - sim0
                counters = dict(probe.counters)
                with probe.lock:
                    chunks = list(probe.chunks)
                    times, frames = [t for t, _ in probe.frames], [f for _, f in probe.frames]
                ages = np.array([max(0.0, rx - stamp) for rx, stamp, _ in chunks]) * 1e3 if chunks else np.zeros(1)
                infer = np.array([ms for *_, ms in chunks]) if chunks else np.zeros(1)
                outcome = {2: "SUCCEEDED", 3: "FAILED", 4: "CANCELED", 5: "ABORTED"}.get(final.state, str(final.state))
                name = out / f"episode_{k:03d}_seed_{seed + k}_front"
                strip = save_strip(frames, times, name.with_suffix(".png"),
                                   title=f"{instruction!r}: {outcome} in {final.elapsed_s:.1f} s (layout {seed + k})")
                video = write_video(name.with_suffix(".mp4"), frames, fps=round(1 / probe.frame_period_s)) \
                    if frames else ""
                r = {"episode": k, "seed": seed + k, "task_id": reply.task_id, "outcome": outcome,
                     "success": final.state == 2, "task_elapsed_s": float(final.elapsed_s), "sim_s": sim,
                     "wall_s": wall, "real_time_factor": sim / wall if wall > 0 else 0.0, "chunks": len(chunks),
                     **{k: counters.get(k, 0) for k in ("steps_executed", "steps_clipped", "chunks_stale",
                                                        "chunks_rejected")},
                     "inference_ms_p50": float(np.median(infer)),
                     "chunk_age_at_receipt_ms_p50": float(np.median(ages)),
                     "chunk_age_at_receipt_ms_p95": float(np.percentile(ages, 95)),
                     "strip": str(strip) if strip else "", "video": video, "message": final.message}
                results.append(r)
                why = "" if r["success"] else f" ({final.message})"
                say(f"[demo] episode {k + 1}/{episodes} seed {seed + k}: {outcome}{why} in {r['task_elapsed_s']:.1f} s sim "
                    f"({wall:.1f} s wall, RTF {r['real_time_factor']:.2f}); chunks {r['chunks']}, steps "
                    f"{r['steps_executed']}, clipped {r['steps_clipped']}, stale {r['chunks_stale']}; inference p50 "
                    f"{r['inference_ms_p50']:.2f} ms; chunk age at receipt p50 {r['chunk_age_at_receipt_ms_p50']:.0f} ms "
                    f"p95 {r['chunk_age_at_receipt_ms_p95']:.0f} ms; strip {r['strip']}, video {r['video']}")
        finally:
            probe.close()
    successes = sum(r["success"] for r in results)
    summary = {"instruction": instruction, "episodes": episodes, "successes": successes,
               "success_rate": successes / episodes, "results": results, "wall_s": time.monotonic() - t_start}
    say(f"[demo] {instruction!r}: {successes}/{episodes} succeeded ({100 * successes / episodes:.0f} %), "
        f"total {summary['wall_s']:.0f} s")
    return summary

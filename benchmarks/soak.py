"""Soak benchmark: back-to-back tasks of the learned policy through the whole simulated graph, recorder on.

    .venv/bin/python benchmarks/soak.py --minutes 30 --out benchmarks/results/soak.json

Runs tasks on layouts seed, seed+1, ... (families alternating) until --minutes of wall time have passed, while
watching the measured arm on /franka/ee_pose and each node's memory. Then it starts one more task, kills the
recorder with SIGKILL halfway through it, repairs that episode's bag and checks that it reads back. Prints:
tasks by outcome, resident memory per node at the start and the end, gaps in the controller's state stream
(> 2 periods of sim time: a missed control or publish deadline as seen from outside), measured TCP samples outside
the workspace box + margin or faster than 1.1 x max_speed_m_s, and the killed bag's integrity.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("ROS_DOMAIN_ID", str(101 + os.getpid() % 100))
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")

FAMILIES = ("pick up the {} cube", "put the {} cube in the bowl")
COLOURS = ("red", "green", "blue")


def rss_mb(pid: int) -> float:
    """Resident memory of a process (MB), 0 when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class ArmWatch:
    """Measured TCP samples (sim stamp s, xyz m) from /franka/ee_pose, on the probe's node."""

    def __init__(self, node) -> None:
        from geometry_msgs.msg import PoseStamped

        from vla_jepa_ros.ros.qos import RELIABLE_QOS

        self.samples: list[tuple[float, np.ndarray]] = []
        node.create_subscription(PoseStamped, "/franka/ee_pose", self._on_pose, RELIABLE_QOS)

    def _on_pose(self, msg) -> None:
        p = msg.pose.position
        self.samples.append((msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9, np.array([p.x, p.y, p.z])))

    def report(self, safety: dict, state_period_s: float, margin_m: float = 0.005) -> dict:
        if len(self.samples) < 2:
            return {"samples": len(self.samples)}
        t = np.array([s for s, _ in self.samples])
        xyz = np.stack([p for _, p in self.samples])
        lo = np.array(safety["workspace_min_m"], float)
        lo[2] = max(lo[2], safety.get("table_height_m", 0.0) + safety.get("min_height_above_table_m", 0.0))
        hi = np.array(safety["workspace_max_m"], float)
        outside = np.any((xyz < lo - margin_m) | (xyz > hi + margin_m), axis=1)
        dt = np.diff(t)
        ok = dt > 1e-6
        speed = np.linalg.norm(np.diff(xyz, axis=0)[ok], axis=1) / dt[ok]
        limit = float(safety["max_speed_m_s"])
        return {"samples": len(t), "outside_box_plus_5mm": int(outside.sum()),
                "worst_outside_m": float(np.max(np.maximum(lo - xyz, xyz - hi).max(axis=1))),
                "over_1_1x_speed": int((speed > 1.1 * limit).sum()), "max_speed_m_s": float(speed.max(initial=0.0)),
                "speed_limit_m_s": limit,
                "state_gaps_over_2_periods": int((dt > 2 * state_period_s).sum()),
                "longest_gap_s": float(dt.max(initial=0.0))}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=30.0, help="wall time of back-to-back tasks")
    ap.add_argument("--bundle", default="models/tiny_sim", help="model bundle the policy node runs")
    ap.add_argument("--seed", type=int, default=4000, help="layout seed of the first task")
    ap.add_argument("--task-timeout-s", type=float, default=30.0, help="sim-time limit of each task")
    ap.add_argument("--robot-host", default="127.0.0.61", help="loopback address for franky-sim")
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    a = ap.parse_args()

    import yaml

    from vla_jepa_ros.bringup import Bringup, ensure_no_running_graph
    from vla_jepa_ros.graph import share_file
    from vla_jepa_ros.recording.__main__ import main as bag_info
    from vla_jepa_ros.sim.demo import GraphProbe

    params = yaml.safe_load(share_file("config/sim.yaml").read_text())
    safety = params["franka_controller"]["ros__parameters"]["safety"]
    state_period_s = 1.0 / params["franka_controller"]["ros__parameters"]["state_rate_hz"]
    bags = Path(tempfile.mkdtemp(prefix="vla_jepa_soak_bags_"))
    extra = {"sim": {"layout_seed": a.seed, "world.robot_host": a.robot_host},
             "franka_controller": {"arm.robot_host": a.robot_host},
             "policy": {"policy": "bundle", "bundle_path": str(Path(a.bundle).resolve()), "use_ground_truth": False},
             "recorder": {"output_dir": str(bags), "record_all_tasks": True}}
    ensure_no_running_graph()
    outcomes: dict[str, int] = {}
    t0 = time.monotonic()
    with Bringup("sim", extra_params=extra) as graph:
        probe = GraphProbe(frame_period_s=1e9)  # no frames kept: memory stays flat over the soak
        watch = ArmWatch(probe.node)
        try:
            probe.wait_ready(check=graph.check)
            rss_start = {n: rss_mb(p.pid) for n, p in graph.procs.items()}
            k = 0
            while time.monotonic() - t0 < a.minutes * 60:
                instruction = FAMILIES[k % 2].format(COLOURS[(k // 2) % 3])
                reply = probe.start_task(instruction, a.task_timeout_s)
                final = probe.wait_outcome(reply.task_id, wall_timeout_s=a.task_timeout_s * 10 + 60, check=graph.check)
                name = {2: "SUCCEEDED", 3: "FAILED", 4: "CANCELED", 5: "ABORTED"}.get(final.state, str(final.state))
                outcomes[name] = outcomes.get(name, 0) + 1
                k += 1
                print(f"[soak] {time.monotonic() - t0:6.0f} s  task {k}: {instruction!r} {name} "
                      f"({final.elapsed_s:.1f} s sim)  so far {outcomes}", flush=True)
            rss_end = {n: rss_mb(p.pid) for n, p in graph.procs.items()}
            arm = watch.report(safety, state_period_s)
            # the recorder killed mid-task: its bag must still read back after repair
            reply = probe.start_task(FAMILIES[0].format("red"), a.task_timeout_s)
            time.sleep(3.0)
            graph.procs["recorder"].send_signal(signal.SIGKILL)
            time.sleep(1.0)
        finally:
            probe.close()
    killed = bags / reply.task_id
    repaired = bag_info([str(killed), "--repair"]) == 0 if killed.exists() else False
    result = {"minutes": a.minutes, "tasks": sum(outcomes.values()), "outcomes": outcomes, "rss_mb_start": rss_start,
              "rss_mb_end": rss_end, "rss_mb_growth": {n: rss_end[n] - rss_start[n] for n in rss_start},
              "arm": arm, "killed_recorder_bag": str(killed), "killed_bag_repaired_and_read": repaired}
    print(json.dumps(result, indent=2))
    if a.out:
        Path(a.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

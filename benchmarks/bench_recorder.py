"""Recorder throughput: 2 cameras (rgb8, 224x224 by default, 30 Hz) + joint states (100 Hz) into episode bags.

    .venv/bin/python benchmarks/bench_recorder.py                     # 180 s
    .venv/bin/python benchmarks/bench_recorder.py --duration-s 20 --plot bench_out/recorder.png
    .venv/bin/python benchmarks/bench_recorder.py --duration-s 20 --kill   # end with SIGKILL: readable-up-to lag

task_manager + recorder run in their own processes (vla_jepa_ros.bringup, real DDS); this process publishes
(serialized once, stamps patched per message) and starts/stops the recorded task. Prints a table: messages/s and
MB/s written, drops (recorder queue) and losses (published but neither recorded nor dropped), receive latency
(header stamp -> recorder log time) and write latency (callback -> in the file, from /diagnostics), recorder CPU.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import struct
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import yaml

CAMERAS = ("/cameras/front/image_raw", "/cameras/wrist/image_raw")
JOINTS = "/franka/joint_states"


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _stamp_into(buf: bytearray, t_s: float) -> bytes:
    """Header stamp is the first field after the 4-byte CDR encapsulation header of Image and JointState."""
    sec = int(t_s)
    struct.pack_into("<iI", buf, 4, sec, int((t_s - sec) * 1e9))
    return bytes(buf)


def publish_loop(pubs: dict, templates: dict, rates_hz: dict, duration_s: float, counts: dict,
                 stop: threading.Event) -> None:
    """Publish every topic at its rate (absolute schedule, no drift) for duration_s."""
    t0 = time.monotonic()
    next_t = dict.fromkeys(pubs, t0)
    frame = dict.fromkeys(pubs, 0)
    while not stop.is_set():
        now = time.monotonic()
        if now - t0 >= duration_s:
            break
        topic = min(next_t, key=next_t.get)
        if next_t[topic] > now:
            time.sleep(next_t[topic] - now)
        bufs = templates[topic]
        pubs[topic].publish(_stamp_into(bufs[frame[topic] % len(bufs)], time.time()))
        frame[topic] += 1
        counts[topic] += 1
        next_t[topic] += 1.0 / rates_hz[topic]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration-s", type=float, default=180.0)
    parser.add_argument("--camera-hz", type=float, default=30.0)
    parser.add_argument("--joint-hz", type=float, default=100.0)
    parser.add_argument("--image-size", default="224", help="camera frame side (N) or WxH, e.g. 640x480")
    parser.add_argument("--json", default="", help="also write the result rows as JSON here")
    parser.add_argument("--queue-size", type=int, default=2000)
    parser.add_argument("--max-bag-size-mb", type=float, default=2048.0)
    parser.add_argument("--out-dir", help="where the bags go (default: a temp dir, removed afterwards)")
    parser.add_argument("--kill", action="store_true", help="end with SIGKILL instead of a task end; report the lag")
    parser.add_argument("--plot", help="save a PNG (throughput and latency over time) here")
    args = parser.parse_args(argv)

    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from rclpy.serialization import serialize_message
    from sensor_msgs.msg import Image, JointState
    from std_srvs.srv import Trigger

    from vla_jepa_interfaces.srv import ExecuteTask
    from vla_jepa_ros.bringup import Bringup
    from vla_jepa_ros.ros.dds import use_stack_profile

    use_stack_profile()  # this process plays the camera driver: it needs the stack's DDS profile (docs/cameras.md)
    from vla_jepa_ros.recording import EpisodeReader, repair_episode

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from test.rosutil import RosClient  # the shared test-side client (service calls, capture)

    os.environ.setdefault("ROS_DOMAIN_ID", str(100 + os.getpid() % 100))
    tmp = Path(tempfile.mkdtemp(prefix="bench_recorder_"))
    out = Path(args.out_dir) if args.out_dir else tmp / "bags"
    params = {"output_dir": str(out), "queue_size": args.queue_size, "max_bag_size_mb": args.max_bag_size_mb,
              "min_free_disk_mb": 512.0, "diagnostics_period_s": 0.5}
    rng = np.random.default_rng(0)
    width, _, height = args.image_size.partition("x")
    width, height = int(width), int(height or width)
    templates = {}
    for topic in CAMERAS:
        frames = []
        for _ in range(8):
            img = Image(height=height, width=width, encoding="rgb8", step=width * 3, data=rng.integers(
                0, 255, width * height * 3, dtype=np.uint8).tobytes())
            img.header.frame_id = topic.split("/")[2]
            frames.append(bytearray(serialize_message(img)))
        templates[topic] = frames
    templates[JOINTS] = [bytearray(serialize_message(JointState(
        name=[f"fr3_joint{k}" for k in range(1, 8)], position=[0.1 * k for k in range(7)], velocity=[0.0] * 7,
        effort=[0.0] * 7)))]
    rates = {CAMERAS[0]: args.camera_hz, CAMERAS[1]: args.camera_hz, JOINTS: args.joint_hz}

    from diagnostic_msgs.msg import DiagnosticArray

    print(f"[bench] recorder + task_manager starting (logs in {tmp / 'logs'})", file=sys.stderr)
    with Bringup("franka", nodes=["task_manager", "recorder"], log_dir=tmp / "logs",
                 extra_params={"recorder": params}) as bringup:
        client = RosClient("bench_recorder")
        try:
            client.call(Trigger, "/vla/stop", Trigger.Request(), timeout_s=30)
            diags = client.subscribe("/diagnostics", DiagnosticArray)
            camera_qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.BEST_EFFORT)
            pubs = {t: client.node.create_publisher(Image, t, camera_qos) for t in CAMERAS}
            pubs[JOINTS] = client.node.create_publisher(JointState, JOINTS, 100)
            for topic, pub in pubs.items():
                client.wait_for(lambda p=pub: p.get_subscription_count() > 0, 30, f"recorder on {topic}")
            res = client.call(ExecuteTask, "/vla/execute_task",
                              ExecuteTask.Request(instruction="bench", timeout_s=args.duration_s + 600, record=True))
            assert res.accepted, res.message
            bag = out / res.task_id
            client.wait_for(lambda: (bag / "episode.yaml").exists(), 30, "the episode bag")
            pid = bringup.procs["recorder"].pid
            cpu0, wall0 = _cpu_s(pid), time.monotonic()
            counts = dict.fromkeys(pubs, 0)
            stop = threading.Event()
            # with --kill the publisher keeps going through the kill, as the robot would
            publish_s = args.duration_s + (1.0 if args.kill else 0.0)
            thread = threading.Thread(target=publish_loop, args=(pubs, templates, rates, publish_s, counts, stop))
            thread.start()
            last_report = time.monotonic()
            while thread.is_alive() and time.monotonic() - wall0 < args.duration_s:
                thread.join(timeout=min(1.0, max(0.0, args.duration_s - (time.monotonic() - wall0))))
                if time.monotonic() - last_report >= 10:
                    last_report = time.monotonic()
                    print(f"[bench] {last_report - wall0:5.0f}/{args.duration_s:.0f} s, published "
                          f"{sum(counts.values())}", file=sys.stderr)
            cpu_s, wall_s = _cpu_s(pid) - cpu0, time.monotonic() - wall0
            if args.kill:
                t_kill = time.time()
                os.kill(pid, signal.SIGKILL)
                bringup.procs["recorder"].wait()
                stop.set()
                thread.join()
            else:
                time.sleep(1.0)
                client.call(Trigger, "/vla/stop", Trigger.Request())
                client.wait_for(lambda: (yaml.safe_load((bag / "episode.yaml").read_text()) or {}).get(
                    "recording_status") == "complete", 60, "the episode to close")
            diag_values = {}
            for d in list(diags):
                for s in d.status:
                    diag_values.update({kv.key: kv.value for kv in s.values})
        finally:
            client.close()

    reader = EpisodeReader(bag, allow_truncated=args.kill)
    meta = reader.metadata
    log_ns, lat_ms, sizes, topics = [], [], [], []
    for topic, stamp_ns, data in reader.messages(raw=True):
        sec, nsec = struct.unpack_from("<iI", data, 4)
        log_ns.append(stamp_ns)
        lat_ms.append((stamp_ns - (sec * 10**9 + nsec)) / 1e6)
        sizes.append(len(data))
        topics.append(topic)
    log_ns, lat_ms, sizes = np.array(log_ns), np.array(lat_ms), np.array(sizes)
    recorded = {t: topics.count(t) for t in pubs}
    dropped = meta.get("dropped_counts", {})
    span_s = max((log_ns.max() - log_ns.min()) / 1e9, 1e-9)
    rows = [("duration (publishing)", f"{wall_s:.1f} s"),
            ("messages written", f"{len(log_ns)}  ({len(log_ns) / span_s:.1f} msg/s)"),
            ("data written", f"{sizes.sum() / 1e6:.1f} MB  ({sizes.sum() / 1e6 / span_s:.2f} MB/s)"),
            ("bag on disk", f"{sum(p.stat().st_size for p in reader.files) / 1e6:.1f} MB in {len(reader.files)} file(s)")]
    for topic in pubs:
        lost = counts[topic] - recorded[topic] - dropped.get(topic, 0)
        rows.append((f"  {topic}", f"published {counts[topic]}, written {recorded[topic]}, dropped "
                                   f"{dropped.get(topic, 0)}, lost in transport {lost}"))
    rows += [("receive latency p50 / p99 / max", f"{np.percentile(lat_ms, 50):.2f} / {np.percentile(lat_ms, 99):.2f}"
                                                 f" / {lat_ms.max():.2f} ms  (header stamp -> log time)"),
             ("write latency p50 / p99", f"{diag_values.get('write_latency_p50_ms', '?')} / "
                                         f"{diag_values.get('write_latency_p99_ms', '?')} ms  (callback -> in file)"),
             ("recorder CPU", f"{100 * cpu_s / wall_s:.0f} % of one core")]
    if args.kill:
        joint_stamps = [struct.unpack_from("<iI", d, 4) for t, _, d in reader.messages([JOINTS], raw=True)]
        newest = max(s + n / 1e9 for s, n in joint_stamps)
        rows.append(("SIGKILL: newest readable", f"published {1000 * (t_kill - newest):.0f} ms before the kill "
                                                 f"(publishing went on through the kill; 'lost' above = after it)"))
        t0 = time.monotonic()
        repair_episode(bag)
        rows.append(("repair_episode", f"{time.monotonic() - t0:.2f} s"))
    key_width = max(len(k) for k, _ in rows)
    print(f"\nrecorder benchmark: 2 cameras {width}x{height} rgb8 @ {args.camera_hz:g} Hz + joint states @ "
          f"{args.joint_hz:g} Hz, queue_size {args.queue_size}")
    for key, value in rows:
        print(f"{key:<{key_width}}  {value}")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "image_size": f"{width}x{height}", "camera_hz": args.camera_hz, "duration_s": args.duration_s,
            "published": counts, "written": recorded, "dropped": dropped,
            "lost_in_transport": {t: counts[t] - recorded[t] - dropped.get(t, 0) for t in pubs},
            "receive_latency_ms": {"p50": float(np.percentile(lat_ms, 50)), "p99": float(np.percentile(lat_ms, 99))},
            "rows": rows}, indent=2))

    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        t_s = (log_ns - log_ns.min()) / 1e9
        bins = np.arange(0, t_s.max() + 1.0, 1.0)
        fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
        ax1.plot(bins[:-1], np.histogram(t_s, bins, weights=sizes / 1e6)[0], label="MB/s written")
        ax1b = ax1.twinx()
        ax1b.plot(bins[:-1], np.histogram(t_s, bins)[0], color="tab:orange", label="msg/s")
        ax1.set_ylabel("MB/s")
        ax1b.set_ylabel("messages/s")
        ax1.set_title(f"recorder: 2x {width}x{height} rgb8 @ {args.camera_hz:g} Hz + joint states @ "
                      f"{args.joint_hz:g} Hz")
        ax2.plot(t_s, lat_ms, ",", alpha=0.5)
        ax2.set_ylabel("receive latency (ms)")
        ax2.set_xlabel("time (s)")
        fig.tight_layout()
        Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.plot, dpi=100)
        print(f"plot saved to {args.plot}")
    if not args.out_dir:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

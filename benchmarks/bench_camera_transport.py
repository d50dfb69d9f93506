"""Camera transport across processes: frames published vs frames received, per DDS configuration and QoS.

    .venv/bin/python benchmarks/bench_camera_transport.py                                 # 640x480 and 1280x720
    .venv/bin/python benchmarks/bench_camera_transport.py --sizes 640x480 --seconds 10 \\
        --variants default:best_effort:image,profile:best_effort:image --json out.json

A publisher process (two cameras, rgb8 at --rate-hz, like a camera driver written with rclpy) and a subscriber
process run with the same DDS environment; both count. Each variant is DDS:QOS:RECEIVE:
  DDS      default   Fast DDS as installed (builtin transports: shared memory with its default segment + UDP)
           profile   the stack's profile, config/fastdds.xml (FASTDDS_DEFAULT_PROFILES_FILE)
           large_data  FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA (no profile file)
           profile_pub_only / profile_sub_only  the profile in one of the two processes (which side needs it)
  QOS      best_effort | reliable, optionally @DEPTH (publisher and subscriber alike; default depth: the stack's
           SENSOR_QOS)
  RECEIVE  raw         serialized bytes (raw=True), as the recorder
           image       sensor_msgs/Image deserialized + numpy view, as the policy node
           compressed  sensor_msgs/CompressedImage (JPEG, encoded by the publisher), decoded with OpenCV
Prints one table per size: received/published, receive latency (stamp -> callback) p50/p99, subscriber callback
time p50/p99, publisher time per frame (encode + publish) p50, bytes per frame.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CAMERAS = ("front", "wrist")
DDS_VARIANTS = ("default", "profile", "large_data", "profile_pub_only", "profile_sub_only")
QOS_VARIANTS = ("best_effort", "reliable")
RECEIVE_VARIANTS = ("raw", "image", "compressed")
DEFAULT_VARIANTS = ("default:best_effort:image", "profile:best_effort:image", "profile:reliable:image",
                    "large_data:best_effort:image", "profile:best_effort:raw", "profile:best_effort:compressed",
                    "default:best_effort:compressed")


def dds_env(dds: str, profile: str = "") -> dict[str, str]:
    """The environment of both processes for one DDS variant (the caller's Fast DDS variables removed first)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE", "FASTDDS_BUILTIN_TRANSPORTS",
                        "RMW_FASTRTPS_USE_QOS_FROM_XML", "SKIP_DEFAULT_XML_FILE")}
    env["SKIP_DEFAULT_XML_FILE"] = "1"  # no DEFAULT_FASTDDS_PROFILES.xml from the working directory
    if dds == "profile":
        from vla_jepa_ros.ros.dds import dds_environment

        env.update(dds_environment({}))
        if profile:
            env["FASTDDS_DEFAULT_PROFILES_FILE"] = profile
    elif dds == "large_data":
        env["FASTDDS_BUILTIN_TRANSPORTS"] = "LARGE_DATA"
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    return env


def _qos(name: str):
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    from vla_jepa_ros.ros.qos import SENSOR_QOS

    name, _, depth = name.partition("@")
    return QoSProfile(depth=int(depth) if depth else SENSOR_QOS.depth, history=HistoryPolicy.KEEP_LAST,
                      durability=DurabilityPolicy.VOLATILE,
                      reliability=ReliabilityPolicy.RELIABLE if name == "reliable" else ReliabilityPolicy.BEST_EFFORT)


def run_publisher(args) -> dict:
    """Publish two cameras at rate_hz for seconds once the subscriber matched; return what was published."""
    import array

    import cv2
    import rclpy
    from rclpy.node import Node
    from sensor_msgs.msg import CompressedImage, Image

    from vla_jepa_ros.ros.conversions import s_to_stamp

    w, h = args.width, args.height
    rclpy.init()
    node = Node("bench_camera_pub")
    compressed = args.receive == "compressed"
    msg_type, suffix = (CompressedImage, "compressed") if compressed else (Image, "image_raw")
    pubs = {c: node.create_publisher(msg_type, f"/cameras/{c}/{suffix}", _qos(args.qos)) for c in CAMERAS}
    rng = np.random.default_rng(0)
    # a smooth image with some texture (JPEG size like a real scene's, not like noise)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([(xx * 255 // max(w - 1, 1)), (yy * 255 // max(h - 1, 1)), ((xx + yy) % 256)], -1).astype(np.uint8)
    frames = [np.clip(base.astype(np.int16) + rng.integers(-8, 8, base.shape), 0, 255).astype(np.uint8)
              for _ in range(4)]
    deadline = time.monotonic() + 30
    while any(p.get_subscription_count() == 0 for p in pubs.values()):
        if time.monotonic() > deadline:
            raise SystemExit("publisher: no subscriber matched in 30 s")
        time.sleep(0.05)
    time.sleep(1.0)  # let discovery settle on both sides
    published, pub_ms, sizes = 0, [], []
    period = 1.0 / args.rate_hz
    t0 = time.monotonic()
    k = 0
    while True:
        due = t0 + k * period
        if due - t0 >= args.seconds:
            break
        time.sleep(max(0.0, due - time.monotonic()))
        for c in CAMERAS:
            start = time.perf_counter()
            rgb = frames[(k + hash(c)) % len(frames)]
            if compressed:
                from vla_jepa_ros.core.images import encode_compressed

                msg = CompressedImage(format="jpeg", data=encode_compressed(rgb, "jpeg", args.jpeg_quality))
            else:
                msg = Image(height=h, width=w, encoding="rgb8", step=w * 3, data=array.array("B", rgb.tobytes()))
            msg.header.stamp = s_to_stamp(time.time())
            msg.header.frame_id = c
            pubs[c].publish(msg)
            pub_ms.append((time.perf_counter() - start) * 1e3)
            sizes.append(len(msg.data))
            published += 1
        k += 1
    time.sleep(1.0)  # let the last frames arrive before this participant goes away
    node.destroy_node()
    rclpy.try_shutdown()
    del cv2
    return {"published": published, "publish_ms_p50": float(np.percentile(pub_ms, 50)),
            "bytes_per_frame": int(np.median(sizes))}


def run_subscriber(args) -> dict:
    """Count frames per camera until no frame came for idle_s after the first; return the counts and timings."""
    import rclpy
    from rclpy.node import Node
    from sensor_msgs.msg import CompressedImage, Image

    from vla_jepa_ros.core.images import decode_compressed
    from vla_jepa_ros.ros.conversions import image_to_rgb, stamp_to_s

    rclpy.init()
    node = Node("bench_camera_sub")
    received = dict.fromkeys(CAMERAS, 0)
    lost = dict.fromkeys(CAMERAS, 0)  # reported by DDS (gaps in the publisher's sequence numbers)
    latency_ms: list[float] = []
    callback_ms: list[float] = []
    last = [0.0]

    def on_msg(cam, msg):
        t = time.time()
        start = time.perf_counter()
        if args.receive == "raw":
            stamp_s = None  # bytes only, like the recorder: latency from the serialized header
            import struct

            sec, nsec = struct.unpack_from("<iI", msg, 4)
            stamp_s = sec + nsec * 1e-9
        elif args.receive == "image":
            rgb = image_to_rgb(msg)
            assert rgb.shape == (args.height, args.width, 3)
            stamp_s = stamp_to_s(msg.header.stamp)
        else:
            rgb = decode_compressed(msg.data, msg.format)
            stamp_s = stamp_to_s(msg.header.stamp)
        callback_ms.append((time.perf_counter() - start) * 1e3)
        latency_ms.append((t - stamp_s) * 1e3)
        received[cam] += 1
        last[0] = time.monotonic()

    compressed = args.receive == "compressed"
    msg_type, suffix = (CompressedImage, "compressed") if compressed else (Image, "image_raw")
    from rclpy.event_handler import SubscriptionEventCallbacks

    def on_lost(cam, info):
        lost[cam] += info.total_count_change

    for c in CAMERAS:
        events = SubscriptionEventCallbacks(message_lost=lambda info, c=c: on_lost(c, info))
        node.create_subscription(msg_type, f"/cameras/{c}/{suffix}", lambda m, c=c: on_msg(c, m), _qos(args.qos),
                                 raw=args.receive == "raw", event_callbacks=events)
    deadline = time.monotonic() + args.seconds + 60
    while time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.1)
        if last[0] and time.monotonic() - last[0] > args.idle_s:
            break
    node.destroy_node()
    rclpy.try_shutdown()
    lat = np.array(latency_ms or [np.nan])
    cb = np.array(callback_ms or [np.nan])
    return {"received": received, "lost_reported": sum(lost.values()), "latency_ms_p50": float(np.percentile(lat, 50)),
            "latency_ms_p99": float(np.percentile(lat, 99)), "callback_ms_p50": float(np.percentile(cb, 50)),
            "callback_ms_p99": float(np.percentile(cb, 99))}


def run_variant(variant: str, width: int, height: int, seconds: float, rate_hz: float, jpeg_quality: int,
                log_dir: Path, profile: str = "") -> dict:
    dds, qos, receive = variant.split(":")
    pub_env = dds_env("default" if dds == "profile_sub_only" else dds.replace("_pub_only", ""), profile)
    sub_env = dds_env("default" if dds == "profile_pub_only" else dds.replace("_sub_only", ""), profile)
    common = ["--width", str(width), "--height", str(height), "--seconds", str(seconds), "--rate-hz", str(rate_hz),
              "--qos", qos, "--receive", receive, "--jpeg-quality", str(jpeg_quality)]
    me = [sys.executable, str(Path(__file__).resolve())]
    tag = f"{variant.replace(':', '_')}_{width}x{height}"
    with open(log_dir / f"{tag}.sub.log", "w") as sub_err, open(log_dir / f"{tag}.pub.log", "w") as pub_err:
        sub = subprocess.Popen(me + ["--role", "sub"] + common, stdout=subprocess.PIPE, stderr=sub_err,
                               text=True, env=sub_env)
        pub = subprocess.Popen(me + ["--role", "pub"] + common, env=pub_env, stdout=subprocess.PIPE, stderr=pub_err,
                               text=True)
        pub_out, _ = pub.communicate(timeout=seconds + 120)
        sub_out, _ = sub.communicate(timeout=120)
    if pub.returncode or sub.returncode:
        raise RuntimeError(f"{variant} {width}x{height}: publisher exit {pub.returncode}, subscriber exit "
                           f"{sub.returncode}; logs in {log_dir}")
    result = {"variant": variant, "size": f"{width}x{height}", **json.loads(pub_out.strip().splitlines()[-1]),
              **json.loads(sub_out.strip().splitlines()[-1])}
    result["received_total"] = sum(result["received"].values())
    result["received_fraction"] = result["received_total"] / max(result["published"], 1)
    return result


def format_table(rows: list[dict], title: str) -> str:
    head = (f"{'variant (dds:qos:receive)':<38}{'received':>16}{'%':>7}{'lost':>6}{'lat p50':>9}{'lat p99':>9}"
            f"{'cb p50':>8}{'cb p99':>8}{'pub p50':>9}{'bytes':>10}")
    lines = [title, head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['variant']:<38}{r['received_total']:>8}/{r['published']:<7}"
                     f"{100 * r['received_fraction']:>7.1f}{r['lost_reported']:>6}"
                     f"{r['latency_ms_p50']:>9.2f}{r['latency_ms_p99']:>9.2f}{r['callback_ms_p50']:>8.2f}"
                     f"{r['callback_ms_p99']:>8.2f}{r['publish_ms_p50']:>9.2f}{r['bytes_per_frame']:>10}")
    lines.append("lost: frames DDS reported lost on the way (the rest of what is missing was overwritten in the "
                 "subscription's queue: depth)")
    lines.append("ms: lat = frame stamp -> subscriber callback; cb = time in the subscriber callback (deserialized "
                 "message -> numpy / JPEG decode); pub = encode + publish per frame")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--role", choices=("main", "pub", "sub"), default="main", help=argparse.SUPPRESS)
    parser.add_argument("--width", type=int, default=640, help=argparse.SUPPRESS)
    parser.add_argument("--height", type=int, default=480, help=argparse.SUPPRESS)
    parser.add_argument("--qos", default="best_effort", help=argparse.SUPPRESS)
    parser.add_argument("--receive", default="image", help=argparse.SUPPRESS)
    parser.add_argument("--idle-s", type=float, default=3.0, help=argparse.SUPPRESS)
    parser.add_argument("--sizes", default="640x480,1280x720", help="comma list of WxH")
    parser.add_argument("--variants", default=",".join(DEFAULT_VARIANTS), help="comma list of DDS:QOS:RECEIVE")
    parser.add_argument("--seconds", type=float, default=20.0, help="publishing time per variant and size")
    parser.add_argument("--rate-hz", type=float, default=30.0, help="frames per second per camera")
    parser.add_argument("--jpeg-quality", type=int, default=90)
    parser.add_argument("--profile", default="", help="the profile variant uses this XML file instead of the stack's")
    parser.add_argument("--json", default="", help="also write the rows as JSON here")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO))
    if args.role == "pub":
        print(json.dumps(run_publisher(args)))
        return 0
    if args.role == "sub":
        print(json.dumps(run_subscriber(args)))
        return 0
    variants = [v for v in args.variants.split(",") if v]
    for v in variants:
        parts = v.split(":")
        if len(parts) != 3 or parts[0] not in DDS_VARIANTS or parts[1].partition("@")[0] not in QOS_VARIANTS \
                or parts[2] not in RECEIVE_VARIANTS:
            parser.error(f"variant {v!r} must be DDS:QOS:RECEIVE with DDS in {DDS_VARIANTS}, QOS in {QOS_VARIANTS}, "
                         f"RECEIVE in {RECEIVE_VARIANTS}")
    os.environ.setdefault("ROS_DOMAIN_ID", str(100 + os.getpid() % 100))
    log_dir = Path(tempfile.mkdtemp(prefix="bench_camera_transport_"))
    all_rows = []
    for size in args.sizes.split(","):
        width, height = (int(x) for x in size.split("x"))
        rows = []
        for v in variants:
            print(f"[bench] {size} {v} ...", file=sys.stderr, flush=True)
            rows.append(run_variant(v, width, height, args.seconds, args.rate_hz, args.jpeg_quality, log_dir,
                                    args.profile))
        print(format_table(rows, f"\n{len(CAMERAS)} cameras {size} at {args.rate_hz:g} Hz, {args.seconds:g} s per "
                                 f"variant, variants interleaved per size"), flush=True)
        all_rows += rows
    if args.json:
        Path(args.json).write_text(json.dumps({"rate_hz": args.rate_hz, "seconds": args.seconds, "rows": all_rows},
                                              indent=2))
    from vla_jepa_ros.ros.shm import remove_stale_fastdds_files

    remove_stale_fastdds_files()
    import shutil

    shutil.rmtree(log_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""A stand-in camera driver for tests and benchmarks: N cameras of rgb8 frames at a fixed rate, in its own process.

    python -m test.camera_publisher --width 640 --height 480 --rate-hz 30 --seconds 6 --subscribers 2

Waits until every camera topic has `--subscribers` matched subscriptions, then publishes for `--seconds` on an
absolute schedule and prints {"published": {camera: count}, "size": "WxH"} as one JSON line. It runs with whatever
DDS environment it is given (a driver of the user's own would need the stack's profile: docs/cameras.md).
"""
from __future__ import annotations

import argparse
import array
import json
import sys
import time

import numpy as np


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cameras", default="front,wrist")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--rate-hz", type=float, default=30.0)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--subscribers", type=int, default=1, help="wait for this many subscriptions per topic")
    parser.add_argument("--wait-s", type=float, default=60.0)
    args = parser.parse_args(argv)

    import rclpy
    from rclpy.node import Node
    from sensor_msgs.msg import Image

    from vla_jepa_ros.ros.conversions import s_to_stamp
    from vla_jepa_ros.ros.qos import SENSOR_QOS

    cameras = [c for c in args.cameras.split(",") if c]
    w, h = args.width, args.height
    rclpy.init()
    node = Node("test_camera_publisher")
    pubs = {c: node.create_publisher(Image, f"/cameras/{c}/image_raw", SENSOR_QOS) for c in cameras}
    rng = np.random.default_rng(0)
    data = {c: array.array("B", rng.integers(0, 256, (h, w, 3), dtype=np.uint8).tobytes()) for c in cameras}
    deadline = time.monotonic() + args.wait_s
    while any(p.get_subscription_count() < args.subscribers for p in pubs.values()):
        if time.monotonic() > deadline:
            counts = {c: p.get_subscription_count() for c, p in pubs.items()}
            print(f"camera_publisher: subscriptions {counts} < {args.subscribers} after {args.wait_s} s",
                  file=sys.stderr)
            return 1
        time.sleep(0.05)
    time.sleep(0.5)  # matched on our side; give the subscribers' side a moment too
    published = dict.fromkeys(cameras, 0)
    t0 = time.monotonic()
    k = 0
    while k / args.rate_hz < args.seconds:
        time.sleep(max(0.0, t0 + k / args.rate_hz - time.monotonic()))
        for c in cameras:
            msg = Image(height=h, width=w, encoding="rgb8", step=w * 3, data=data[c])
            msg.header.stamp = s_to_stamp(time.time())
            msg.header.frame_id = c
            pubs[c].publish(msg)
            published[c] += 1
        k += 1
    time.sleep(1.0)  # the last frames are on their way: keep this participant (and its segment) alive a moment
    node.destroy_node()
    rclpy.try_shutdown()
    print(json.dumps({"published": published, "size": f"{w}x{h}"}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

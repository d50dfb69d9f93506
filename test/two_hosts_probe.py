"""The robot-computer side of test_two_hosts.py, run as its own process inside the robot's network namespace.

It plays the robot: publishes camera frames and the arm state the way the controller and camera drivers do, starts a
task on the task manager of the other host, and records what comes back (task status, action chunks). Prints one
JSON line on stdout and exits 0 when chunks and statuses of its task crossed, 1 otherwise.
"""
from __future__ import annotations

import array
import json
import sys
import threading
import time

import numpy as np
from sensor_msgs.msg import Image
from std_srvs.srv import Trigger

from vla_jepa_interfaces.msg import ActionChunk, RobotState, TaskStatus
from vla_jepa_interfaces.srv import ExecuteTask
from vla_jepa_ros.ros.conversions import s_to_stamp
from vla_jepa_ros.ros.qos import RELIABLE_QOS, SENSOR_QOS

from test.rosutil import RosClient

W, H = 160, 120  # camera frame size, px (the tiny bundle's cameras)
CAMS = ("front", "wrist")


def main(timeout_s: float) -> int:
    client = RosClient("robot_probe")
    node = client.node
    chunks: list[ActionChunk] = client.subscribe("/vla/action_chunk", ActionChunk, RELIABLE_QOS)
    cams = {c: node.create_publisher(Image, f"/cameras/{c}/image_raw", SENSOR_QOS) for c in CAMS}
    state_pub = node.create_publisher(RobotState, "/franka/state", RELIABLE_QOS)
    rgb = np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)  # (H, W, 3) uint8
    running = True

    def feed() -> None:
        while running:
            now = time.time()
            st = RobotState(ee_position_m=[0.4, 0.0, 0.3], ee_rpy_rad=[np.pi, 0.0, 0.0], gripper_width_m=0.08,
                            gripper_open_commanded=True)
            st.header.stamp = s_to_stamp(now)
            state_pub.publish(st)
            for pub in cams.values():
                msg = Image(height=H, width=W, encoding="rgb8", step=W * 3, data=array.array("B", rgb.tobytes()))
                msg.header.stamp = s_to_stamp(now)
                pub.publish(msg)
            time.sleep(0.1)

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    result: dict = {"ok": False}
    try:
        t0 = time.monotonic()
        res = client.call(ExecuteTask, "/vla/execute_task",
                          ExecuteTask.Request(instruction="pick up the red cube", timeout_s=0.0, record=False),
                          timeout_s=timeout_s)
        result.update(accepted=res.accepted, task_id=res.task_id, service_s=round(time.monotonic() - t0, 1))
        if res.accepted:
            client.wait_status(res.task_id, TaskStatus.RUNNING, timeout_s=timeout_s)
            client.wait_for(lambda: sum(c.task_id == res.task_id for c in chunks) >= 3, timeout_s,
                            "3 action chunks of the task")
            mine = [c for c in chunks if c.task_id == res.task_id]
            result.update(chunks=len(mine), chunk_shape=[mine[0].horizon, mine[0].action_dim],
                          chunk_finite=bool(all(np.isfinite(np.asarray(c.data)).all() for c in mine)))
            client.call(Trigger, "/vla/stop", Trigger.Request(), timeout_s=timeout_s)
            client.wait_status(res.task_id, TaskStatus.CANCELED, timeout_s=timeout_s)
            result.update(ok=True, statuses=sorted({s.state for s in client.statuses if s.task_id == res.task_id}))
    except Exception as exc:  # reported to the test as JSON, not as a traceback
        result["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        running = False
        feeder.join(timeout=2)
        client.close()
    print(json.dumps(result), flush=True)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main(float(sys.argv[1]) if len(sys.argv) > 1 else 60.0))

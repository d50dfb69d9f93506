"""Send one task to a running graph through the RunTask action and print how it ended.

    vla-jepa-bringup --graph sim -p policy.policy=bundle -p policy.bundle_path=models/tiny_sim &
    python examples/send_task.py "put the red cube in the bowl" --timeout-s 60

Exit code 0 when the task SUCCEEDED, 1 when it ended any other way, 2 when no task manager answered.
"""
from __future__ import annotations

import argparse
import sys

import rclpy
from rclpy.action import ActionClient

from vla_jepa_interfaces.action import RunTask
from vla_jepa_interfaces.msg import TaskStatus

OUTCOMES = {TaskStatus.SUCCEEDED: "SUCCEEDED", TaskStatus.FAILED: "FAILED", TaskStatus.CANCELED: "CANCELED",
            TaskStatus.ABORTED: "ABORTED"}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("instruction", help="what the robot should do, in words")
    ap.add_argument("--timeout-s", type=float, default=0.0, help="task time limit (0 = the task manager's default)")
    ap.add_argument("--record", action="store_true", help="record the episode as a rosbag2 MCAP")
    ap.add_argument("--wait-s", type=float, default=30.0, help="how long to wait for the task manager to appear")
    a = ap.parse_args()

    rclpy.init()
    node = rclpy.create_node("send_task")
    client = ActionClient(node, RunTask, "/vla/run_task")
    if not client.wait_for_server(timeout_sec=a.wait_s):
        print(f"no task manager serves /vla/run_task after {a.wait_s} s (is the graph up, same ROS_DOMAIN_ID?)",
              file=sys.stderr)
        return 2

    shown_s = [-1.0]

    def on_feedback(msg) -> None:  # one progress line per second of task time
        f = msg.feedback
        if f.elapsed_s - shown_s[0] >= 1.0:
            shown_s[0] = f.elapsed_s
            print(f"{f.task_id}: {f.elapsed_s:5.1f} s, {f.steps} steps, inference {f.latency_ms:.0f} ms", flush=True)

    goal = RunTask.Goal(instruction=a.instruction, timeout_s=a.timeout_s, record=a.record)
    sent = client.send_goal_async(goal, feedback_callback=on_feedback)
    rclpy.spin_until_future_complete(node, sent)
    handle = sent.result()
    if not handle.accepted:
        print("refused (another task runs, or the instruction is invalid: see the task manager's log)",
              file=sys.stderr)
        return 1
    done = handle.get_result_async()
    rclpy.spin_until_future_complete(node, done)
    r = done.result().result
    print(f"{r.task_id}: {OUTCOMES.get(r.outcome, r.outcome)} after {r.elapsed_s:.1f} s, {r.steps} steps"
          + (f" ({r.message})" if r.message else ""))
    return 0 if r.outcome == TaskStatus.SUCCEEDED else 1


if __name__ == "__main__":
    sys.exit(main())

"""Heartbeats: every node started through `run_node` says it is alive on /vla/heartbeat, on the wall clock.

The beats come from a thread of their own, not from an executor timer: they go on when /clock stops (sim time)
and while a callback works for a while (the sim node rendering, the policy node loading), and they stop when the
process is killed or stopped (SIGKILL, SIGSTOP, a crash). The task_manager ends the running task when a node it
watches goes silent (core.task.Liveness).
"""
from __future__ import annotations

import threading

from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from std_msgs.msg import String

from .qos import RELIABLE_QOS

HEARTBEAT_TOPIC = "/vla/heartbeat"
HEARTBEAT_PERIOD_S = 0.1  # wall seconds between beats; the task manager's timeout is several periods


def steady_clock() -> Clock:
    """A clock that follows wall time whatever use_sim_time says (timers on it keep running when /clock stops)."""
    return Clock(clock_type=ClockType.STEADY_TIME)


class Heartbeat:
    """Publish the node's name on /vla/heartbeat every `period_s` wall seconds until `stop()`."""

    def __init__(self, node: Node, period_s: float = HEARTBEAT_PERIOD_S) -> None:
        self._pub = node.create_publisher(String, HEARTBEAT_TOPIC, RELIABLE_QOS)
        self._msg = String(data=node.get_name())
        self._period_s = period_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._pub.publish(self._msg)
            except Exception:  # noqa: BLE001  (the context is shutting down)
                return
            self._stop.wait(self._period_s)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=1.0)

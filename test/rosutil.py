"""A test-side ROS client in its own context, spinning on a background thread (shared by graph tests)."""
from __future__ import annotations

import threading
import time
from typing import Any, Callable

import rclpy
from rclpy.action import ActionClient
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node

from vla_jepa_interfaces.msg import TaskStatus
from vla_jepa_ros.ros.qos import STATUS_QOS


class RosClient:
    """Service calls, action goals and topic capture against a graph running in other processes."""

    def __init__(self, name: str = "test_client") -> None:
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = Node(name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._lock = threading.Lock()
        self.messages: dict[str, list[Any]] = {}
        self.statuses: list[TaskStatus] = self.subscribe("/vla/task_status", TaskStatus, STATUS_QOS)
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._running = True
        self._thread.start()

    def _spin(self) -> None:
        while self._running and self.context.ok():
            self.executor.spin_once(timeout_sec=0.05)

    def subscribe(self, topic: str, msg_type, qos=10, raw: bool = False) -> list:
        store = self.messages.setdefault(topic, [])

        def on_msg(msg):
            with self._lock:
                store.append(msg)

        self.node.create_subscription(msg_type, topic, on_msg, qos, raw=raw)
        return store

    def call(self, srv_type, name: str, request, timeout_s: float = 10.0):
        client = self.node.create_client(srv_type, name)
        if not client.wait_for_service(timeout_sec=timeout_s):
            raise TimeoutError(f"service {name} not available after {timeout_s} s")
        future = client.call_async(request)
        if not _wait(future.done, timeout_s):
            raise TimeoutError(f"service {name} did not answer within {timeout_s} s")
        return future.result()

    def action_client(self, action_type, name: str) -> ActionClient:
        return ActionClient(self.node, action_type, name)

    def wait_for(self, predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
        if not _wait(predicate, timeout_s):
            raise TimeoutError(f"timed out after {timeout_s} s waiting for {what}")

    def latest_status(self) -> TaskStatus | None:
        with self._lock:
            return self.statuses[-1] if self.statuses else None

    def wait_status(self, task_id: str, state: int, timeout_s: float = 10.0) -> TaskStatus:
        def seen():
            s = self.latest_status()
            return s is not None and s.task_id == task_id and s.state == state
        self.wait_for(seen, timeout_s, f"task {task_id} in state {state} (last: {self.latest_status()})")
        return self.latest_status()

    def close(self) -> None:
        self._running = False
        self._thread.join(timeout=2)
        self.node.destroy_node()
        self.context.try_shutdown()


def _wait(predicate: Callable[[], bool], timeout_s: float, poll_s: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(poll_s)
    return predicate()

"""Each node's /diagnostics: one DiagnosticStatus per publish, level by name, every value as a string."""
from __future__ import annotations

from typing import Any

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.node import Node

LEVELS = {"ok": DiagnosticStatus.OK, "warn": DiagnosticStatus.WARN, "error": DiagnosticStatus.ERROR}


class DiagnosticsPublisher:
    def __init__(self, node: Node, name: str, hardware_id: str = "") -> None:
        self._node, self.name, self.hardware_id = node, name, hardware_id
        self._pub = node.create_publisher(DiagnosticArray, "/diagnostics", 10)

    def publish(self, level: str, message: str, values: dict[str, Any]) -> None:
        """level: ok | warn | error (any case); values are sent as str(value)."""
        status = DiagnosticStatus(level=LEVELS[level.lower()], name=self.name, message=message,
                                  hardware_id=self.hardware_id,
                                  values=[KeyValue(key=k, value=str(v)) for k, v in values.items()])
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self._node.get_clock().now().to_msg()
        self._pub.publish(msg)


def follow_status(node: Node, name: str, values: dict[str, str]) -> None:
    """Keep `values` updated with the key/values of the newest /diagnostics status called `name`."""
    def on_array(msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name == name:
                values.update({kv.key: kv.value for kv in status.values})

    node.create_subscription(DiagnosticArray, "/diagnostics", on_array, 10)

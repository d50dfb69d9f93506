"""recorder: every configured topic, raw (serialized, never deserialized here), into one MCAP bag per task episode.

Callbacks only stamp each message and queue its bytes: the wall clock at reception (the bag's log time, as
`ros2 bag record` writes it), the publisher's send time and sequence number (DDS message info), and under
use_sim_time the ROS clock (sim time, kept in the bag as /clock samples and used for episode times); the
Recorder core (vla_jepa_ros/recording) writes them on its own thread, follows /vla/task_status to open and
close episodes, splits, guards the disk and counts drops. /diagnostics carries its state.
"""
from __future__ import annotations

import difflib
import functools
import importlib
import time

from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from ..recording.config import STATUS_TOPIC, STATUS_TYPE, RecorderConfig, TopicSpec
from ..recording.recorder import Recorder
from ..ros.diagnostics import DiagnosticsPublisher
from ..ros.node_main import run_node
from ..ros.params import declare_params

# Subscription QoS by kind; deeper than the publishers' so bursts wait in DDS rather than being overwritten.
SUB_QOS = {
    "best_effort": QoSProfile(depth=50, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.BEST_EFFORT,
                              durability=DurabilityPolicy.VOLATILE),
    "reliable": QoSProfile(depth=500, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE,
                           durability=DurabilityPolicy.VOLATILE),
    "transient_local": QoSProfile(depth=20, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE,
                                  durability=DurabilityPolicy.TRANSIENT_LOCAL),
}


_SEQUENCE_UNSUPPORTED = 2**63  # an rmw without publication sequence numbers reports all ones


def message_class(msgtype: str):
    """'pkg/msg/Type' -> the generated Python class. Raises ValueError naming the type."""
    package, _, name = msgtype.split("/")
    try:
        module = importlib.import_module(f"{package}.msg")
    except ImportError:
        raise ValueError(f"message type {msgtype!r}: package {package!r} is not installed") from None
    if not isinstance(getattr(module, name, None), type):
        close = difflib.get_close_matches(name, [n for n in dir(module) if n[:1].isupper()], n=1)
        hint = f" (did you mean {package}/msg/{close[0]}?)" if close else ""
        raise ValueError(f"message type {msgtype!r}: {package} has no message {name!r}{hint}")
    return getattr(module, name)


class RecorderNode(Node):
    def __init__(self, **node_kwargs) -> None:
        super().__init__("recorder", **node_kwargs)
        config = declare_params(self, RecorderConfig)
        specs = list(config.topic_specs)
        if STATUS_TOPIC not in {s.name for s in specs}:  # always followed (episodes), recorded only if listed
            specs.append(TopicSpec(STATUS_TOPIC, STATUS_TYPE))
        classes = {s.name: message_class(s.msgtype) for s in specs}
        self.recorder = Recorder(config, log=self._log).start()
        self._clock = self.get_clock()
        self._sim_time = bool(self.get_parameter("use_sim_time").value)
        for spec in specs:
            events = SubscriptionEventCallbacks(  # DDS-level losses are counted too; a QoS mismatch is loud
                message_lost=functools.partial(self._on_lost, spec.name),
                incompatible_qos=functools.partial(self._on_incompatible, spec))
            self.create_subscription(classes[spec.name], spec.name, functools.partial(self._on_raw, spec.name),
                                     SUB_QOS[spec.resolved_qos], raw=True, event_callbacks=events)
        self._diagnostics = DiagnosticsPublisher(self, f"{self.get_name()}: episode recording")
        self.create_timer(config.diagnostics_period_s, self._publish_diagnostics)
        self.get_logger().info(f"recording {len(config.topics)} topics into {self.recorder.output_dir} "
                               f"({'every task' if config.record_all_tasks else 'tasks with record: true'})")

    def _on_raw(self, topic: str, data: bytes, info: dict) -> None:
        wall_ns = time.time_ns()
        sent_ns = info.get("source_timestamp") or None
        sequence = info.get("publication_sequence_number") or 0
        self.recorder.on_message(topic, wall_ns, data, self._clock.now().nanoseconds if self._sim_time else None,
                                 sent_ns, sequence if sequence < _SEQUENCE_UNSUPPORTED else 0)

    def _on_lost(self, topic: str, info) -> None:
        self.recorder.on_lost(topic, info.total_count_change)

    def _on_incompatible(self, spec: TopicSpec, info) -> None:
        self.get_logger().error(f"{spec.name}: a publisher's QoS is incompatible with the recorder's "
                                f"{spec.resolved_qos} subscription (policy {info.last_policy_kind}); nothing from it "
                                f"is recorded: set the QoS in the topic entry, e.g. '{spec.name}:{spec.msgtype}:reliable'")

    def _log(self, level: str, message: str) -> None:
        # one call site per severity: rclpy refuses a call site whose severity changes between calls
        logger = self.get_logger()
        if level == "error":
            logger.error(message)
        elif level == "warning":
            logger.warning(message)
        else:
            logger.info(message)

    def _publish_diagnostics(self) -> None:
        level, message, values = self.recorder.diagnostics()
        self._diagnostics.publish(level, message, values)

    def close(self) -> None:
        """Called by run_node on SIGINT/SIGTERM: write what is queued and close the open bag cleanly."""
        self.recorder.close()


def main(args=None) -> int:
    return run_node(RecorderNode, args)


if __name__ == "__main__":
    raise SystemExit(main())

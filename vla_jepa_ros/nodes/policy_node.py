"""policy: while a task is RUNNING, turns the latest camera frames + robot state (+ simulator ground truth for
the scripted expert) into an Observation, calls `policy.infer`, and publishes the ActionChunk stamped with the
task id and the capture time of the oldest frame used."""
from __future__ import annotations

import dataclasses

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.node import Node
from sensor_msgs.msg import Image

from vla_jepa_interfaces.msg import ActionChunk, ObjectPoses, RobotState, TaskStatus

from ..core.types import Observation, TaskState
from ..ros.conversions import ImageError, chunk_to_msg, image_to_rgb, stamp_to_s
from ..ros.node_main import run_node
from ..ros.params import declare_params
from ..ros.qos import RELIABLE_QOS, SENSOR_QOS, STATUS_QOS

POLICIES = ("expert",)


@dataclasses.dataclass(frozen=True)
class PolicyNodeConfig:
    policy: str = dataclasses.field(default="expert", metadata={"help": f"policy backend: {', '.join(POLICIES)}"})
    cameras: tuple[str, ...] = dataclasses.field(
        default=("front", "wrist"), metadata={"help": "camera names; subscribes /cameras/<name>/image_raw"})
    inference_rate_hz: float = dataclasses.field(default=5.0, metadata={"help": "chunks per second while running"})
    max_image_age_s: float = dataclasses.field(
        default=1.0, metadata={"help": "skip inference when the newest frame of a camera is older than this (s)"})
    use_ground_truth: bool = dataclasses.field(
        default=True, metadata={"help": "subscribe /sim/object_poses into observation.extras (scripted expert)"})

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ValueError(f"policy={self.policy!r} is unknown; known: {', '.join(POLICIES)}")
        if not 0 < self.inference_rate_hz <= 100:
            raise ValueError(f"inference_rate_hz={self.inference_rate_hz} must be in (0, 100]")
        if not self.max_image_age_s > 0:
            raise ValueError(f"max_image_age_s={self.max_image_age_s} must be > 0")


def make_policy(config: PolicyNodeConfig):
    from ..runtime.expert import ScriptedExpertPolicy

    return ScriptedExpertPolicy()


class PolicyNode(Node):
    def __init__(self) -> None:
        super().__init__("policy")
        self.config = declare_params(self, PolicyNodeConfig)
        self.policy = make_policy(self.config)
        self._images: dict[str, Image] = {}
        self._state: RobotState | None = None
        self._poses: ObjectPoses | None = None
        self._status: TaskStatus | None = None
        self._skipped = ""
        self._last_ms = 0.0
        self._phase = ""
        for cam in self.config.cameras:
            self.create_subscription(Image, f"/cameras/{cam}/image_raw",
                                     lambda msg, cam=cam: self._images.__setitem__(cam, msg), SENSOR_QOS)
        self.create_subscription(RobotState, "/franka/state", self._on_state, RELIABLE_QOS)
        self.create_subscription(TaskStatus, "/vla/task_status", self._on_status, STATUS_QOS)
        if self.config.use_ground_truth:
            self.create_subscription(ObjectPoses, "/sim/object_poses", self._on_poses, RELIABLE_QOS)
        self._chunk_pub = self.create_publisher(ActionChunk, "/vla/action_chunk", RELIABLE_QOS)
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_timer(1.0 / self.config.inference_rate_hz, self._infer)
        self.create_timer(1.0, self._publish_diagnostics)

    def _on_state(self, msg: RobotState) -> None:
        self._state = msg

    def _on_status(self, msg: TaskStatus) -> None:
        self._status = msg

    def _on_poses(self, msg: ObjectPoses) -> None:
        self._poses = msg

    def _observation(self, status: TaskStatus) -> Observation | None:
        """The observation, or None (with the reason in self._skipped) when an input is missing or old."""
        now = self.get_clock().now().nanoseconds * 1e-9
        images, stamps = {}, {}
        for cam in self.config.cameras:
            msg = self._images.get(cam)
            if msg is None:
                self._skipped = f"no frame yet from camera {cam!r}"
                return None
            stamps[cam] = stamp_to_s(msg.header.stamp)
            if now - stamps[cam] > self.config.max_image_age_s:
                self._skipped = f"camera {cam!r} frame is {now - stamps[cam]:.2f} s old"
                return None
            try:
                images[cam] = image_to_rgb(msg)
            except ImageError as exc:
                self._skipped = f"camera {cam!r}: {exc}"
                return None
        st = self._state
        state = None if st is None else np.array([*st.ee_position_m, *st.ee_rpy_rad, st.gripper_width_m,
                                                  1.0 if st.gripper_open_commanded else 0.0], dtype=np.float32)
        extras = {}
        if self._poses is not None:
            extras["object_poses"] = {
                n: (np.array([p.position.x, p.position.y, p.position.z]),
                    np.array([p.orientation.x, p.orientation.y, p.orientation.z, p.orientation.w]))
                for n, p in zip(self._poses.names, self._poses.poses)}
        if not stamps:  # no cameras configured: stamp with the state time
            stamps["clock"] = now
        return Observation(images=images, image_stamps_s=stamps, state=state, instruction=status.instruction,
                           task_id=status.task_id, extras=extras)

    def _infer(self) -> None:
        status = self._status
        if status is None or status.state != TaskState.RUNNING:
            return
        obs = self._observation(status)
        if obs is None:
            self.get_logger().warning(f"not inferring: {self._skipped}", throttle_duration_sec=5.0)
            return
        chunk = self.policy.infer(obs)
        self._last_ms = chunk.inference_ms
        phase = getattr(self.policy, "last_phase", "")  # the scripted expert names its phase
        if phase and phase != self._phase:
            self._phase = phase
            self.get_logger().info(f"task {status.task_id}: {phase}")
        self._chunk_pub.publish(chunk_to_msg(chunk))

    def _publish_diagnostics(self) -> None:
        status = DiagnosticStatus(level=DiagnosticStatus.OK, name="policy", message=self._skipped or "ok",
                                  values=[KeyValue(key="policy", value=self.config.policy),
                                          KeyValue(key="model_id", value=str(getattr(self.policy, "model_id", ""))),
                                          KeyValue(key="inference_ms", value=f"{self._last_ms:.2f}")])
        diag = DiagnosticArray(status=[status])
        diag.header.stamp = self.get_clock().now().to_msg()
        self._diag_pub.publish(diag)


def main(args=None) -> int:
    return run_node(PolicyNode, args, threads=2)


if __name__ == "__main__":
    raise SystemExit(main())

"""policy: while a task is RUNNING, turns the latest camera frames + robot state (+ simulator ground truth for
the scripted expert) into an Observation, runs the policy on its own thread, and publishes the ActionChunk
stamped with the task id and the capture time of the oldest frame used. All logic lives in
runtime/policy_loop.py (PolicyLoop); this node only converts messages and publishes."""
from __future__ import annotations

import dataclasses
import threading

import numpy as np
from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.node import Node
from sensor_msgs.msg import CompressedImage, Image

from vla_jepa_interfaces.msg import ActionChunk, ObjectPoses, RobotState, TaskStatus

from ..core.images import decode_compressed
from ..core.types import ACTION_SPACE_DELTA_EE, STATE_DIM_NAMES, TaskState, robot_state_vector
from ..ros.auth import declare_auth, sign_message, verify_message
from ..ros.conversions import chunk_to_msg, image_to_rgb, stamp_to_s
from ..ros.diagnostics import DiagnosticsPublisher
from ..ros.node_main import run_node
from ..ros.params import declare_params
from ..ros.qos import CAMERA_SUB_QOS, RELIABLE_QOS, STATUS_QOS
from ..runtime.factory import BackendParams, make_model_policy
from ..runtime.policy_loop import PolicyLoop

POLICIES = ("expert", "bundle")
# the controller executes franka_delta_ee chunks and this node feeds our state vector: a bundle made for other
# conventions (e.g. released LIBERO weights through `vla-jepa import`) is refused at load time
STACK_CONVENTIONS = {"action_space": ACTION_SPACE_DELTA_EE, "state_dim_names": STATE_DIM_NAMES}
TRANSPORTS = ("raw", "compressed")


@dataclasses.dataclass(frozen=True)
class PolicyNodeConfig:
    policy: str = dataclasses.field(default="expert", metadata={"help": f"policy: {', '.join(POLICIES)}"})
    bundle_path: str = dataclasses.field(default="", metadata={"help": "model bundle folder (policy=bundle)"})
    cameras: tuple[str, ...] = dataclasses.field(
        default=("front", "wrist"), metadata={"help": "camera names, in the bundle's view order"})
    image_transport: str = dataclasses.field(
        default="raw", metadata={"help": "raw: /cameras/<name>/image_raw (Image); compressed: .../compressed"})
    camera_width_px: int = dataclasses.field(default=0, metadata={"help": "expected frame width, 0 = any"})
    camera_height_px: int = dataclasses.field(default=0, metadata={"help": "expected frame height, 0 = any"})
    image_size_px: int = dataclasses.field(default=0, metadata={"help": "model input side; 0 = the bundle's"})
    action_dim: int = dataclasses.field(default=7, metadata={"help": "must match the bundle"})
    horizon: int = dataclasses.field(default=7, metadata={"help": "chunk steps; must match the bundle"})
    inference_rate_hz: float = dataclasses.field(default=5.0, metadata={"help": "chunks per second while running"})
    max_image_age_s: float = dataclasses.field(
        default=1.0, metadata={"help": "skip inference when a camera's latest frame is older than this (s)"})
    max_camera_skew_s: float = dataclasses.field(
        default=0.2, metadata={"help": "skip inference when capture times differ by more than this (s)"})
    use_ground_truth: bool = dataclasses.field(
        default=True, metadata={"help": "subscribe /sim/object_poses into observation.extras (scripted expert)"})
    expert_aim_noise_m: float = dataclasses.field(
        default=0.0, metadata={"help": "scripted expert only: std of a random xy offset of its aim points (DART data; "
                                       "relabel such bags with bags-to-dataset --relabel-expert), m"})
    expert_aim_noise_seed: int = dataclasses.field(default=0, metadata={"help": "seed of the aim offsets"})

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ValueError(f"policy={self.policy!r} is unknown; known: {', '.join(POLICIES)}")
        if self.image_transport not in TRANSPORTS:
            raise ValueError(f"image_transport={self.image_transport!r} must be one of {TRANSPORTS}")
        if not 0 < self.inference_rate_hz <= 100:
            raise ValueError(f"inference_rate_hz={self.inference_rate_hz} must be in (0, 100]")
        if not self.max_image_age_s > 0 or not self.max_camera_skew_s >= 0:
            raise ValueError(f"max_image_age_s={self.max_image_age_s} must be > 0 and max_camera_skew_s="
                             f"{self.max_camera_skew_s} >= 0")


def make_policy(config: PolicyNodeConfig, backend: BackendParams):
    if config.policy == "expert":
        from ..sim.expert import ExpertConfig, ScriptedExpertPolicy

        return ScriptedExpertPolicy(ExpertConfig(aim_noise_m=config.expert_aim_noise_m,
                                                 aim_noise_seed=config.expert_aim_noise_seed))
    return make_model_policy(config.bundle_path, backend, cameras=config.cameras, image_size_px=config.image_size_px,
                             action_dim=config.action_dim, horizon=config.horizon, **STACK_CONVENTIONS)


class PolicyNode(Node):
    def __init__(self) -> None:
        super().__init__("policy")
        self.config = c = declare_params(self, PolicyNodeConfig)
        self._signer, self._verifier = declare_auth(self)  # before the model: a missing key fails fast
        self.policy = make_policy(c, declare_params(self, BackendParams))
        self.loop = PolicyLoop(self.policy, c.cameras, c.max_image_age_s, c.max_camera_skew_s)
        self._expected_wh = (c.camera_width_px, c.camera_height_px) if c.camera_width_px > 0 else None
        self._phase = ""
        msg_type, suffix = (Image, "image_raw") if c.image_transport == "raw" else (CompressedImage, "compressed")
        for cam in c.cameras:
            lost = SubscriptionEventCallbacks(  # DDS counts frames lost on the way; /diagnostics shows them
                message_lost=lambda info, cam=cam: self.loop.lost_frames_reported(cam, info.total_count_change))
            self.create_subscription(msg_type, f"/cameras/{cam}/{suffix}", lambda m, cam=cam: self._on_image(cam, m),
                                     CAMERA_SUB_QOS, event_callbacks=lost)
        self.create_subscription(RobotState, "/franka/state", self._on_state, RELIABLE_QOS)
        self.create_subscription(TaskStatus, "/vla/task_status", self._on_status, STATUS_QOS)
        if c.use_ground_truth:
            self.create_subscription(ObjectPoses, "/sim/object_poses", self._on_poses, RELIABLE_QOS)
        self._chunk_pub = self.create_publisher(ActionChunk, "/vla/action_chunk", RELIABLE_QOS)
        self._diagnostics = DiagnosticsPublisher(self, "policy", c.policy)
        # The timer (sim time aware) only wakes the inference thread: executor callbacks never wait on the model.
        self._tick, self._stop = threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._run, name="policy-inference", daemon=True)
        self._thread.start()
        self.create_timer(1.0 / c.inference_rate_hz, self._tick.set)
        self.create_timer(1.0, self._publish_diagnostics)

    def _now_s(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _on_image(self, cam: str, msg) -> None:
        try:
            if isinstance(msg, Image):
                rgb = image_to_rgb(msg, self._expected_wh)
            else:
                rgb = decode_compressed(msg.data, msg.format, self._expected_wh)
        except ValueError as exc:
            self.get_logger().warning(self.loop.bad_frame(cam, str(exc)), throttle_duration_sec=5.0)
            return
        self.loop.put_frame(cam, rgb, stamp_to_s(msg.header.stamp))

    def _on_state(self, st: RobotState) -> None:
        self.loop.set_state(robot_state_vector(st.ee_position_m, st.ee_rpy_rad, st.gripper_width_m,
                                               st.gripper_open_commanded))

    def _on_status(self, msg: TaskStatus) -> None:
        if verify_message(self._verifier, msg) is not None:  # a forged status must not start or redirect inference
            self.get_logger().warning(f"task status refused: {self._verifier.explain()}", throttle_duration_sec=5.0)
            return
        self.loop.set_task(msg.task_id, msg.instruction, msg.state == TaskState.RUNNING)

    def _on_poses(self, msg: ObjectPoses) -> None:
        self.loop.set_extras({"object_poses": {
            n: (np.array([p.position.x, p.position.y, p.position.z]),
                np.array([p.orientation.x, p.orientation.y, p.orientation.z, p.orientation.w]))
            for n, p in zip(msg.names, msg.poses)}})

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self._tick.wait(timeout=0.2):
                continue
            self._tick.clear()
            try:
                chunk = self.loop.step(self._now_s())
            except Exception as exc:  # noqa: BLE001 - a backend fault must not kill the thread silently
                self.get_logger().error(f"inference failed: {exc!r}", throttle_duration_sec=5.0)
                continue
            if chunk is None:
                if self.loop.not_ready != "no running task":
                    self.get_logger().warning(f"not inferring: {self.loop.not_ready}", throttle_duration_sec=5.0)
                continue
            phase = getattr(self.policy, "last_phase", "")  # the scripted expert names its phase
            if phase and phase != self._phase:
                self._phase = phase
                self.get_logger().info(f"task {chunk.task_id}: {phase}")
            self._chunk_pub.publish(sign_message(self._signer, chunk_to_msg(chunk)))

    def _publish_diagnostics(self) -> None:
        d = self.loop.diagnostics(self._now_s())
        self._diagnostics.publish(d.level, d.message, {**d.values, **self._verifier.counts(
            ("vla_jepa_interfaces/TaskStatus",)), "auth_last_refusal": self._verifier.explain()})

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5.0)


def main(args=None) -> int:
    return run_node(PolicyNode, args)


if __name__ == "__main__":
    raise SystemExit(main())

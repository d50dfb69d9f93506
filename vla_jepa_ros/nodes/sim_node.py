"""sim: runs franky-sim's FR3 in the MuJoCo tabletop (robot + gripper servers on localhost), publishes /clock,
the cameras and ground-truth object poses, and ends a running task through /vla/finish_task when its
ground-truth success check holds.

A task that ends because the controller's homing failed leaves the arm wherever it got stuck, and every next
homing would fail from there: the sim puts the arm back at home (reset_arm_on_failed_homing) and says so on
/sim/events, so one episode's wreck does not carry into the next."""
from __future__ import annotations

import dataclasses

from rclpy.node import Node
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Image
from geometry_msgs.msg import Pose
from std_msgs.msg import String
from std_srvs.srv import SetBool

from vla_jepa_interfaces.msg import ObjectPoses, TaskStatus

from ..core.types import TaskState
from ..robot.controller import FR3_HOME_Q_RAD
from ..ros.auth import declare_auth, verify_message
from ..ros.conversions import rgb_to_image, s_to_stamp
from ..ros.diagnostics import DiagnosticsPublisher
from ..ros.node_main import run_node
from ..ros.params import declare_params
from ..ros.qos import RELIABLE_QOS, SENSOR_QOS, STATUS_QOS
from ..sim.tasks import SuccessCheck, SuccessConfig, parse_instruction
from ..sim.world import SimWorld, SimWorldConfig


@dataclasses.dataclass(frozen=True)
class SimNodeConfig:
    camera_rate_hz: float = dataclasses.field(default=10.0, metadata={"help": "camera frames per sim second"})
    object_pose_rate_hz: float = dataclasses.field(
        default=20.0, metadata={"help": "ground-truth poses and success checks per sim second"})
    clock_period_s: float = dataclasses.field(default=0.005, metadata={"help": "/clock publish period (sim s)"})
    layout_seed: int = dataclasses.field(
        default=-1, metadata={"help": "task k runs on the random layout of seed layout_seed + k - 1; -1 = fixed layout"})
    reset_on_task_start: bool = dataclasses.field(
        default=True, metadata={"help": "a new layout for every task: the first at startup, the next one as soon as "
                                        "a task ends (never at a task's start: no frame of a task shows the last one)"})

    reset_arm_on_failed_homing: bool = dataclasses.field(
        default=True, metadata={"help": "when a task ends ABORTED by a failed homing, put the arm at home_q_rad "
                                        "(simulator state, no motion) so the next task starts clean"})
    home_q_rad: tuple[float, ...] = dataclasses.field(
        default=FR3_HOME_Q_RAD, metadata={"help": "where reset_arm_on_failed_homing puts the arm (rad)"})

    def __post_init__(self) -> None:
        if len(self.home_q_rad) != 7:
            raise ValueError(f"home_q_rad={self.home_q_rad} needs 7 joint positions")
        for name in ("camera_rate_hz", "object_pose_rate_hz"):
            if not 0 < getattr(self, name) <= 200:
                raise ValueError(f"{name}={getattr(self, name)} must be in (0, 200]")
        if not 0.001 <= self.clock_period_s <= 0.1:
            raise ValueError(f"clock_period_s={self.clock_period_s} must be in [0.001, 0.1]")


class SimNode(Node):
    def __init__(self) -> None:
        super().__init__("sim")
        self.config = declare_params(self, SimNodeConfig)
        _, self._verifier = declare_auth(self)
        world_config = declare_params(self, SimWorldConfig, "world")
        self.success_config = dataclasses.replace(  # the check measures the objects the world actually has
            declare_params(self, SuccessConfig, "success"), cube_size_m=world_config.cube_size_m,
            bowl_inner_radius_m=world_config.bowl_inner_radius_m)
        self.world = SimWorld(world_config)
        self._clock_pub = self.create_publisher(Clock, "/clock", 10)
        self._image_pubs = {c: self.create_publisher(Image, f"/cameras/{c}/image_raw", SENSOR_QOS)
                            for c in self.world.config.cameras}
        self._poses_pub = self.create_publisher(ObjectPoses, "/sim/object_poses", RELIABLE_QOS)
        self._events_pub = self.create_publisher(String, "/sim/events", RELIABLE_QOS)
        self._arm_reset_for = ""  # task whose failed homing asked for an arm reset
        self._arm_reset_reported = True
        self._finish = self.create_client(SetBool, "/vla/finish_task")
        self._status: TaskStatus | None = None
        self._diagnostics = DiagnosticsPublisher(self, "sim")
        self.create_timer(1.0, self._publish_diagnostics)
        self._task_id = ""
        self._tasks_seen = 0
        self._layout_task = 0  # number of the task (1, 2, ...) whose layout is in place; 0: none placed
        self._check: SuccessCheck | None = None
        self.create_subscription(TaskStatus, "/vla/task_status", self._on_status, STATUS_QOS)
        self.world.add_time_hook(self._publish_clock, self.config.clock_period_s)
        self.world.start()
        if self.config.reset_on_task_start:
            self._place_layout(1)
        self.create_timer(1.0 / self.config.camera_rate_hz, self._publish_cameras)
        self.create_timer(1.0 / self.config.object_pose_rate_hz, self._publish_poses)
        self.get_logger().info(f"franky-sim FR3 serving on {self.world.robot_host} (robot 1337, gripper 1338); "
                               f"cameras {list(self.world.config.cameras)}")

    def _publish_clock(self, time_s: float) -> None:  # physics thread
        self._clock_pub.publish(Clock(clock=s_to_stamp(time_s)))

    def _on_status(self, msg: TaskStatus) -> None:
        if verify_message(self._verifier, msg) is not None:  # a forged status must not re-place the layout
            self.get_logger().warning(f"task status refused: {self._verifier.explain()}", throttle_duration_sec=5.0)
            return
        self._status = msg
        self._update_task()

    def _publish_diagnostics(self) -> None:
        self._diagnostics.publish("ok", "running", {**self._verifier.counts(("vla_jepa_interfaces/TaskStatus",)),
                                                    "auth_last_refusal": self._verifier.explain()})

    def _publish_cameras(self) -> None:
        snapshot = self.world.snapshot()
        for name, pub in self._image_pubs.items():
            rgb, stamp_s = self.world.render(name, snapshot)
            pub.publish(rgb_to_image(rgb, stamp_s, name))

    def _publish_poses(self) -> None:
        self._update_task()
        if not self._arm_reset_reported and self.world.arm_reset_done:
            self._arm_reset_reported = True
            event = f"arm reset to home_q_rad after the failed homing of task {self._arm_reset_for}"
            self.get_logger().warning(event)
            self._events_pub.publish(String(data=event))
        snapshot = self.world.snapshot()
        poses = self.world.object_poses(snapshot)
        msg = ObjectPoses(names=list(poses))
        msg.header.stamp = s_to_stamp(snapshot.time_s)
        msg.header.frame_id = "base"
        for p, q in poses.values():
            pose = Pose()
            pose.position.x, pose.position.y, pose.position.z = (float(v) for v in p)
            pose.orientation.x, pose.orientation.y, pose.orientation.z, pose.orientation.w = (float(v) for v in q)
            msg.poses.append(pose)
        self._poses_pub.publish(msg)
        if self._check is not None and not self._check.succeeded and self._check.update(poses, snapshot.time_s):
            self.get_logger().info(f"task {self._task_id}: {self._check.spec.instruction!r} succeeded")
            self._finish.call_async(SetBool.Request(data=True))

    def _update_task(self) -> None:
        s = self._status
        running = s is not None and s.state == TaskState.RUNNING
        if running and s.task_id != self._task_id:
            self._task_id = s.task_id
            self._tasks_seen += 1
            if self.config.reset_on_task_start and self._layout_task != self._tasks_seen:
                # Only if the end of the last task was missed: a camera frame rendered before this reset is stamped
                # after the task's start, and the recorder and the policy would take the last layout as its first frame.
                self._place_layout(self._tasks_seen)
            spec = parse_instruction(s.instruction, self.world.config.cube_colours)
            self._check = SuccessCheck(spec, self.success_config) if spec else None
            if spec is None:
                self.get_logger().warning(f"task {s.task_id}: no success check for {s.instruction!r}; "
                                          "it can only end by timeout or stop")
        elif not running:
            self._check = None
            if (self.config.reset_arm_on_failed_homing and s is not None and s.state == TaskState.ABORTED
                    and s.message.startswith("robot fault: homing") and s.task_id != self._arm_reset_for):
                self._arm_reset_for, self._arm_reset_reported = s.task_id, False
                self.world.reset_arm(self.config.home_q_rad, wait=False)  # applied once the stopped arm is idle
            if self.config.reset_on_task_start and self._task_id and self._layout_task == self._tasks_seen:
                self._place_layout(self._tasks_seen + 1)  # the task ended: set the next one's table now

    def _place_layout(self, task_number: int) -> None:
        """Place the objects of task `task_number` (1-based): layout seed layout_seed + task_number - 1."""
        seed = self.config.layout_seed + task_number - 1 if self.config.layout_seed >= 0 else None
        self.world.reset(seed=seed)
        self._layout_task = task_number
        self.get_logger().info(f"layout {'seed ' + str(seed) if seed is not None else 'default'} placed for "
                               f"task #{task_number}")

    def close(self) -> None:
        self.world.close()


def main(args=None) -> int:
    # the renderer's GL context belongs to the executor thread that created it (run_node spins one thread)
    return run_node(SimNode, args)


if __name__ == "__main__":
    raise SystemExit(main())

"""franka_controller: executes action chunks of the running task on a Franka arm through franky.

Chunk -> ChunkExecutor (validation, replacement, watchdog, staleness) -> SafetyEnvelope -> asynchronous
Cartesian target. Publishes /franka/joint_states, /franka/ee_pose, /franka/state and /diagnostics at
state_rate_hz. /franka/estop (Bool true) stops the arm at once and refuses motion until released.

Chunks, task status and e-stop releases must be signed with the deployment's key (docs/security.md): others
are dropped here, before anything reaches the executor, and counted per reason on /diagnostics. Releasing the
e-stop (a signed EStopRelease on /franka/estop_release; Bool false is refused) never resumes the task that was
running: the controller refuses that task's chunks and reports it as a fault, so the task manager ends it.
A watchdog thread on the wall clock faults the controller (and so ends the running task) when sim time stops
advancing (/clock stalled: the sim is stopped or dead) or no robot state has been read for a while (a silent arm);
it runs outside the executor, so a franky call that blocks on a silent robot cannot silence it too.
"""
from __future__ import annotations

import dataclasses
import os
import sys
import threading
import time

from geometry_msgs.msg import PoseStamped
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool

from vla_jepa_interfaces.msg import ActionChunk, EStopRelease, RobotState, TaskStatus

from ..core.chunk_executor import ChunkExecutor, ExecutorConfig, Mode, Verdict
from ..core.geometry import matrix_to_quat, matrix_to_rpy
from ..core.safety import SafetyConfig, SafetyEnvelope
from ..core.types import TaskState
from ..robot.arm import ArmError
from ..robot.controller import ArmController, ControllerConfig
from ..robot.franky_arm import FrankyArm, FrankyArmConfig
from ..ros.auth import declare_auth, verify_message
from ..ros.conversions import msg_to_chunk
from ..ros.diagnostics import DiagnosticsPublisher
from ..ros.node_main import run_node
from ..ros.params import declare_params
from ..ros.qos import RELIABLE_QOS, STATUS_QOS

_MODES = {Mode.IDLE: RobotState.MODE_IDLE, Mode.EXECUTING: RobotState.MODE_EXECUTING,
          Mode.HOLDING: RobotState.MODE_HOLDING, Mode.ESTOP: RobotState.MODE_ESTOP, Mode.HOMING: RobotState.MODE_HOMING}
AUTH_KINDS = ("vla_jepa_interfaces/ActionChunk", "vla_jepa_interfaces/TaskStatus", "vla_jepa_interfaces/EStopRelease")
JOINT_NAMES = [f"fr3_joint{i}" for i in range(1, 8)]


@dataclasses.dataclass(frozen=True)
class ControllerNodeConfig:
    control_rate_hz: float = dataclasses.field(default=100.0, metadata={"help": "executor ticks per second"})
    state_rate_hz: float = dataclasses.field(default=30.0, metadata={"help": "state topics per second"})
    connect_retry_s: float = dataclasses.field(default=1.0, metadata={"help": "wait between connection attempts (s)"})
    clock_stall_timeout_s: float = dataclasses.field(
        default=1.5, metadata={"help": "with use_sim_time: fault when sim time has not advanced for this long (wall s)"})
    arm_silence_timeout_s: float = dataclasses.field(
        default=1.5, metadata={"help": "fault when robot state reads have failed, or one has not returned, for this "
                                       "long (wall s)"})

    def __post_init__(self) -> None:
        for name in ("clock_stall_timeout_s", "arm_silence_timeout_s"):
            if not 0.1 <= getattr(self, name) <= 60:
                raise ValueError(f"{name}={getattr(self, name)} must be in [0.1, 60] s")
        for name in ("control_rate_hz", "state_rate_hz"):
            if not 0 < getattr(self, name) <= 1000:
                raise ValueError(f"{name}={getattr(self, name)} must be in (0, 1000]")
        if not self.connect_retry_s > 0:
            raise ValueError(f"connect_retry_s={self.connect_retry_s} must be > 0")


def _pose_msg(position_m, quat_xyzw, stamp) -> PoseStamped:
    pose = PoseStamped()
    pose.header.stamp, pose.header.frame_id = stamp, "base"
    pose.pose.position.x, pose.pose.position.y, pose.pose.position.z = (float(v) for v in position_m)
    o = pose.pose.orientation
    o.x, o.y, o.z, o.w = (float(v) for v in quat_xyzw)
    return pose


class FrankaControllerNode(Node):
    def __init__(self) -> None:
        super().__init__("franka_controller")
        self.config = declare_params(self, ControllerNodeConfig)
        self.arm = FrankyArm(declare_params(self, FrankyArmConfig, "arm"))
        self.controller = ArmController(self.arm, ChunkExecutor(declare_params(self, ExecutorConfig, "executor")),
                                        SafetyEnvelope(declare_params(self, SafetyConfig, "safety")),
                                        declare_params(self, ControllerConfig))
        self._chunk_msg: ActionChunk | None = None
        self._status: TaskStatus | None = None
        self._next_connect_s = 0.0
        _, self._verifier = declare_auth(self)
        self._estop_task = ""  # the task running when the e-stop was engaged: it never resumes
        self._bool_releases_refused = 0
        self.create_subscription(ActionChunk, "/vla/action_chunk", self._on_chunk, RELIABLE_QOS)
        self.create_subscription(TaskStatus, "/vla/task_status", self._on_status, STATUS_QOS)
        # E-stop acts in its callback (not on the next tick): stopping the arm is the one job that cannot wait.
        self.create_subscription(Bool, "/franka/estop", self._on_estop, RELIABLE_QOS)
        self.create_subscription(EStopRelease, "/franka/estop_release", self._on_estop_release, RELIABLE_QOS)
        self._joint_pub = self.create_publisher(JointState, "/franka/joint_states", RELIABLE_QOS)
        self._pose_pub = self.create_publisher(PoseStamped, "/franka/ee_pose", RELIABLE_QOS)
        self._state_pub = self.create_publisher(RobotState, "/franka/state", RELIABLE_QOS)
        self._target_pub = self.create_publisher(PoseStamped, "/franka/target_pose", RELIABLE_QOS)
        self._diagnostics = DiagnosticsPublisher(self, "franka_controller", self.arm.config.robot_host)
        self.create_timer(1.0 / self.config.control_rate_hz, self._control)
        self.create_timer(1.0 / self.config.state_rate_hz, self._publish_state)
        self.create_timer(1.0, self._publish_diagnostics)
        self._read_started_s: float | None = None  # time.monotonic() when a robot state read now running began
        self._reads_failing_since_s: float | None = None  # ... when reads began to fail (None: the last one worked)
        self._clock_seen = (-1.0, time.monotonic())  # (sim time, wall time when it last changed)
        self._watchdog_stop = threading.Event()
        self._watchdog_thread = threading.Thread(target=self._watchdog_loop, name="clock-arm-watchdog", daemon=True)
        self._watchdog_thread.start()

    def _now_s(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _authentic(self, msg, what: str) -> bool:
        reason = verify_message(self._verifier, msg)
        if reason is not None:
            self.get_logger().warning(f"{what} refused: {self._verifier.explain()}", throttle_duration_sec=2.0)
        return reason is None

    def _on_chunk(self, msg: ActionChunk) -> None:
        if self._authentic(msg, f"chunk {msg.sequence} for task {msg.task_id!r}"):
            self._chunk_msg = msg

    def _on_status(self, msg: TaskStatus) -> None:
        if self._authentic(msg, f"task status {msg.task_id!r}"):
            self._status = msg

    def _on_estop(self, msg: Bool) -> None:
        if not msg.data:  # anyone may stop the arm; releasing needs a signed EStopRelease
            self._bool_releases_refused += 1
            self.get_logger().warning("e-stop release through /franka/estop (Bool false) refused: publish a signed "
                                      "EStopRelease on /franka/estop_release (vla-jepa estop-release)",
                                      throttle_duration_sec=2.0)
            return
        if not self.controller.executor.estop and self.controller.executor.task_id:
            self._estop_task = self.controller.executor.task_id
        self.controller.set_estop(True)
        self.get_logger().warning("e-stop ENGAGED: arm stopped" + (
            f"; task {self._estop_task!r} cannot resume" if self._estop_task else ""))

    def _on_estop_release(self, msg: EStopRelease) -> None:
        if not self._authentic(msg, "e-stop release"):
            return
        if self.controller.executor.estop:
            self._estop_task = self.controller.executor.task_id or self._estop_task  # a new task is needed
            self.controller.set_estop(False)
            self.get_logger().warning(f"e-stop released by {msg.released_by or '?'!r} ({msg.reason or 'no reason'})"
                                      + (f"; task {self._estop_task!r} stays stopped: start a new task"
                                         if self._estop_task else ""))

    def _control(self) -> None:
        if not self.arm.connected:
            return
        now = self._now_s()
        s = self._status
        running = s.task_id if s is not None and s.state == TaskState.RUNNING else ""
        if self._estop_task and running != self._estop_task and not self.controller.executor.estop:
            self._estop_task = ""  # released and that task has ended (a restarted task manager may reuse its id)
        self.controller.set_task(running if running != self._estop_task else "", now)
        msg, self._chunk_msg = self._chunk_msg, None
        if msg is not None:
            try:
                result = self.controller.submit(msg_to_chunk(msg), now)
            except ValueError as exc:  # malformed message (sizes disagree, bad period)
                self.controller.executor.rejected += 1
                self.controller.executor.last_reason = str(exc)
                self.get_logger().warning(f"chunk {msg.sequence} rejected: {exc}")
            else:
                if result.verdict is not Verdict.ACCEPTED:
                    self.get_logger().warning(f"chunk {msg.sequence} {result.verdict.value}: {result.reason}",
                                              throttle_duration_sec=2.0)
        recovered, stops = self.controller.report.planner_faults_recovered, self.controller.report.protective_stops
        decision = self.controller.tick(now)
        if self.controller.report.protective_stops > stops:
            self.get_logger().error(f"{self.controller.report.error}; motion refused until a new task starts")
        if self.controller.report.planner_faults_recovered > recovered:
            self.get_logger().warning(f"task {self.controller.executor.task_id}: "
                                      f"{self.controller.report.last_recovered_error}; recovered, the task goes on "
                                      f"({self.controller.report.planner_faults_recovered} of planner_fault_retries="
                                      f"{self.controller.config.planner_fault_retries})")
        target = self.controller.report.target
        if decision.action is not None and target is not None:  # also in dry_run: what would have been sent
            self._target_pub.publish(_pose_msg(target.position_m, matrix_to_quat(target.rotation),
                                               self.get_clock().now().to_msg()))

    def _publish_state(self) -> None:
        if not self.arm.connected:
            if time.monotonic() >= self._next_connect_s:
                self._next_connect_s = time.monotonic() + self.config.connect_retry_s
                try:
                    self.arm.connect()
                    self.get_logger().info(f"connected to {self.arm.config.robot_host}")
                except ArmError as exc:
                    self.get_logger().warning(str(exc), throttle_duration_sec=10.0)
            self._state_pub.publish(RobotState(mode=RobotState.MODE_DISCONNECTED, dry_run=self.controller.config.dry_run,
                                               error="not connected"))
            return
        self._read_started_s = time.monotonic()
        try:
            st = self.arm.state()
        except ArmError as exc:
            self._read_started_s = None
            self._reads_failing_since_s = self._reads_failing_since_s or time.monotonic()
            self.controller.report.error = str(exc)
            return
        self._read_started_s = self._reads_failing_since_s = None
        stamp = self.get_clock().now().to_msg()
        r, ex = self.controller.report, self.controller.executor
        quat = matrix_to_quat(st.rotation)
        joints = JointState(name=JOINT_NAMES, position=st.q_rad.tolist(), velocity=st.dq_rad_s.tolist())
        joints.header.stamp = stamp
        self._joint_pub.publish(joints)
        self._pose_pub.publish(_pose_msg(st.position_m, quat, stamp))
        mode, task_id, error = RobotState.MODE_FAULT if r.fault else _MODES[r.mode], ex.task_id, r.error
        s = self._status
        if not ex.estop and self._estop_task and s is not None and s.task_id == self._estop_task \
                and s.state == TaskState.RUNNING:  # released, but that task is still running: have it ended
            mode, task_id = RobotState.MODE_FAULT, self._estop_task
            error = f"the e-stop was engaged during task {self._estop_task!r}: it cannot resume; start a new task"
        msg = RobotState(mode=mode, ee_position_m=st.position_m.tolist(),
                         ee_orientation_xyzw=quat.tolist(), ee_rpy_rad=matrix_to_rpy(st.rotation).tolist(),
                         q_rad=st.q_rad.tolist(), dq_rad_s=st.dq_rad_s.tolist(), gripper_width_m=st.gripper_width_m,
                         gripper_open_commanded=r.gripper_open_commanded, dry_run=self.controller.config.dry_run,
                         task_id=task_id, steps_executed=ex.steps_executed, steps_clipped=r.steps_clipped,
                         chunks_rejected=ex.rejected, chunks_stale=ex.stale, last_clip_reason=r.last_clip_reason,
                         error=error)
        msg.header.stamp = stamp
        self._state_pub.publish(msg)

    def _watchdog_loop(self, period_s: float = 0.1) -> None:
        while not self._watchdog_stop.wait(period_s):
            try:
                self._watchdog()
            except Exception as exc:  # noqa: BLE001  (shutting down: the context is gone)
                if self.context.ok():
                    self.get_logger().error(f"watchdog: {exc}")

    def _watchdog(self) -> None:
        """Fault when /clock has stalled or the arm has gone silent (wall time); publish the fault itself, since
        the state timer runs on the stalled clock. Touches no franky call (one could block)."""
        if not self.arm.connected:
            return
        wall = time.monotonic()
        reasons = []
        if self.get_parameter("use_sim_time").value:
            sim = self._now_s()
            if sim != self._clock_seen[0]:
                self._clock_seen = (sim, wall)
            elif sim > 0 and wall - self._clock_seen[1] > self.config.clock_stall_timeout_s:
                reasons.append(f"sim clock stalled: /clock has not advanced for {wall - self._clock_seen[1]:.1f} s "
                               f"(clock_stall_timeout_s={self.config.clock_stall_timeout_s:g}, wall)")
        started, failing = self._read_started_s, self._reads_failing_since_s
        limit = self.config.arm_silence_timeout_s
        if started is not None and wall - started > limit:
            reasons.append(f"arm silent: a robot state read has not returned for {wall - started:.1f} s "
                           f"(arm_silence_timeout_s={limit:g}, wall)")
        elif failing is not None and wall - failing > limit:
            reasons.append(f"arm silent: no robot state for {wall - failing:.1f} s ({self.controller.report.error}; "
                           f"arm_silence_timeout_s={limit:g}, wall)")
        if not reasons:
            return
        r, ex = self.controller.report, self.controller.executor
        if not r.fault:
            self.get_logger().error(f"task {ex.task_id or '-'}: {'; '.join(reasons)}; holding")
            ex.clear(self._now_s())  # nothing of the current chunk runs when the clock comes back
        r.fault, r.error = True, "; ".join(reasons)
        msg = RobotState(mode=RobotState.MODE_FAULT, dry_run=self.controller.config.dry_run, task_id=ex.task_id,
                         steps_executed=ex.steps_executed, error=r.error)
        msg.header.stamp = self.get_clock().now().to_msg()
        self._state_pub.publish(msg)

    def _publish_diagnostics(self) -> None:
        r, ex = self.controller.report, self.controller.executor
        level = "error" if r.fault or not self.arm.connected else ("warn" if ex.estop else "ok")
        message = r.error or ("not connected" if not self.arm.connected else ("e-stop engaged" if ex.estop else r.mode.value))
        self._diagnostics.publish(level, message, {
            "task_id": ex.task_id, "chunks_accepted": ex.accepted, "chunks_rejected": ex.rejected,
            "chunks_stale": ex.stale, "steps_executed": ex.steps_executed, "steps_clipped": r.steps_clipped,
            "last_clip_reason": r.last_clip_reason, "last_reject_reason": ex.last_reason,
            "recoveries": r.recoveries, "planner_faults_recovered": r.planner_faults_recovered,
            "protective_stop": r.protective_stop, "protective_stops": r.protective_stops,
            "commands_limited": r.commands_limited, "gripper_toggles_delayed": r.gripper_toggles_delayed,
            "last_recovered_error": r.last_recovered_error, "dry_run": self.controller.config.dry_run,
            **self._verifier.counts(AUTH_KINDS), "auth_last_refusal": self._verifier.explain(),
            "estop_release_refused.bool_false": self._bool_releases_refused, "estop_task": self._estop_task})

    def close(self) -> None:
        self._watchdog_stop.set()
        self._watchdog_thread.join(timeout=1.0)
        self.arm.close(release=False)  # main() exits without running franky's destructors


def main(args=None) -> int:
    code = run_node(FrankaControllerNode, args)
    # The arm is stopped and the node closed. franky's C++ destructors can block forever when the robot link
    # is already gone (franky-sim stopped first, a cable pulled), so leave without interpreter teardown.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    raise SystemExit(main())

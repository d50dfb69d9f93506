"""task_manager: the one place tasks start and end (services, action, stop, finish, re-instruct, status).

A controller fault during the running task (RobotState.mode == MODE_FAULT for that task, e.g. a reflex or a
homing that did not reach home) ends the task ABORTED with the controller's error: the arm holds, and the caller
learns why at once instead of after the timeout.

No task is left without an ending: a watched node (sim, policy, franka_controller) that goes silent on
/vla/heartbeat for heartbeat_timeout_s of wall time (killed, stopped, exited) ends the running task ABORTED naming
it, and no task starts while one is lost. The watch runs on the steady clock, so a stopped /clock cannot freeze it.
A second task manager in the same ROS domain refuses to start (it would publish its own status over this one's)."""
from __future__ import annotations

import dataclasses
import threading
import time

from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.action.server import GoalEvent
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor, ShutdownException
from rclpy.node import Node
from std_msgs.msg import String
from std_srvs.srv import SetBool, Trigger

from vla_jepa_interfaces.action import RunTask
from vla_jepa_interfaces.msg import ActionChunk, RobotState, TaskStatus
from vla_jepa_interfaces.srv import ExecuteTask

from ..core.task import Decision, Liveness, TaskConfig, TaskMachine, lost_message
from ..core.types import TaskState
from ..ros.auth import declare_auth, sign_message, verify_message
from ..ros.heartbeat import HEARTBEAT_TOPIC, steady_clock
from ..ros.node_main import run_node
from ..ros.params import declare_params
from ..ros.qos import RELIABLE_QOS, SERVICE_QOS, STATUS_QOS


@dataclasses.dataclass(frozen=True)
class StatusParams:
    status_rate_hz: float = dataclasses.field(
        default=2.0, metadata={"help": "republish /vla/task_status at this rate (keeps elapsed_s fresh), Hz"})
    abort_on_robot_fault: bool = dataclasses.field(
        default=True, metadata={"help": "end the running task ABORTED when /franka/state reports a fault for it "
                                        "(false: the controller recovers and the task goes on)"})
    watched_nodes: tuple[str, ...] = dataclasses.field(
        default=("sim", "policy", "franka_controller"),
        metadata={"help": "nodes whose silence on /vla/heartbeat ends the running task ABORTED (each is watched once "
                          "heard; empty: watch none)"})
    heartbeat_timeout_s: float = dataclasses.field(
        default=1.0, metadata={"help": "a watched node silent this long is lost (wall seconds, whatever the clock)"})
    peer_check_s: float = dataclasses.field(
        default=5.0, metadata={"help": "at startup, look up to this long (wall s) for another task manager in the "
                                       "domain (less once other nodes are found); one found: refuse to start "
                                       "(0: do not look)"})

    def __post_init__(self) -> None:
        if not 0 < self.status_rate_hz <= 100:
            raise ValueError(f"status_rate_hz={self.status_rate_hz} must be in (0, 100]")
        if not 0.2 <= self.heartbeat_timeout_s <= 60:
            raise ValueError(f"heartbeat_timeout_s={self.heartbeat_timeout_s} must be in [0.2, 60] s")
        if not 0 <= self.peer_check_s <= 30:
            raise ValueError(f"peer_check_s={self.peer_check_s} must be in [0, 30] s")


class TaskManagerNode(Node):
    def __init__(self) -> None:
        super().__init__("task_manager")
        config = declare_params(self, TaskConfig)
        params = declare_params(self, StatusParams)
        self._signer, self._verifier = declare_auth(self)
        self._refuse_if_another_task_manager(params.peer_check_s)
        self._machine = TaskMachine(config)
        self._lock = threading.Lock()
        self._liveness = Liveness(params.watched_nodes, params.heartbeat_timeout_s)
        self._lost: dict[str, float] = {}
        self._last_watch_s = time.monotonic()
        self._status_pub = self.create_publisher(TaskStatus, "/vla/task_status", STATUS_QOS)
        self.create_service(ExecuteTask, "/vla/execute_task", self._on_execute, qos_profile=SERVICE_QOS)
        self.create_service(Trigger, "/vla/stop", self._on_stop, qos_profile=SERVICE_QOS)
        self.create_service(SetBool, "/vla/finish_task", self._on_finish, qos_profile=SERVICE_QOS)
        self.create_subscription(String, "/vla/instruction", self._on_instruction, RELIABLE_QOS)
        self.create_subscription(ActionChunk, "/vla/action_chunk", self._on_chunk, RELIABLE_QOS)
        if params.abort_on_robot_fault:
            self.create_subscription(RobotState, "/franka/state", self._on_robot_state, RELIABLE_QOS)
        self.create_timer(1.0 / params.status_rate_hz, self._tick)
        self.create_subscription(String, HEARTBEAT_TOPIC, self._on_heartbeat, RELIABLE_QOS)
        self.create_timer(0.05, self._watch_nodes, clock=steady_clock())
        # An action goal lives as long as its task, and rclpy runs execute_callback to completion (an awaiting
        # coroutine is resumed on every executor pass: a busy loop). So the action server sits on a helper node
        # with its own two-thread executor: one thread waits out the goal, the other answers new goals, cancels
        # and result requests, one at a time (the server's default mutually exclusive group: rclpy answers a
        # goal before it registers it, so a result request served in parallel could find no goal). The helper
        # never uses sim time itself (no /clock traffic); it reads the task machine's clock.
        self._action_node = Node("task_manager_action", context=self.context, use_global_arguments=False,
                                 start_parameter_services=False)
        self._action = ActionServer(self._action_node, RunTask, "/vla/run_task", execute_callback=self._execute_goal,
                                    goal_callback=self._on_goal, cancel_callback=lambda _: CancelResponse.ACCEPT,
                                    goal_service_qos_profile=SERVICE_QOS, result_service_qos_profile=SERVICE_QOS,
                                    cancel_service_qos_profile=SERVICE_QOS)
        self._action_executor = MultiThreadedExecutor(num_threads=2, context=self.context)
        self._action_executor.add_node(self._action_node)
        self._action_thread = threading.Thread(target=self._spin_action, name="run-task-action", daemon=True)
        self._action_thread.start()
        self._publish()

    def _now_s(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _refuse_if_another_task_manager(self, wait_s: float) -> None:
        """Raise ValueError (run_node: one line, exit 2) when another task manager publishes /vla/task_status here.
        Looks until discovery has had a second to settle after finding the first other node (or wait_s). Only a
        live one counts: its transient-local status must arrive (a killed one lingers in discovery a while)."""
        from rclpy.wait_for_message import wait_for_message

        t0 = time.monotonic()
        nodes_seen_s = None
        while time.monotonic() - t0 < wait_s:
            others = self.get_publishers_info_by_topic("/vla/task_status")
            if others:
                alive, _ = wait_for_message(TaskStatus, self, "/vla/task_status", qos_profile=STATUS_QOS,
                                            time_to_wait=max(1.0, wait_s - (time.monotonic() - t0)))
                if alive:
                    names = ", ".join(sorted({f"{i.node_namespace.rstrip('/')}/{i.node_name}" for i in others}))
                    raise ValueError(f"another task manager ({names}) publishes /vla/task_status in this ROS domain; "
                                     "two would end each other's tasks. Stop it, or use another ROS_DOMAIN_ID")
                return
            if nodes_seen_s is None and len(self.get_node_names()) > 1:
                nodes_seen_s = time.monotonic()
            if nodes_seen_s is not None and time.monotonic() - nodes_seen_s > 1.0:
                return
            time.sleep(0.1)

    def _on_heartbeat(self, msg: String) -> None:
        self._liveness.beat(msg.data, time.monotonic())

    def _watch_nodes(self) -> None:
        """Wall-clock timer: end the running task when a watched node has gone silent; log losses once."""
        now, last = time.monotonic(), self._last_watch_s
        self._last_watch_s = now
        if now - last > 0.5:  # this process was starved itself: take the beats waiting in the queue first
            return
        lost = self._liveness.lost(now)
        for name in lost.keys() - self._lost.keys():
            self.get_logger().error(f"node {name!r} lost: no heartbeat for {lost[name]:.1f} s")
        for name in self._lost.keys() - lost.keys():
            self.get_logger().info(f"node {name!r} is back")
        self._lost = lost
        if lost and self._machine.running:
            with self._lock:
                if not self._machine.running:
                    return
                decision = self._machine.finish(TaskState.ABORTED, lost_message(lost), self._now_s())
                self._publish()
            self.get_logger().error(decision.message)

    def _start(self, instruction: str, timeout_s: float, record: bool):
        """Start a task unless a watched node is lost (it could not be carried out)."""
        lost = self._liveness.lost(time.monotonic())
        if lost:
            decision = Decision(False, f"{lost_message(lost)}; restart it before starting a task")
            self.get_logger().warning(f"refused: {decision.message}")
            return decision
        return self._apply(self._machine.start, instruction, timeout_s, record, self._now_s())

    def _publish(self) -> None:
        s = self._machine.status(self._now_s())
        msg = TaskStatus(task_id=s.task_id, instruction=s.instruction, state=int(s.state), steps=s.steps,
                         elapsed_s=s.elapsed_s, timeout_s=s.timeout_s, record=s.record, message=s.message)
        msg.header.stamp = self.get_clock().now().to_msg()
        self._status_pub.publish(sign_message(self._signer, msg))

    def _apply(self, fn, *args):
        """Run a state-machine call under the lock, log it, publish the new status when it changed anything."""
        with self._lock:
            decision = fn(*args)
            if decision.accepted:
                self._publish()
        if decision.accepted:
            self.get_logger().info(decision.message)
        else:
            self.get_logger().warning(f"refused: {decision.message}")
        return decision

    def _on_execute(self, req, res):
        d = self._start(req.instruction, req.timeout_s, req.record)
        res.accepted, res.task_id, res.message = d.accepted, d.task_id, d.message
        return res

    def _on_stop(self, _req, res):
        d = self._apply(self._machine.finish, TaskState.CANCELED, "stopped by /vla/stop", self._now_s())
        res.success, res.message = d.accepted, d.message
        return res

    def _on_finish(self, req, res):
        state = TaskState.SUCCEEDED if req.data else TaskState.FAILED
        d = self._apply(self._machine.finish, state, "declared through /vla/finish_task", self._now_s())
        res.success, res.message = d.accepted, d.message
        return res

    def _on_instruction(self, msg: String) -> None:
        self._apply(self._machine.reinstruct, msg.data)

    def _on_chunk(self, msg: ActionChunk) -> None:
        if verify_message(self._verifier, msg) is not None:  # forged chunks do not count as steps
            return
        with self._lock:
            if self._machine.running and msg.task_id == self._machine.status(0.0).task_id:
                self._machine.add_steps(1)
                self._last_latency_ms = msg.inference_ms

    def _on_robot_state(self, msg: RobotState) -> None:
        if msg.mode != RobotState.MODE_FAULT:
            return
        with self._lock:  # faults repeat at the state rate: once the task has ended they match nothing
            if not (self._machine.running and msg.task_id == self._machine.status(0.0).task_id):
                return
            decision = self._machine.finish(TaskState.ABORTED, f"robot fault: {msg.error or 'no message'}",
                                            self._now_s())
            self._publish()
        self.get_logger().warning(decision.message)

    def _tick(self) -> None:
        with self._lock:
            if self._machine.tick(self._now_s()):
                self.get_logger().warning(f"task failed: {self._machine.status(self._now_s()).message}")
            self._publish()

    # RunTask action: the goal is accepted only if the machine starts the task.
    def _on_goal(self, goal: RunTask.Goal) -> GoalResponse:
        d = self._start(goal.instruction, goal.timeout_s, goal.record)
        self._goal_task_id = d.task_id
        return GoalResponse.ACCEPT if d.accepted else GoalResponse.REJECT

    def _execute_goal(self, handle) -> RunTask.Result:
        task_id = self._goal_task_id
        feedback = RunTask.Feedback(task_id=task_id)
        while True:
            with self._lock:
                s = self._machine.status(self._now_s())
                if s.task_id == task_id and s.state == TaskState.RUNNING and handle.is_cancel_requested:
                    self._machine.finish(TaskState.CANCELED, "canceled through /vla/run_task", self._now_s())
                    self._publish()
                    s = self._machine.status(self._now_s())
            if s.task_id != task_id or s.state.is_terminal:
                break
            feedback.state, feedback.steps, feedback.elapsed_s = int(s.state), s.steps, s.elapsed_s
            feedback.latency_ms = float(getattr(self, "_last_latency_ms", 0.0))
            handle.publish_feedback(feedback)
            time.sleep(0.05)
        if s.state == TaskState.CANCELED and not handle.is_cancel_requested:
            # Ended through /vla/stop, not by a cancel request: the action protocol reaches CANCELED only through
            # CANCELING, so take that step here as rclpy does when it accepts a cancel request.
            handle._update_state(GoalEvent.CANCEL_GOAL)
        {TaskState.SUCCEEDED: handle.succeed, TaskState.CANCELED: handle.canceled}.get(s.state, handle.abort)()
        return RunTask.Result(task_id=task_id, outcome=int(s.state), elapsed_s=s.elapsed_s, steps=s.steps,
                              message=s.message)


    def _spin_action(self) -> None:
        try:
            self._action_executor.spin()
        except (ExternalShutdownException, ShutdownException):  # the process is shutting down (Ctrl-C, SIGTERM)
            pass

    def close(self) -> None:
        """Called by run_node at shutdown: stop the action helper's executor before its node goes."""
        self._action_executor.shutdown(timeout_sec=2.0)
        self._action_thread.join(timeout=2.0)
        self._action.destroy()
        self._action_node.destroy_node()


def main(args=None) -> int:
    return run_node(TaskManagerNode, args)


if __name__ == "__main__":
    raise SystemExit(main())

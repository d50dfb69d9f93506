"""`ArmController`: executes action chunks on an `Arm` through the chunk executor and the safety envelope.

No ROS and no franky here: the franka_controller node feeds it messages and publishes what it reports; the
benchmarks drive it directly. Every tick: measured-state monitor -> fault check -> executor decision -> envelope
(a chunk step becomes a goal) -> `limit_motion` (the command moves towards the goal no faster than the speed
limits, by the time elapsed on the caller's clock) -> asynchronous move. A task end, cancel, watchdog or e-stop
freezes the command where it is, so the arm halts within its tracking lag.

Protective stop: a breach found by the monitor (measured TCP outside box/floor/reach plus margin, too fast, tilted
or turned too far) stops the arm, faults the controller with the reason and latches. Chunks are refused until an
operator starts a new task: it clears the latch only when it homes the arm (home_on_task_start; the homing joint
motion is speed-limited and watched for speed) or when the measured pose is back inside the envelope.

Homing at task start never blocks the caller: `set_task` stops any running motion, later ticks start the joint
motion and watch it (Mode.HOMING) while state, e-stop and fault handling go on; chunks that arrive meanwhile are
dropped when homing ends (they were computed from pre-homing images). E-stop cancels homing; a homing that takes
longer than home_timeout_s stops the arm and faults.
"""
from __future__ import annotations

import dataclasses
import time

import numpy as np

from ..core.chunk_executor import ChunkExecutor, Mode, StepDecision, SubmitResult
from ..core.geometry import matrix_to_quat, matrix_to_rpy
from ..core.chunk_executor import Verdict
from ..core.geometry import rotation_angle
from ..core.safety import SafetyEnvelope, SafeTarget, StateMonitor, limit_motion, within_workspace
from ..core.types import ActionChunk, robot_state_vector
from .arm import Arm, ArmError, ArmPlannerError, ArmState

FR3_HOME_Q_RAD = (0.0, 0.0, 0.0, -1.57, 0.0, 1.57, 0.785)
# Joint speeds of homing (rad/s): the first four joints swing the TCP on long lever arms, the wrist on short ones.
FR3_HOME_MAX_JOINT_SPEED_RAD_S = (0.2, 0.2, 0.2, 0.2, 0.5, 0.5, 0.8)


@dataclasses.dataclass(frozen=True)
class ControllerConfig:
    dry_run: bool = dataclasses.field(
        default=True, metadata={"help": "compute and publish targets without moving the robot"})
    home_on_task_start: bool = dataclasses.field(
        default=False, metadata={"help": "move to home_q_rad when a new task starts (chunks wait until it is done)"})
    home_q_rad: tuple[float, ...] = dataclasses.field(
        default=FR3_HOME_Q_RAD, metadata={"help": "joint positions of the home pose (rad)"})
    home_timeout_s: float = dataclasses.field(default=15.0, metadata={"help": "longest homing motion (s)"})
    home_tolerance_rad: float = dataclasses.field(
        default=0.01, metadata={"help": "homing ends once every joint is this close to home_q_rad (rad)"})
    gripper_threshold: float = dataclasses.field(
        default=0.5, metadata={"help": "gripper action >= threshold opens, below closes"})
    home_max_joint_speed_rad_s: tuple[float, ...] = dataclasses.field(
        default=FR3_HOME_MAX_JOINT_SPEED_RAD_S,
        metadata={"help": "joint speed limits of homing and of every joint motion the controller starts (rad/s, 7)"})
    command_period_s: float = dataclasses.field(
        default=0.05, metadata={"help": "the speed-limited command is sent to the arm at most this often (s): "
                                        "replacing franky's motion every tick keeps its planner from settling"})
    min_gripper_toggle_period_s: float = dataclasses.field(
        default=0.5, metadata={"help": "the gripper changes between open and closed at most once per this time (s)"})
    planner_fault_retries: int = dataclasses.field(
        default=0, metadata={"help": "motion-planner faults per task that do not end it: the arm has stopped, the "
                                     "error is cleared and the next step starts from the measured pose (0 = every "
                                     "fault ends the task; a robot reflex always does)"})

    def __post_init__(self) -> None:
        if len(self.home_q_rad) != 7 or not all(np.isfinite(self.home_q_rad)):
            raise ValueError(f"home_q_rad={self.home_q_rad} needs 7 finite joint positions")
        if not 0 < self.gripper_threshold < 1:
            raise ValueError(f"gripper_threshold={self.gripper_threshold} must be in (0, 1)")
        if not self.home_timeout_s > 0:
            raise ValueError(f"home_timeout_s={self.home_timeout_s} must be > 0")
        if not self.home_tolerance_rad > 0:
            raise ValueError(f"home_tolerance_rad={self.home_tolerance_rad} must be > 0")
        if len(self.home_max_joint_speed_rad_s) != 7 or not all(
                np.isfinite(v) and v > 0 for v in self.home_max_joint_speed_rad_s):
            raise ValueError(f"home_max_joint_speed_rad_s={self.home_max_joint_speed_rad_s} needs 7 values > 0")
        if not 0 < self.command_period_s <= 0.5:
            raise ValueError(f"command_period_s={self.command_period_s} must be in (0, 0.5]")
        if not self.min_gripper_toggle_period_s >= 0:
            raise ValueError(f"min_gripper_toggle_period_s={self.min_gripper_toggle_period_s} must be >= 0")
        if self.planner_fault_retries < 0:
            raise ValueError(f"planner_fault_retries={self.planner_fault_retries} must be >= 0")


@dataclasses.dataclass
class ControllerReport:
    """What the node publishes: mode, the last target and clip, counters, the last error."""

    mode: Mode = Mode.IDLE
    fault: bool = False
    error: str = ""
    protective_stop: bool = False  # latched by a breach of the measured state (error says which)
    protective_stops: int = 0
    target: SafeTarget | None = None  # the goal of the last chunk step
    command_position_m: np.ndarray | None = None  # (3,) the last command sent (moves at most at the speed limit)
    commands_limited: int = 0  # ticks whose command the speed/lead limits held back
    gripper_toggles_delayed: int = 0
    steps_clipped: int = 0
    last_clip_reason: str = ""
    recoveries: int = 0
    planner_faults_recovered: int = 0  # in this task, without ending it (planner_fault_retries)
    last_recovered_error: str = ""
    gripper_open_commanded: bool = True
    last_step_wall_s: float = 0.0  # time.monotonic() when the last step was sent (latency measurements)
    last_chunk_stamp_s: float = 0.0


@dataclasses.dataclass
class _Homing:
    deadline_s: float
    motion_started: bool = False  # False: waiting for the previous motion to stop


class ArmController:
    def __init__(self, arm: Arm, executor: ChunkExecutor, envelope: SafetyEnvelope,
                 config: ControllerConfig = ControllerConfig()) -> None:
        self.arm, self.executor, self.envelope, self.config = arm, executor, envelope, config
        self.report = ControllerReport()
        self.monitor = StateMonitor(envelope.config)
        self._goal_p: np.ndarray | None = None  # (3,) where the current chunk step wants the TCP
        self._goal_r: np.ndarray | None = None  # (3, 3)
        self._cmd_p: np.ndarray | None = None  # (3,) the last command sent; None: start from the measured pose
        self._cmd_r: np.ndarray | None = None  # (3, 3)
        self._cmd_s: float | None = None  # caller's clock at the last command decision
        self._sent_s = -np.inf  # caller's clock when a command last went to the arm
        self._sent_p: np.ndarray | None = None
        self._homing: _Homing | None = None
        self._home_q_rad = np.array(config.home_q_rad)  # (7,)
        self._stopping = False  # we stopped the running motion: its "preempted" error is expected once
        self._gripper_toggle_s = -np.inf
        c = envelope.config
        arm.set_speed_limits(c.max_speed_m_s, c.max_angular_speed_rad_s, config.home_max_joint_speed_rad_s)

    # ------------------------------------------------------------------ inputs
    def set_task(self, task_id: str, now_s: float) -> None:
        """The running task ('' = none). Any change halts the arm where it is; a new task may home it first (see the
        module docstring) and is the operator's way out of a protective stop."""
        if task_id == self.executor.task_id:
            return
        self.executor.set_task(task_id, now_s)
        self._halt()
        self._homing = None
        self.report.steps_clipped = 0
        self.report.planner_faults_recovered = 0
        if not task_id:
            return
        homes = self.config.home_on_task_start and not self.config.dry_run and not self.executor.estop
        if self.report.protective_stop:
            if not (homes or self._inside_envelope()):
                self.report.error = (f"{self.report.error.split(' [', 1)[0]} [still latched: the measured TCP is "
                                     "outside the envelope and home_on_task_start is off; bring the arm back inside "
                                     "by hand, then start a new task]")
                return
            self.report.protective_stop = False
        # a new task starts without the last one's fault: if it persists, homing reports it again
        self.report.fault, self.report.error = False, ""
        self.monitor.reset()
        if homes:
            self._homing = _Homing(deadline_s=now_s + self.config.home_timeout_s)
            try:
                self.arm.set_gripper(True)
                self.report.gripper_open_commanded = True
                try:
                    running = self.arm.poll()
                except ArmError:  # the last motion ended in an error (e.g. stopped by a homing timeout): clear it
                    self.arm.recover()
                    running = False
                if running:
                    self.arm.stop()
            except ArmError as exc:
                self._homing = None
                self._fault(f"homing failed: {exc}")

    @property
    def homing(self) -> bool:
        return self._homing is not None

    def finish_homing(self, clock_s, poll_period_s: float = 0.002) -> None:
        """Tick until homing has ended (for in-process drivers: rollouts, benchmarks, tests; a node just keeps
        ticking). Ends within home_timeout_s of `clock_s()` time, which faults the controller."""
        while self._homing is not None:
            self.tick(clock_s())
            time.sleep(poll_period_s)

    def submit(self, chunk: ActionChunk, now_s: float) -> SubmitResult:
        if self.report.protective_stop:
            self.executor.rejected += 1
            self.executor.last_reason = f"protective stop latched: {self.report.error}"
            return SubmitResult(Verdict.REJECTED, self.executor.last_reason)
        return self.executor.submit(chunk, now_s)

    def set_estop(self, engaged: bool) -> None:
        """Engage: drop the chunk and stop the arm at once. Release: accept chunks again (a protective stop stays)."""
        was = self.executor.estop
        self.executor.set_estop(engaged)
        if engaged and not was:
            self._goal_p = self._goal_r = None
            self._cmd_p = self._cmd_r = None
            if self._homing is not None:
                self._homing = None
                self.report.error = "homing cancelled by the e-stop"
            self._stop_arm("e-stop")

    # ------------------------------------------------------------------ control step
    def tick(self, now_s: float) -> StepDecision:
        """Watch the measured state, surface faults, then move the command towards the step due now. Call at the
        control rate; `now_s` is the caller's clock (sim time in simulation)."""
        state = None
        if not self.config.dry_run:
            try:
                state = self.arm.state()
            except ArmError as exc:
                self._fault(str(exc))
                return StepDecision(Mode.HOLDING, reason=f"fault: {exc}", halt=True)
            if not self.report.protective_stop:
                breach = self.monitor.check(state.position_m, state.rotation,
                                            now_s if state.time_s is None else state.time_s,
                                            homing=self._homing is not None)
                if breach:
                    self._protective_stop(breach, now_s)
        if self.report.protective_stop or self.executor.estop:
            self._expect_stop_error()
            self.report.mode = Mode.ESTOP if self.executor.estop else Mode.HOLDING
            decision = self.executor.step(now_s)
            if self.report.protective_stop:
                return StepDecision(self.report.mode, reason=self.report.error, halt=True)
            return decision
        if self._homing is not None:
            return self._home_step(now_s)
        if not self.config.dry_run:
            try:
                if self._stopping:
                    self._expect_stop_error()
                else:
                    self.arm.poll()
                self.arm.poll_gripper()
            except ArmError as exc:
                if self._recovered(exc, now_s):
                    return StepDecision(Mode.HOLDING, reason=f"recovered: {exc}", halt=True)
                if not self.report.protective_stop:
                    self._fault(str(exc))
                self.executor.clear(now_s)
                return StepDecision(Mode.HOLDING, reason=f"fault: {exc}", halt=True)
        decision = self.executor.step(now_s)
        self.report.mode = decision.mode
        if decision.halt:
            self._halt()
            return decision
        if decision.action is not None:
            try:
                if state is None:
                    state = self.arm.state()
            except ArmError as exc:
                self._fault(str(exc))
                return decision
            self._set_goal(decision, state, now_s)
        if state is not None or self.config.dry_run:
            self._stream(now_s, state)
        return decision

    def _set_goal(self, decision: StepDecision, state: ArmState, now_s: float) -> None:
        """The envelope turns the step into the goal. A new chunk's first delta applies to the command being sent
        (the measured pose when none is): chunks replacing each other faster than their steps then still add up to
        motion at the speed limit, and the command never leads the arm by more than max_lead_m."""
        if decision.new_chunk or self._goal_p is None:
            if self._cmd_p is not None:
                base_p, base_r = self._cmd_p, self._cmd_r
            else:
                base_p, base_r = state.position_m, state.rotation
        else:
            base_p, base_r = self._goal_p, self._goal_r
        safe = self.envelope.apply(state.position_m, base_p, base_r, decision.action[:6], decision.step_period_s)
        self._goal_p, self._goal_r = safe.position_m, safe.rotation
        self.report.target = safe
        if safe.clipped:
            self.report.steps_clipped += 1
            self.report.last_clip_reason = "; ".join(safe.reasons)
        self.report.last_chunk_stamp_s = decision.chunk_stamp_s
        self._set_gripper(bool(decision.action[6] >= self.config.gripper_threshold), now_s)

    def _set_gripper(self, open_: bool, now_s: float) -> None:
        """Open/close, at most one change per min_gripper_toggle_period_s of the caller's clock."""
        if open_ != self.report.gripper_open_commanded:
            if now_s - self._gripper_toggle_s < self.config.min_gripper_toggle_period_s:
                self.report.gripper_toggles_delayed += 1
                return
            self._gripper_toggle_s = now_s
        self.report.gripper_open_commanded = open_
        if not self.config.dry_run:
            try:
                self.arm.set_gripper(open_)
            except ArmError as exc:
                self._fault(str(exc))

    def _stream(self, now_s: float, state: ArmState | None) -> None:
        """Move the command towards the goal by at most the speed limits times the time since the last command."""
        if state is None:  # dry run without a readable arm: the goal is what would have been sent
            self._cmd_s = now_s
            return
        if self._cmd_p is None:
            self._cmd_p, self._cmd_r = state.position_m, state.rotation
            self._cmd_s = now_s
        elapsed = now_s - self._cmd_s
        self._cmd_s = now_s
        if self._goal_p is None:
            return
        p, r, reasons = limit_motion(self._goal_p, self._goal_r, self._cmd_p, self._cmd_r, state.position_m, elapsed,
                                     self.envelope.config, state.rotation)
        if reasons:
            self.report.commands_limited += 1
        self._cmd_p, self._cmd_r = p, r
        if self._sent_p is not None and np.linalg.norm(p - self._sent_p) < 1e-7 \
                and rotation_angle(r @ self._sent_r.T) < 1e-7:
            return  # arrived: nothing new to send
        if now_s - self._sent_s < self.config.command_period_s:
            return  # the command goes on moving at the speed limit; the arm gets it at the next send
        self._sent_s, self._sent_p, self._sent_r = now_s, p, r
        self.report.command_position_m = p
        if not self.config.dry_run:
            try:
                self.arm.move_to(p, r)
                self.report.last_step_wall_s = time.monotonic()
                if self.report.fault:
                    self.report.fault, self.report.error = False, ""
            except ArmError as exc:
                if not self._recovered(exc, now_s):
                    self._fault(str(exc))

    def _halt(self) -> None:
        """Stop streaming and stop the arm's running motion where it is now (it may lag the last command)."""
        streaming = self._sent_p is not None
        self._goal_p = self._goal_r = None
        self._cmd_p = self._cmd_r = None
        self._cmd_s = None
        self._sent_p = None
        self._sent_s = -np.inf
        if streaming:
            self._stop_arm("halt")

    def _inside_envelope(self) -> bool:
        try:
            state = self.arm.state()
        except ArmError:
            return False
        return within_workspace(state.position_m, self.envelope.config, self.envelope.config.monitor_margin_m)

    def _stop_arm(self, why: str) -> None:
        if self.config.dry_run:
            return
        try:
            self.arm.stop()
            self._stopping = True
        except ArmError as exc:
            self._fault(f"stop on {why} failed: {exc}")

    def _expect_stop_error(self) -> None:
        """Poll after our own stop: the stop preempts the running motion, an expected error, not a fault."""
        if self.config.dry_run:
            return
        try:
            running = self.arm.poll()
        except ArmError:
            self.arm.recover()
            running = False
        if not running:
            self._stopping = False

    def _protective_stop(self, reason: str, now_s: float) -> None:
        """Stop the arm at once and latch: chunks are refused until an operator starts a new task."""
        self._homing = None
        self._halt()
        self.executor.clear(now_s)
        self._stop_arm("protective stop")
        self.report.protective_stop = True
        self.report.protective_stops += 1
        self.report.fault = True
        self.report.error = f"protective stop: {reason}"
        self.report.mode = Mode.HOLDING

    def _recovered(self, exc: ArmError, now_s: float) -> bool:
        """A motion-planner fault within this task's planner_fault_retries: clear it and go on from the measured
        pose, but only when that pose is inside the envelope and near the last command (a planner fault that moved
        the arm somewhere else is a protective stop). Anything else is a fault."""
        if not isinstance(exc, ArmPlannerError) or not self.executor.task_id \
                or self.report.planner_faults_recovered >= self.config.planner_fault_retries:
            return False
        c = self.envelope.config
        try:
            measured = self.arm.state().position_m
        except ArmError:
            return False
        if not within_workspace(measured, c, c.monitor_margin_m):
            self._protective_stop(f"after {exc}: measured TCP {np.round(measured, 4).tolist()} m outside the "
                                  "envelope", now_s)
            return False
        if self._cmd_p is not None and np.linalg.norm(measured - self._cmd_p) > c.max_lead_m:
            self._protective_stop(f"after {exc}: measured TCP {np.linalg.norm(measured - self._cmd_p):.4f} m from "
                                  f"the last command > max_lead_m {c.max_lead_m:.4f} m", now_s)
            return False
        try:
            if not self.arm.recover():
                return False
        except ArmError:
            return False
        self.report.recoveries += 1
        self.report.planner_faults_recovered += 1
        self.report.last_recovered_error = str(exc)
        self._halt()
        self.monitor.reset()
        return True

    def _home_step(self, now_s: float) -> StepDecision:
        """One tick of homing: wait for the previous motion to stop, start the joint motion, wait for it."""
        h = self._homing
        try:
            try:
                running = self.arm.poll()
            except ArmError:
                if h.motion_started:
                    raise
                self.arm.recover()  # our stop preempted the previous motion: expected, not a fault
                running = False
            self._stopping = False
            self.arm.poll_gripper()
            if not running and not h.motion_started:
                self.arm.start_joint_motion(self._home_q_rad)
                h.motion_started = running = True
            elif not running:  # the trajectory has ended; the arm may still be settling onto it
                q_err = np.abs(self.arm.state().q_rad - self._home_q_rad).max()
                running = bool(q_err > self.config.home_tolerance_rad)
        except ArmError as exc:
            return self._end_homing(now_s, f"homing failed: {exc}")
        if running and now_s > h.deadline_s:
            try:
                self.arm.stop()
            except ArmError:
                pass
            return self._end_homing(now_s, f"homing did not reach home_q_rad within home_tolerance_rad="
                                           f"{self.config.home_tolerance_rad} in home_timeout_s={self.config.home_timeout_s} s"
                                           f"{self._joints_off_home()}")
        if running:
            self.report.mode = Mode.HOMING
            return StepDecision(Mode.HOMING, reason="moving to the home pose")
        return self._end_homing(now_s, "")

    def _joints_off_home(self) -> str:
        """'; joints off home: joint4 +0.052 rad, joint6 -0.013 rad' (measured - home, beyond home_tolerance_rad)."""
        try:
            q_err = self.arm.state().q_rad - self._home_q_rad  # (7,)
        except ArmError as exc:
            return f"; joint positions unknown ({exc})"
        off = [f"joint{i + 1} {e:+.3f} rad" for i, e in enumerate(q_err) if abs(e) > self.config.home_tolerance_rad]
        return f"; joints off home: {', '.join(off)}" if off else "; every joint within tolerance when stopped"

    def _end_homing(self, now_s: float, error: str) -> StepDecision:
        self._homing = None
        self._halt()
        self.executor.clear(now_s)  # chunks from before or during homing are stale
        if error:
            self._fault(error)
        self.report.mode = Mode.HOLDING
        return StepDecision(Mode.HOLDING, reason=error or "homed", halt=True)

    def _fault(self, message: str) -> None:
        if not self.report.fault:  # the first reason stays until the fault clears (e.g. a homing timeout's stop
            self.report.error = message  # preempts the motion, and that error would hide which joints were off)
        self.report.fault = True
        self._halt()
        try:
            if self.arm.recover():
                self.report.recoveries += 1
        except ArmError:
            pass

    def state_vector(self, state: ArmState) -> np.ndarray:
        """(8,) STATE_DIM_NAMES vector for the policy: ee xyz, ee rpy, gripper width, commanded open flag."""
        return robot_state_vector(state.position_m, matrix_to_rpy(state.rotation), state.gripper_width_m,
                                  self.report.gripper_open_commanded)


def pose_quat_xyzw(state: ArmState) -> np.ndarray:
    return matrix_to_quat(state.rotation)

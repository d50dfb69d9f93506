"""`ArmController`: executes action chunks on an `Arm` through the chunk executor and the safety envelope.

No ROS and no franky here: the franka_controller node feeds it messages and publishes what it reports; the
benchmarks drive it directly. Every step: fault check -> executor decision -> envelope -> asynchronous move.

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
from ..core.safety import SafetyEnvelope, SafeTarget
from ..core.types import ActionChunk, robot_state_vector
from .arm import Arm, ArmError, ArmPlannerError, ArmState

FR3_HOME_Q_RAD = (0.0, 0.0, 0.0, -1.57, 0.0, 1.57, 0.785)


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
        if self.planner_fault_retries < 0:
            raise ValueError(f"planner_fault_retries={self.planner_fault_retries} must be >= 0")


@dataclasses.dataclass
class ControllerReport:
    """What the node publishes: mode, the last target and clip, counters, the last error."""

    mode: Mode = Mode.IDLE
    fault: bool = False
    error: str = ""
    target: SafeTarget | None = None
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
        self._target_p: np.ndarray | None = None
        self._target_r: np.ndarray | None = None
        self._homing: _Homing | None = None
        self._home_q_rad = np.array(config.home_q_rad)  # (7,)

    # ------------------------------------------------------------------ inputs
    def set_task(self, task_id: str, now_s: float) -> None:
        """The running task ('' = none). A new task may home the arm first (see the module docstring)."""
        if task_id == self.executor.task_id:
            return
        self.executor.set_task(task_id, now_s)
        self._target_p = self._target_r = None
        self._homing = None
        self.report.steps_clipped = 0
        self.report.planner_faults_recovered = 0
        if task_id:  # a new task starts without the last one's fault: if it persists, homing reports it again
            self.report.fault, self.report.error = False, ""
        if task_id and self.config.home_on_task_start and not self.config.dry_run and not self.executor.estop:
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
        return self.executor.submit(chunk, now_s)

    def set_estop(self, engaged: bool) -> None:
        """Engage: drop the chunk and stop the arm at once. Release: accept chunks again."""
        was = self.executor.estop
        self.executor.set_estop(engaged)
        if engaged and not was:
            self._target_p = self._target_r = None
            if self._homing is not None:
                self._homing = None
                self.report.error = "homing cancelled by the e-stop"
            if not self.config.dry_run:
                try:
                    self.arm.stop()
                except ArmError as exc:
                    self._fault(f"stop on e-stop failed: {exc}")

    # ------------------------------------------------------------------ control step
    def tick(self, now_s: float) -> StepDecision:
        """Surface faults, then execute the step due now (if any). Call at the control rate."""
        if self.executor.estop:
            if not self.config.dry_run:
                try:
                    self.arm.poll()  # the stop preempts the running motion: that error is expected, not a fault
                except ArmError:
                    self.arm.recover()
            self.report.mode = Mode.ESTOP
            return self.executor.step(now_s)
        if self._homing is not None:
            return self._home_step(now_s)
        if not self.config.dry_run:
            try:
                self.arm.poll()
                self.arm.poll_gripper()
            except ArmError as exc:
                if self._recovered(exc):
                    return StepDecision(Mode.HOLDING, reason=f"recovered: {exc}")
                self._fault(str(exc))
                self.executor.clear(now_s)
                return StepDecision(Mode.HOLDING, reason=f"fault: {exc}")
        decision = self.executor.step(now_s)
        self.report.mode = decision.mode
        if decision.action is None:
            if decision.mode is not Mode.EXECUTING:
                self._target_p = self._target_r = None  # the next chunk starts from the measured pose
            return decision
        try:
            state = self.arm.state()
        except ArmError as exc:
            self._fault(str(exc))
            return decision
        if decision.new_chunk or self._target_p is None:
            base_p, base_r = state.position_m, state.rotation
        else:
            base_p, base_r = self._target_p, self._target_r
        safe = self.envelope.apply(state.position_m, base_p, base_r, decision.action[:6], decision.step_period_s)
        self._target_p, self._target_r = safe.position_m, safe.rotation
        self.report.target = safe
        if safe.clipped:
            self.report.steps_clipped += 1
            self.report.last_clip_reason = "; ".join(safe.reasons)
        open_ = bool(decision.action[6] >= self.config.gripper_threshold)
        self.report.gripper_open_commanded = open_
        self.report.last_chunk_stamp_s = decision.chunk_stamp_s
        if not self.config.dry_run:
            try:
                self.arm.move_to(safe.position_m, safe.rotation)
                self.arm.set_gripper(open_)
                self.report.last_step_wall_s = time.monotonic()
                if self.report.fault:
                    self.report.fault, self.report.error = False, ""
            except ArmError as exc:
                if not self._recovered(exc):
                    self._fault(str(exc))
        return decision

    def _recovered(self, exc: ArmError) -> bool:
        """A motion-planner fault within this task's planner_fault_retries: clear it and go on from the measured
        pose (the stopped motion's target is dropped). Anything else is a fault."""
        if not isinstance(exc, ArmPlannerError) or not self.executor.task_id \
                or self.report.planner_faults_recovered >= self.config.planner_fault_retries:
            return False
        try:
            if not self.arm.recover():
                return False
        except ArmError:
            return False
        self.report.recoveries += 1
        self.report.planner_faults_recovered += 1
        self.report.last_recovered_error = str(exc)
        self._target_p = self._target_r = None
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
        self.executor.clear(now_s)  # chunks from before or during homing are stale
        if error:
            self._fault(error)
        self.report.mode = Mode.HOLDING
        return StepDecision(Mode.HOLDING, reason=error or "homed")

    def _fault(self, message: str) -> None:
        if not self.report.fault:  # the first reason stays until the fault clears (e.g. a homing timeout's stop
            self.report.error = message  # preempts the motion, and that error would hide which joints were off)
        self.report.fault = True
        self._target_p = self._target_r = None
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

"""Steps action chunks in time: validation, replacement, watchdog and staleness decisions (pure code).

The controller node calls `submit(chunk, now_s)` for every chunk message and `step(now_s)` from its control
timer. Step i of an accepted chunk is due at `received_s + i * step_period_s`; a newer chunk replaces the rest
of the older one (its step 0 is due at once). With `skip_late_steps`, a chunk starts at the step that is due now
on its own timeline (step i belongs at `stamp_s + i * step_period_s`, the stamp being the capture time of its
observation): the steps that inference latency has already overtaken are skipped instead of executed late.
Times are seconds on the node's clock (sim time in simulation).
"""
from __future__ import annotations

import dataclasses
import enum

import numpy as np

from .types import ACTION_SPACE_DELTA_EE, DELTA_EE_DIM_NAMES, ActionChunk


@dataclasses.dataclass(frozen=True)
class ExecutorConfig:
    chunk_timeout_s: float = dataclasses.field(
        default=1.0, metadata={"help": "no fresh chunk for this long while a task runs -> hold position (s)"})
    max_chunk_age_s: float = dataclasses.field(
        default=0.5, metadata={"help": "chunks whose header stamp is older than this on arrival are dropped (s)"})
    action_space: str = dataclasses.field(
        default=ACTION_SPACE_DELTA_EE, metadata={"help": "the only action space this controller executes"})
    max_horizon: int = dataclasses.field(default=64, metadata={"help": "longest chunk accepted (steps)"})
    min_step_period_s: float = dataclasses.field(
        default=0.02, metadata={"help": "shortest step period accepted (s)"})
    max_step_period_s: float = dataclasses.field(
        default=1.0, metadata={"help": "longest step period accepted (s)"})
    skip_late_steps: bool = dataclasses.field(
        default=False, metadata={"help": "start each chunk at the step due now by its stamp (latency "
                                         "compensation): round(age / step_period_s) steps are skipped, the last "
                                         "step is always kept"})

    def __post_init__(self) -> None:
        if not self.chunk_timeout_s > 0:
            raise ValueError(f"chunk_timeout_s={self.chunk_timeout_s} must be > 0")
        if not self.max_chunk_age_s > 0:
            raise ValueError(f"max_chunk_age_s={self.max_chunk_age_s} must be > 0")
        if self.action_space != ACTION_SPACE_DELTA_EE:
            raise ValueError(f"action_space={self.action_space!r} is unknown; this controller executes "
                             f"{ACTION_SPACE_DELTA_EE!r}")
        if not 1 <= self.max_horizon <= 10_000:
            raise ValueError(f"max_horizon={self.max_horizon} must be in [1, 10000]")
        if not 0 < self.min_step_period_s <= self.max_step_period_s:
            raise ValueError(f"need 0 < min_step_period_s={self.min_step_period_s} <= max_step_period_s="
                             f"{self.max_step_period_s}")


class Verdict(enum.Enum):
    ACCEPTED = "accepted"
    REJECTED = "rejected"  # malformed, wrong task, e-stop: never executed
    STALE = "stale"  # well-formed but too old on arrival


@dataclasses.dataclass(frozen=True)
class SubmitResult:
    verdict: Verdict
    reason: str = ""


class Mode(enum.Enum):
    IDLE = "idle"  # no task running
    EXECUTING = "executing"
    HOLDING = "holding"  # task running, no fresh chunk step due
    ESTOP = "estop"
    HOMING = "homing"  # the controller moves to the home pose at task start (never returned by the executor)


@dataclasses.dataclass(frozen=True)
class StepDecision:
    """What the controller does now: `action` (7,) to execute, or None to hold; why; the current mode."""

    mode: Mode
    action: np.ndarray | None = None
    step_period_s: float = 0.0
    reason: str = ""
    new_chunk: bool = False  # the first step of a newly accepted chunk
    chunk_stamp_s: float = 0.0
    halt: bool = False  # stop where the arm is now (no task, e-stop, watchdog); else finish the last step


def validate_chunk(chunk: ActionChunk, config: ExecutorConfig) -> str | None:
    """Reason a chunk cannot be executed (regardless of time and task), or None."""
    if chunk.action_space != config.action_space:
        return f"action_space {chunk.action_space!r} != {config.action_space!r}"
    if tuple(chunk.dim_names) != DELTA_EE_DIM_NAMES:
        return f"dim_names {list(chunk.dim_names)} != {list(DELTA_EE_DIM_NAMES)}"
    if not 1 <= chunk.horizon <= config.max_horizon:
        return f"horizon {chunk.horizon} outside [1, {config.max_horizon}]"
    if not config.min_step_period_s <= chunk.step_period_s <= config.max_step_period_s:
        return (f"step_period_s {chunk.step_period_s} outside [{config.min_step_period_s}, "
                f"{config.max_step_period_s}]")
    finite = np.isfinite(chunk.actions)
    if not finite.all():
        rows, cols = np.nonzero(~finite)
        return f"chunk has {int((~finite).sum())} non-finite values (first at step {rows[0]}, dim {cols[0]})"
    return None


class ChunkExecutor:
    """State: the running task id, the active chunk and its schedule, the e-stop latch, counters."""

    def __init__(self, config: ExecutorConfig = ExecutorConfig()) -> None:
        self.config = config
        self.task_id = ""
        self.estop = False
        self._chunk: ActionChunk | None = None
        self._received_s = 0.0
        self._next_index = 0
        self._first_index = 0
        self._last_fresh_s: float | None = None
        self._last_sequence: int | None = None
        self.accepted = 0
        self.rejected = 0
        self.stale = 0
        self.steps_executed = 0
        self.last_reason = ""

    # ---------------------------------------------------------------- inputs
    def set_task(self, task_id: str, now_s: float) -> None:
        """The running task ('' when none). A change drops the active chunk and restarts the watchdog."""
        if task_id != self.task_id:
            self.task_id = task_id
            self._chunk = None
            self._last_sequence = None
            self._last_fresh_s = now_s if task_id else None
            if task_id:  # counters are per task (the controller reports them in /franka/state)
                self.steps_executed = self.accepted = self.rejected = self.stale = 0

    def set_estop(self, engaged: bool) -> None:
        """Engaging drops the active chunk at once; chunks are refused until released."""
        if engaged and not self.estop:
            self._chunk = None
        self.estop = bool(engaged)

    def clear(self, now_s: float) -> None:
        """Drop the active chunk (e.g. after a fault or homing) and restart the watchdog at `now_s`."""
        self._chunk = None
        self._last_fresh_s = now_s if self.task_id else None

    def submit(self, chunk: ActionChunk, now_s: float) -> SubmitResult:
        """Validate a chunk; an accepted one replaces the rest of the active chunk."""
        result = self._judge(chunk, now_s)
        if result.verdict is Verdict.ACCEPTED:
            self.accepted += 1
            # steps [0, first) were due before the chunk arrived; step `first` is due at once
            first = self.late_steps(chunk, now_s) if self.config.skip_late_steps else 0
            self._chunk = chunk
            self._received_s = now_s - first * chunk.step_period_s
            self._next_index = self._first_index = first
            self._last_fresh_s = now_s
            self._last_sequence = chunk.sequence
        else:
            if result.verdict is Verdict.STALE:
                self.stale += 1
            else:
                self.rejected += 1
            self.last_reason = result.reason
        return result

    @staticmethod
    def late_steps(chunk: ActionChunk, now_s: float) -> int:
        """Steps of `chunk` whose time (stamp + i * period) is past by more than half a period, at most H - 1."""
        age_steps = (now_s - chunk.stamp_s) / chunk.step_period_s
        return int(min(max(np.floor(age_steps + 0.5), 0), chunk.horizon - 1))

    def _judge(self, chunk: ActionChunk, now_s: float) -> SubmitResult:
        if self.estop:
            return SubmitResult(Verdict.REJECTED, "e-stop engaged: motion refused until released")
        if not self.task_id:
            return SubmitResult(Verdict.REJECTED, f"no task is running (chunk for task {chunk.task_id!r})")
        if chunk.task_id != self.task_id:
            return SubmitResult(Verdict.REJECTED, f"chunk task_id {chunk.task_id!r} != running task {self.task_id!r}")
        why = validate_chunk(chunk, self.config)
        if why:
            return SubmitResult(Verdict.REJECTED, why)
        if self._last_sequence is not None and chunk.sequence <= self._last_sequence:
            return SubmitResult(Verdict.REJECTED, f"sequence {chunk.sequence} not newer than {self._last_sequence}")
        age = now_s - chunk.stamp_s
        if age > self.config.max_chunk_age_s:
            return SubmitResult(Verdict.STALE, f"chunk is {age:.3f} s old > max_chunk_age_s {self.config.max_chunk_age_s} s")
        return SubmitResult(Verdict.ACCEPTED)

    # ---------------------------------------------------------------- output
    def step(self, now_s: float) -> StepDecision:
        """The action due now (at most one per call), or a hold with the reason."""
        if self.estop:
            return StepDecision(Mode.ESTOP, reason="e-stop engaged", halt=True)
        if not self.task_id:
            return StepDecision(Mode.IDLE, reason="no task running", halt=True)
        if self._last_fresh_s is not None and now_s - self._last_fresh_s > self.config.chunk_timeout_s:
            self._chunk = None
            return StepDecision(Mode.HOLDING, reason=f"no fresh chunk for {now_s - self._last_fresh_s:.2f} s "
                                                     f"> chunk_timeout_s {self.config.chunk_timeout_s} s", halt=True)
        chunk = self._chunk
        if chunk is None:
            return StepDecision(Mode.HOLDING, reason="waiting for a chunk", halt=True)
        if self._next_index >= chunk.horizon:
            return StepDecision(Mode.HOLDING, reason="chunk finished; waiting for the next one")
        due_s = self._received_s + self._next_index * chunk.step_period_s
        if now_s < due_s:
            return StepDecision(Mode.EXECUTING, reason="between steps")
        action = chunk.actions[self._next_index].astype(float)
        first = self._next_index == self._first_index
        self._next_index += 1
        self.steps_executed += 1
        return StepDecision(Mode.EXECUTING, action, chunk.step_period_s, new_chunk=first, chunk_stamp_s=chunk.stamp_s)

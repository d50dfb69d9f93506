"""The task state machine: one task at a time, validated instructions, timeouts, stop, finish, re-instruct.

Pure code: the task_manager node calls these methods with the current time and publishes `status()`
after every change. Times are seconds on whatever clock the node uses (sim time in simulation).
"""
from __future__ import annotations

import dataclasses
import itertools
import unicodedata

from .types import TaskState

MAX_INSTRUCTION_CHARS = 512


@dataclasses.dataclass(frozen=True)
class TaskConfig:
    default_timeout_s: float = dataclasses.field(
        default=60.0, metadata={"help": "timeout of a task whose request says timeout_s = 0 (seconds)"})
    max_timeout_s: float = dataclasses.field(
        default=3600.0, metadata={"help": "largest timeout a request may ask for (seconds)"})
    max_instruction_chars: int = dataclasses.field(
        default=MAX_INSTRUCTION_CHARS, metadata={"help": "longest accepted instruction (characters)"})

    def __post_init__(self) -> None:
        if not 0 < self.default_timeout_s <= self.max_timeout_s:
            raise ValueError(f"default_timeout_s={self.default_timeout_s} must be in (0, max_timeout_s="
                             f"{self.max_timeout_s}]")
        if not 1 <= self.max_instruction_chars <= 100_000:
            raise ValueError(f"max_instruction_chars={self.max_instruction_chars} must be in [1, 100000]")


@dataclasses.dataclass(frozen=True)
class TaskStatus:
    """Snapshot of the current (or last) task; mirrors vla_jepa_interfaces/TaskStatus."""

    task_id: str = ""
    instruction: str = ""
    state: TaskState = TaskState.IDLE
    steps: int = 0
    elapsed_s: float = 0.0
    timeout_s: float = 0.0
    record: bool = False
    message: str = ""


@dataclasses.dataclass(frozen=True)
class Decision:
    """Answer to a request: accepted or not, and why."""

    accepted: bool
    message: str
    task_id: str = ""


def validate_instruction(text: str, max_chars: int = MAX_INSTRUCTION_CHARS) -> tuple[str, str | None]:
    """Return (trimmed instruction, None) or (text, reason it is refused).

    Refused: empty after trimming, longer than `max_chars`, or containing control/unprintable characters.
    """
    trimmed = text.strip()
    if not trimmed:
        return trimmed, "instruction is empty (after trimming whitespace)"
    if len(trimmed) > max_chars:
        return trimmed, f"instruction has {len(trimmed)} characters; the limit is {max_chars}"
    for i, ch in enumerate(trimmed):
        if not ch.isprintable() and ch != " ":
            name = unicodedata.name(ch, f"U+{ord(ch):04X}")
            return trimmed, f"instruction contains a non-printable character {name} (U+{ord(ch):04X}) at index {i}"
    return trimmed, None


class TaskMachine:
    """One task at a time. States: IDLE -> RUNNING -> {SUCCEEDED, FAILED, CANCELED, ABORTED}.

    A terminal task stays visible in `status()` until the next one starts.
    """

    def __init__(self, config: TaskConfig = TaskConfig(), id_prefix: str = "task") -> None:
        self.config = config
        self._ids = itertools.count(1)
        self._id_prefix = id_prefix
        self._status = TaskStatus()
        self._start_s = 0.0

    @property
    def running(self) -> bool:
        return self._status.state == TaskState.RUNNING

    def status(self, now_s: float) -> TaskStatus:
        """Current status with elapsed time brought up to `now_s` while running."""
        if self.running:
            return dataclasses.replace(self._status, elapsed_s=max(0.0, now_s - self._start_s))
        return self._status

    def start(self, instruction: str, timeout_s: float, record: bool, now_s: float) -> Decision:
        if self.running:
            s = self._status
            return Decision(False, f"task {s.task_id} ({s.instruction!r}) is running; stop it first")
        text, reason = validate_instruction(instruction, self.config.max_instruction_chars)
        if reason:
            return Decision(False, reason)
        if timeout_s != timeout_s or timeout_s < 0:  # NaN or negative
            return Decision(False, f"timeout_s={timeout_s} must be >= 0 (0 = default {self.config.default_timeout_s} s)")
        if timeout_s > self.config.max_timeout_s:
            return Decision(False, f"timeout_s={timeout_s} exceeds max_timeout_s={self.config.max_timeout_s}")
        timeout = timeout_s if timeout_s > 0 else self.config.default_timeout_s
        task_id = f"{self._id_prefix}-{next(self._ids):04d}"
        self._start_s = now_s
        self._status = TaskStatus(task_id=task_id, instruction=text, state=TaskState.RUNNING, timeout_s=timeout,
                                  record=record, message="started")
        return Decision(True, f"task {task_id} started", task_id)

    def reinstruct(self, instruction: str) -> Decision:
        if not self.running:
            return Decision(False, "no task is running")
        text, reason = validate_instruction(instruction, self.config.max_instruction_chars)
        if reason:
            return Decision(False, reason)
        self._status = dataclasses.replace(self._status, instruction=text, message=f"re-instructed: {text!r}")
        return Decision(True, "instruction updated", self._status.task_id)

    def add_steps(self, steps: int) -> None:
        if self.running:
            self._status = dataclasses.replace(self._status, steps=self._status.steps + steps)

    def finish(self, state: TaskState, message: str, now_s: float) -> Decision:
        """End the running task in a terminal `state` (SUCCEEDED, FAILED, CANCELED, ABORTED)."""
        if not state.is_terminal:
            raise ValueError(f"finish() needs a terminal state, got {state.name}")
        if not self.running:
            return Decision(False, "no task is running")
        task_id = self._status.task_id
        self._status = dataclasses.replace(self._status, state=state, elapsed_s=max(0.0, now_s - self._start_s),
                                           message=message)
        return Decision(True, f"task {task_id} {state.name}: {message}", task_id)

    def tick(self, now_s: float) -> bool:
        """Apply the timeout. Returns True when the state changed (the task timed out -> FAILED)."""
        if self.running and now_s - self._start_s >= self._status.timeout_s:
            self.finish(TaskState.FAILED, f"timed out after {self._status.timeout_s:g} s", now_s)
            return True
        return False


class Liveness:
    """Which nodes of the graph are alive, judged by their heartbeats on a clock that never stops (wall time:
    a stopped /clock must not freeze the judgement).

    A node is watched once it has been heard; it is lost while it has been silent for longer than `timeout_s`,
    or, in its first `startup_s` of beating (a node warming up may hold its process for a moment), `startup_s`.
    Nodes never heard are not reported (a graph without a recorder, say, or a robot graph without a sim).
    """

    def __init__(self, watched: tuple[str, ...], timeout_s: float, startup_s: float = 5.0) -> None:
        if not timeout_s > 0:
            raise ValueError(f"heartbeat timeout_s={timeout_s} must be > 0")
        self.watched = tuple(watched)
        self.timeout_s = float(timeout_s)
        self.startup_s = max(float(startup_s), self.timeout_s)
        self._first_s: dict[str, float] = {}
        self._last_s: dict[str, float] = {}

    def beat(self, name: str, now_s: float) -> None:
        if name in self.watched:
            self._first_s.setdefault(name, now_s)
            self._last_s[name] = now_s

    def lost(self, now_s: float) -> dict[str, float]:
        """{node: seconds silent} for every heard node silent too long, in `watched` order."""
        lost = {}
        for n in self.watched:
            if n in self._last_s:
                settled = self._last_s[n] - self._first_s[n] >= self.startup_s
                if now_s - self._last_s[n] > (self.timeout_s if settled else self.startup_s):
                    lost[n] = now_s - self._last_s[n]
        return lost


def lost_message(lost: dict[str, float]) -> str:
    """'node 'sim' lost: no heartbeat for 1.3 s' (one or more nodes)."""
    what = ", ".join(f"{n!r}" for n in lost)
    silent = max(lost.values())
    return f"node{'s' if len(lost) > 1 else ''} {what} lost: no heartbeat for {silent:.1f} s (wall clock)"

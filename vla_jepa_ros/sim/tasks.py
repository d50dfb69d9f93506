"""Task families of the tabletop world and their ground-truth success checks (pure code).

Families: "pick up the <colour> cube" (lifted `lift_height_m` above the table for `hold_s`) and
"put the <colour> cube in the bowl" (resting inside the bowl for `hold_s`). An instruction that names no
family or an absent cube gets no check: such a task can only end by timeout or stop.
"""
from __future__ import annotations

import dataclasses
import re

import numpy as np

from .world import BOWL_NAME, CUBE_COLOURS

PICK_UP = "pick_up"
PUT_IN_BOWL = "put_in_bowl"
FAMILIES = (PICK_UP, PUT_IN_BOWL)

_PATTERNS = (
    (PICK_UP, re.compile(r"^\s*(?:please\s+)?(?:pick up|lift|grab)\s+the\s+(\w+)\s+(?:cube|block)\s*[.!]?\s*$", re.I)),
    (PUT_IN_BOWL, re.compile(r"^\s*(?:please\s+)?(?:put|place|drop)\s+the\s+(\w+)\s+(?:cube|block)\s+"
                             r"(?:in|into|inside)\s+the\s+bowl\s*[.!]?\s*$", re.I)),
)


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    family: str
    colour: str

    @property
    def object_name(self) -> str:
        return f"{self.colour}_cube"

    @property
    def instruction(self) -> str:
        if self.family == PICK_UP:
            return f"pick up the {self.colour} cube"
        return f"put the {self.colour} cube in the bowl"


def parse_instruction(text: str, colours: tuple[str, ...] = tuple(CUBE_COLOURS)) -> TaskSpec | None:
    """The task an instruction asks for, or None when it names no known family or colour."""
    for family, pattern in _PATTERNS:
        m = pattern.match(text)
        if m and m.group(1).lower() in colours:
            return TaskSpec(family, m.group(1).lower())
    return None


@dataclasses.dataclass(frozen=True)
class SuccessConfig:
    lift_height_m: float = dataclasses.field(
        default=0.08, metadata={"help": "pick up: cube bottom this far above the table counts as lifted (m)"})
    hold_s: float = dataclasses.field(default=1.0, metadata={"help": "success condition must hold this long (s)"})
    cube_size_m: float = dataclasses.field(default=0.04, metadata={"help": "cube edge (m)"})
    bowl_inner_radius_m: float = dataclasses.field(default=0.075, metadata={"help": "bowl inner radius (m)"})
    max_rest_speed_m_s: float = dataclasses.field(
        default=0.05, metadata={"help": "put in bowl: the cube counts as resting below this speed (m/s)"})

    def __post_init__(self) -> None:
        if not self.lift_height_m > 0 or not self.hold_s >= 0:
            raise ValueError(f"lift_height_m={self.lift_height_m} must be > 0 and hold_s={self.hold_s} >= 0")


Poses = dict[str, tuple[np.ndarray, np.ndarray]]


def condition_met(spec: TaskSpec, poses: Poses, config: SuccessConfig, speed_m_s: float = 0.0) -> bool:
    """Whether the task's goal condition holds in one set of poses (no hold time)."""
    if spec.object_name not in poses:
        return False
    p = poses[spec.object_name][0]
    half = config.cube_size_m / 2
    if spec.family == PICK_UP:
        return bool(p[2] - half >= config.lift_height_m)
    b = poses[BOWL_NAME][0]
    inside = np.hypot(p[0] - b[0], p[1] - b[1]) <= config.bowl_inner_radius_m - 0.25 * half
    resting = p[2] <= b[2] + half + 0.02 and speed_m_s <= config.max_rest_speed_m_s
    return bool(inside and resting)


class SuccessCheck:
    """Feeds poses over time; `update` returns True once the goal condition has held for `hold_s`."""

    def __init__(self, spec: TaskSpec, config: SuccessConfig = SuccessConfig()) -> None:
        self.spec = spec
        self.config = config
        self._since_s: float | None = None
        self._last: tuple[float, np.ndarray] | None = None
        self.succeeded = False

    def update(self, poses: Poses, now_s: float) -> bool:
        p = poses[self.spec.object_name][0] if self.spec.object_name in poses else None
        speed = 0.0
        if p is not None and self._last is not None and now_s > self._last[0]:
            speed = float(np.linalg.norm(p - self._last[1]) / (now_s - self._last[0]))
        if p is not None:
            self._last = (now_s, p.copy())
        if condition_met(self.spec, poses, self.config, speed):
            if self._since_s is None:
                self._since_s = now_s
            if now_s - self._since_s >= self.config.hold_s:
                self.succeeded = True
        else:
            self._since_s = None
        return self.succeeded


def progress_text(spec: TaskSpec, poses: Poses, config: SuccessConfig = SuccessConfig()) -> str:
    """Where the task stands as its success check sees it, in a few words (live progress of demo and eval)."""
    if spec.object_name not in poses:
        return f"no {spec.object_name} on the table"
    p = poses[spec.object_name][0]
    half = config.cube_size_m / 2
    height = f"the {spec.colour} cube {100 * (p[2] - half):.0f} cm up"
    if spec.family == PICK_UP:
        return f"{height} (lifted at {100 * config.lift_height_m:.0f} cm)"
    b = poses[BOWL_NAME][0]
    return f"{height}, {100 * np.hypot(p[0] - b[0], p[1] - b[1]):.0f} cm from the bowl's centre"

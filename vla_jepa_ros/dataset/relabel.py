"""Expert relabelling (DAgger): give every step of a recorded episode the scripted expert's action.

Whatever drove the robot (usually a learned policy that drifted off the demonstrations), the scripted expert is a
pure function of what was recorded at or before a step: the robot state, the simulator's object poses and the
instruction. Asking it what it would have done there turns the learner's own mistakes into training data for
recovering from them (Ross et al., DAgger, 2011), which plain demonstrations never show.
"""
from __future__ import annotations

import numpy as np

from ..core.types import Observation
from ..sim.expert import ExpertConfig, ScriptedExpertPolicy
from ..sim.tasks import TaskSpec, parse_instruction

Poses = dict[str, tuple[np.ndarray, np.ndarray]]  # name -> (position (3,) m, quaternion xyzw (4,))


def expert_actions(states: np.ndarray, poses: list[Poses], instruction: str,
                   config: ExpertConfig = ExpertConfig()) -> np.ndarray:
    """states (T, 8) in STATE_DIM_NAMES order, poses: T per-step pose tables -> (T, 7) float32 delta-EE actions:
    the first row of the chunk the expert plans from each step's state and poses."""
    if len(states) != len(poses):
        raise ValueError(f"{len(states)} states but {len(poses)} pose tables")
    expert = ScriptedExpertPolicy(config)
    out = np.zeros((len(states), 7), np.float32)
    for k, (state, table) in enumerate(zip(states, poses)):
        obs = Observation(images={}, image_stamps_s={}, state=np.asarray(state, np.float32),
                          instruction=instruction, extras={"object_poses": table})
        actions, phase = expert.plan(obs)
        if phase == "unknown task: hold":
            raise ValueError(f"the expert cannot solve {instruction!r} with objects {sorted(table)}")
        out[k] = actions[0]
    return out


def counterfactual_instructions(instruction: str, object_names) -> list[str]:
    """The same task naming each other cube present, e.g. 'pick up the red cube' with a green and a blue cube ->
    ['pick up the blue cube', 'pick up the green cube']; [] for an instruction the expert cannot parse."""
    spec = parse_instruction(instruction)
    if spec is None:
        return []
    colours = sorted(n[:-len("_cube")] for n in object_names if n.endswith("_cube") and n != spec.object_name)
    return [TaskSpec(spec.family, c).instruction for c in colours]

"""The scripted expert's aim noise (DART data): off target by a seeded, piecewise-constant offset; exact without it."""
import numpy as np
import pytest

from vla_jepa_ros.core.types import Observation
from vla_jepa_ros.sim.expert import ExpertConfig, ScriptedExpertPolicy

IDENTITY = np.array([0.0, 0.0, 0.0, 1.0])
HOME = np.array([0.554, 0.0, 0.521, np.pi, 0.0, 0.0, 0.08, 1.0])  # STATE_DIM_NAMES, gripper open
CUBE = np.array([0.45, 0.12, 0.02])
POSES = {"red_cube": (CUBE, IDENTITY), "bowl": (np.array([0.5, -0.2, 0.0]), IDENTITY)}


def first_step_xy(expert: ScriptedExpertPolicy, stamp_s: float, task_id: str = "task-0001") -> np.ndarray:
    obs = Observation({}, {"front": stamp_s}, HOME, "pick up the red cube", task_id=task_id,
                      extras={"object_poses": POSES})
    actions, phase = expert.plan(obs)
    assert phase == "approach"
    return actions[0, :2]


def direction(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def test_without_aim_noise_the_expert_steers_at_the_cube():
    expert = ScriptedExpertPolicy()
    assert expert.model_id == "scripted-expert"
    for stamp_s in (0.0, 3.0, 7.7):
        np.testing.assert_allclose(expert.aim_offset_m("task-0001", stamp_s), 0.0)
        np.testing.assert_allclose(direction(first_step_xy(expert, stamp_s)), direction(CUBE[:2] - HOME[:2]), atol=1e-9)


def test_aim_noise_shifts_the_aim_point_by_a_seeded_piecewise_constant_offset():
    config = ExpertConfig(aim_noise_m=0.015, aim_noise_period_s=1.5, aim_noise_exact_fraction=0.3, aim_noise_seed=4)
    expert = ScriptedExpertPolicy(config)
    assert expert.model_id == "scripted-expert+aim-noise-15mm"
    offsets = np.array([expert.aim_offset_m("task-0001", 1.5 * k + 0.2) for k in range(2000)])  # (2000, 2)
    # constant within a period, reproducible, different for another task and another seed
    np.testing.assert_array_equal(expert.aim_offset_m("task-0001", 0.2), expert.aim_offset_m("task-0001", 1.4))
    np.testing.assert_array_equal(ScriptedExpertPolicy(config).aim_offset_m("task-0001", 4.0), offsets[2])
    assert not np.array_equal(expert.aim_offset_m("task-0002", 4.0), offsets[2])
    other_seed = ScriptedExpertPolicy(ExpertConfig(aim_noise_m=0.015, aim_noise_seed=5))
    assert not np.array_equal(other_seed.aim_offset_m("task-0001", 4.0), offsets[2])
    exact = np.all(offsets == 0.0, axis=1)
    assert 0.25 < exact.mean() < 0.35  # aim_noise_exact_fraction
    assert 0.013 < offsets[~exact].std() < 0.017  # aim_noise_m per axis
    # the approach steers at cube + offset, not at the cube
    stamp_s = 1.5 * int(np.argmax(np.linalg.norm(offsets, axis=1))) + 0.2
    offset = expert.aim_offset_m("task-0001", stamp_s)
    assert np.linalg.norm(offset) > 0.03
    step = first_step_xy(expert, stamp_s)
    np.testing.assert_allclose(direction(step), direction(CUBE[:2] + offset - HOME[:2]), atol=1e-9)
    assert abs(direction(step) @ direction(CUBE[:2] - HOME[:2])) < 1 - 1e-4


@pytest.mark.parametrize("kwargs, message", [({"aim_noise_m": 0.08}, "aim_noise_m=0.08"),
                                             ({"aim_noise_m": -0.01}, "aim_noise_m=-0.01"),
                                             ({"aim_noise_period_s": 0.0}, "aim_noise_period_s=0.0"),
                                             ({"aim_noise_exact_fraction": 1.5}, "aim_noise_exact_fraction=1.5")])
def test_bad_aim_noise_settings_are_refused_by_name(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ExpertConfig(**kwargs)


def test_the_policy_node_parameters_reach_the_expert():
    from vla_jepa_ros.nodes.policy_node import PolicyNodeConfig, make_policy
    from vla_jepa_ros.runtime.factory import BackendParams

    expert = make_policy(PolicyNodeConfig(policy="expert", expert_aim_noise_m=0.01, expert_aim_noise_seed=3),
                         BackendParams())
    assert isinstance(expert, ScriptedExpertPolicy)
    assert (expert.config.aim_noise_m, expert.config.aim_noise_seed) == (0.01, 3)
    assert expert.model_id == "scripted-expert+aim-noise-10mm"  # recorded in every bag's episode.yaml
    with pytest.raises(ValueError, match="aim_noise_m=0.2"):
        make_policy(PolicyNodeConfig(policy="expert", expert_aim_noise_m=0.2), BackendParams())

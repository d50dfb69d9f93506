"""Safety envelope and rotation maths (pure, fast). The envelope against the simulated arm: test_franky_sim.py."""
import numpy as np
import pytest

from vla_jepa_ros.core import geometry as g
from vla_jepa_ros.core.safety import SafetyConfig, SafetyEnvelope, check_action, within_workspace

DOWN = g.rpy_to_matrix([np.pi, 0.0, 0.0])  # FR3 tool pointing at the table
P0 = np.array([0.5, 0.0, 0.3])
CFG = SafetyConfig(workspace_min_m=(0.2, -0.4, 0.0), workspace_max_m=(0.8, 0.4, 0.6), table_height_m=0.0,
                   min_height_above_table_m=0.01, max_step_m=0.03, max_step_rad=0.2, max_speed_m_s=0.25,
                   max_angular_speed_rad_s=1.5, max_lead_m=0.05)
TOL = 1e-9


def apply(delta, p=P0, r=DOWN, measured=None, period=0.1, cfg=CFG):
    return SafetyEnvelope(cfg).apply(p if measured is None else measured, p, r, np.asarray(delta, float), period)


def test_small_step_passes_unchanged():
    out = apply([0.01, -0.01, 0.005, 0.02, 0.0, -0.05])
    assert not out.clipped and out.reasons == ()
    np.testing.assert_allclose(out.position_m, P0 + [0.01, -0.01, 0.005])
    np.testing.assert_allclose(out.rotation, g.rpy_to_matrix([0.02, 0.0, -0.05]) @ DOWN, atol=1e-12)


def test_oversized_translation_is_scaled_along_its_direction():
    out = apply([0.3, 0.4, 0.0, 0, 0, 0], period=0.2)  # 0.5 m asked; at 0.2 s the 0.03 m step limit binds
    step = out.position_m - P0
    assert np.linalg.norm(step) == pytest.approx(0.03)
    np.testing.assert_allclose(step / np.linalg.norm(step), [0.6, 0.8, 0.0])
    # at 0.1 s the speed limit binds: 0.25 m/s * 0.1 s
    assert np.linalg.norm(apply([0.3, 0.4, 0.0, 0, 0, 0]).position_m - P0) == pytest.approx(0.025)
    assert any("translation step 0.5000 m > limit 0.0300 m" in r for r in out.reasons)


def test_speed_limit_depends_on_step_period():
    out = apply([0.02, 0, 0, 0, 0, 0], period=0.05)  # 0.4 m/s > 0.25 m/s -> 0.0125 m
    assert np.linalg.norm(out.position_m - P0) == pytest.approx(0.25 * 0.05)
    assert out.clipped


def test_oversized_rotation_is_clipped_about_the_same_axis():
    out = apply([0, 0, 0, 0.0, 0.0, 1.0])
    r_step = out.rotation @ DOWN.T
    assert g.rotation_angle(r_step) == pytest.approx(0.15)  # min(0.2 rad, 1.5 rad/s * 0.1 s)
    axis = g.matrix_to_rotvec(r_step) / 0.15
    np.testing.assert_allclose(axis, [0, 0, 1], atol=1e-9)
    assert any("rotation step" in r for r in out.reasons)


@pytest.mark.parametrize("axis, sign, bound", [(0, 1, 0.8), (0, -1, 0.2), (1, 1, 0.4), (1, -1, -0.4), (2, 1, 0.6)])
def test_workspace_box_stops_at_the_boundary(axis, sign, bound):
    p = P0.copy()
    p[axis] = bound - sign * 0.01  # 1 cm inside the face
    delta = np.zeros(6)
    delta[axis] = sign * 0.03
    out = apply(delta, p=p)
    assert out.position_m[axis] == pytest.approx(bound)
    assert any("workspace" in r for r in out.reasons)
    assert within_workspace(out.position_m, CFG)


def test_never_below_the_table_floor():
    p = np.array([0.5, 0.0, 0.02])
    out = apply([0, 0, -0.03, 0, 0, 0], p=p)
    assert out.position_m[2] == pytest.approx(0.01)  # table 0.0 + 0.01 margin
    assert any("below table floor" in r for r in out.reasons)


def test_target_cannot_run_ahead_of_the_measured_arm():
    # Streaming base 4.5 cm ahead of where the arm is: one more 3 cm step would lead by 7.5 cm.
    measured = P0 - [0.045, 0, 0]
    out = apply([0.03, 0, 0, 0, 0, 0], p=P0, measured=measured)
    assert np.linalg.norm(out.position_m - measured) == pytest.approx(0.05)
    assert any("max_lead_m" in r for r in out.reasons)


def test_tilt_limit_keeps_tool_pointing_down():
    cfg = SafetyConfig(max_tilt_rad=0.3, max_step_rad=0.5, max_angular_speed_rad_s=10.0)
    tilted = g.rpy_to_matrix([0.0, 0.25, 0.0]) @ DOWN
    out = apply([0, 0, 0, 0.0, 0.2, 0.0], r=tilted, cfg=cfg)
    z = out.rotation[:, 2]
    assert np.degrees(np.arccos(-z[2])) == pytest.approx(np.degrees(0.3), abs=1e-6)
    assert any("tilt" in r for r in out.reasons)


def test_heading_range_stops_the_wrist_from_winding_up():
    """A policy that keeps turning the tool one way (a rollout of the shipped bundle wound joint 7 into its limit at
    -2.3 rad heading, and franky's planner failed): the heading stops at the range's end, the tool still points
    down, and the rest of the step passes; a target outside already may turn back but not further out."""
    from vla_jepa_ros.core.safety import tool_heading_rad

    cfg = SafetyConfig(yaw_range_rad=(-1.75, 1.75))
    r = g.rpy_to_matrix([0.0, 0.0, -1.7]) @ DOWN
    assert tool_heading_rad(r) == pytest.approx(-1.7)
    out = apply([0.01, 0, 0, 0, 0, -0.15], r=r, cfg=cfg)
    assert tool_heading_rad(out.rotation) == pytest.approx(-1.75, abs=1e-9)
    assert out.rotation[2, 2] == pytest.approx(-1.0)  # still pointing straight down
    np.testing.assert_allclose(out.position_m, P0 + [0.01, 0, 0], atol=TOL)
    assert out.reasons == ("tool heading -1.850 rad outside yaw_range_rad [-1.750, 1.750]",)
    assert not apply([0, 0, 0, 0, 0, 0.15], r=r, cfg=cfg).clipped  # turning back: untouched
    # near +-pi the shorter way decides the end: heading 3.0 rad is nearer +1.75 than -1.75
    flipped = apply([0, 0, 0, 0, 0, 0.1], r=g.rpy_to_matrix([0.0, 0.0, 1.7]) @ DOWN, cfg=cfg)
    assert tool_heading_rad(flipped.rotation) == pytest.approx(1.75)
    outside = g.rpy_to_matrix([0.0, 0.0, -2.2]) @ DOWN  # e.g. the arm was left there: no jump back,
    held = apply([0, 0, 0, 0, 0, -0.1], r=outside, cfg=cfg)  # but no further out either
    assert tool_heading_rad(held.rotation) == pytest.approx(-2.2)
    assert tool_heading_rad(apply([0, 0, 0, 0, 0, 0.1], r=outside, cfg=cfg).rotation) == pytest.approx(-2.1)
    assert not apply([0, 0, 0, 0, 0, -0.15], r=r).clipped  # default: off


@pytest.mark.parametrize("bad", [[np.nan, 0, 0, 0, 0, 0], [0, 0, np.inf, 0, 0, 0], [0, 0, 0, 0, 0]])
def test_non_finite_or_wrong_size_delta_raises(bad):
    with pytest.raises(ValueError, match="6 finite values"):
        apply(bad)


def test_check_action_names_the_problem():
    assert check_action(np.zeros(7)) is None
    assert "non-finite values at dims [2]" in check_action(np.array([0, 0, np.nan, 0, 0, 0, 1.0]))
    assert "expected (7,)" in check_action(np.zeros(6))


@pytest.mark.parametrize("kwargs, message", [
    ({"workspace_min_m": (0.9, -0.4, 0.0)}, "must be below workspace_max_m"),
    ({"max_step_m": 0.0}, "max_step_m=0.0 must be a finite number > 0"),
    ({"max_tilt_rad": 4.0}, "max_tilt_rad=4.0 must be in"),
    ({"yaw_range_rad": (1.0, -1.0)}, r"yaw_range_rad=\(1.0, -1.0\) must be \[min, max\]"),
    ({"workspace_max_m": (0.8, 0.4)}, "need 3 values"),
    ({"table_height_m": 0.7}, "table floor"),
])
def test_bad_config_names_value_and_limit(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SafetyConfig(**kwargs)


def test_rotation_conversions_round_trip():
    rng = np.random.default_rng(0)
    for _ in range(200):
        rpy = rng.uniform([-np.pi, -np.pi / 2 + 0.01, -np.pi], [np.pi, np.pi / 2 - 0.01, np.pi])
        m = g.rpy_to_matrix(rpy)
        np.testing.assert_allclose(m @ m.T, np.eye(3), atol=1e-12)
        np.testing.assert_allclose(g.rpy_to_matrix(g.matrix_to_rpy(m)), m, atol=1e-9)
        np.testing.assert_allclose(g.quat_to_matrix(g.matrix_to_quat(m)), m, atol=1e-9)
        np.testing.assert_allclose(g.rotvec_to_matrix(g.matrix_to_rotvec(m)), m, atol=1e-7)


def test_rpy_is_extrinsic_xyz():
    r, p, y = 0.3, -0.2, 0.7
    rx = np.array([[1, 0, 0], [0, np.cos(r), -np.sin(r)], [0, np.sin(r), np.cos(r)]])
    ry = np.array([[np.cos(p), 0, np.sin(p)], [0, 1, 0], [-np.sin(p), 0, np.cos(p)]])
    rz = np.array([[np.cos(y), -np.sin(y), 0], [np.sin(y), np.cos(y), 0], [0, 0, 1]])
    np.testing.assert_allclose(g.rpy_to_matrix([r, p, y]), rz @ ry @ rx, atol=1e-12)
    # A quaternion for 90 degrees about z, (x, y, z, w) order.
    np.testing.assert_allclose(g.matrix_to_quat(g.rpy_to_matrix([0, 0, np.pi / 2])),
                               [0, 0, np.sqrt(0.5), np.sqrt(0.5)], atol=1e-12)

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


# ---------------------------------------------------------------- time-aware command limit and state monitor
from vla_jepa_ros.core.safety import StateMonitor, limit_motion, workspace_breach  # noqa: E402


def _stream(goals, times, cfg=CFG, start=P0):
    """Feed goals at the given controller times through limit_motion, the arm following exactly; returns the
    commanded positions (N, 3)."""
    p, r, t_prev, out = start.copy(), DOWN, times[0], []
    for goal, t in zip(goals, times):
        p, r, _ = limit_motion(goal, DOWN, p, r, p, t - t_prev, cfg)
        t_prev = t
        out.append(p)
    return np.array(out)


def test_command_speed_follows_elapsed_time_however_goals_arrive():
    """Goals 3 cm ahead every 20 ms (a 50 Hz policy, or chunks replacing each other): the command still moves at
    max_speed_m_s of controller time, whatever step period the chunks declared."""
    times = np.arange(0.0, 1.0, 0.02)
    goals = [P0 + [0.03 * (k + 1), 0, 0] for k in range(len(times))]
    cmd = _stream(goals, times)
    speed = np.linalg.norm(np.diff(cmd, axis=0), axis=1) / 0.02
    assert speed.max() == pytest.approx(CFG.max_speed_m_s)
    assert np.linalg.norm(cmd[-1] - P0) == pytest.approx(CFG.max_speed_m_s * (times[-1] - times[0]))


def test_a_long_gap_between_commands_is_credited_at_most_max_command_dt_s():
    p, _, reasons = limit_motion(P0 + [0.04, 0, 0], DOWN, P0, DOWN, P0, 5.0, CFG)  # the loop stalled 5 s
    assert np.linalg.norm(p - P0) == pytest.approx(CFG.max_speed_m_s * CFG.max_command_dt_s)
    assert reasons and "speed" in reasons[0]
    p, _, _ = limit_motion(P0 + [0.04, 0, 0], DOWN, P0, DOWN, P0, -1.0, CFG)  # a clock that ran backwards
    np.testing.assert_allclose(p, P0)


def test_command_rotation_is_limited_by_elapsed_time():
    goal = g.rpy_to_matrix([0.0, 0.0, 1.0]) @ DOWN
    _, r, reasons = limit_motion(P0, goal, P0, DOWN, P0, 0.01, CFG)
    assert g.rotation_angle(r @ DOWN.T) == pytest.approx(CFG.max_angular_speed_rad_s * 0.01)
    assert any("angular speed" in x for x in reasons)


def test_command_eases_onto_a_box_face():
    near = np.array([0.79, 0.0, 0.3])  # 1 cm below the x max face 0.8
    p, _, _ = limit_motion(np.array([0.8, 0.0, 0.3]), DOWN, near, DOWN, near, 0.01, CFG)
    assert p[0] - near[0] == pytest.approx(0.01 / CFG.approach_time_s * 0.01)  # 1 mm, not 2.5 mm
    far = np.array([0.5, 0.0, 0.3])  # away from every face: full speed
    p, _, _ = limit_motion(far + [0.1, 0, 0], DOWN, far, DOWN, far, 0.01, CFG)
    assert p[0] - far[0] == pytest.approx(CFG.max_speed_m_s * 0.01)


def test_command_never_leads_the_measured_arm_by_more_than_max_lead():
    measured = P0 - [0.1, 0, 0]  # the arm is held back (an obstacle) while the command would go on
    p, _, reasons = limit_motion(P0 + [0.01, 0, 0], DOWN, P0, DOWN, measured, 0.01, CFG)
    assert np.linalg.norm(p - measured) == pytest.approx(CFG.max_lead_m)
    assert any("max_lead_m" in x for x in reasons)


def test_targets_beyond_the_reach_are_pulled_in():
    cfg = SafetyConfig(workspace_min_m=(0.2, -0.6, 0.0), workspace_max_m=(0.9, 0.6, 0.6), max_reach_m=0.75)
    out = apply([0.03, 0.0, 0, 0, 0, 0], p=np.array([0.74, 0.1, 0.3]), cfg=cfg)
    assert np.hypot(*out.position_m[:2]) == pytest.approx(0.75)
    assert any("max_reach_m" in x for x in out.reasons)
    assert workspace_breach([0.8, 0.0, 0.3], cfg, 0.01).startswith("reach 0.8000 m beyond max_reach_m 0.7500 m")
    with pytest.raises(ValueError, match="max_reach_m=0.1 leaves no part"):
        SafetyConfig(max_reach_m=0.1)


def _watch(monitor, positions, dt=0.001, r=DOWN, t0=0.0):
    for k, p in enumerate(positions):
        why = monitor.check(np.asarray(p, float), r, t0 + k * dt)
        if why:
            return why
    return None


def test_monitor_passes_motion_at_the_limit_and_stops_a_jump():
    line = [P0 + [CFG.max_speed_m_s * 0.001 * k, 0, 0] for k in range(300)]
    assert _watch(StateMonitor(CFG), line) is None
    glitch = [P0] * 40 + [P0 + [0.2, 0, 0]] + [P0] * 40  # one wrong speed reading (inside the box): not a breach
    assert StateMonitor(CFG).check(P0, DOWN, 0.0) is None and _watch(StateMonitor(CFG), glitch) is None
    jump = [P0] * 40 + [P0 + [0.25, 0, 0]] * 3  # a 0.25 m jump between two readings
    why = _watch(StateMonitor(CFG), jump)
    assert why.startswith("measured TCP speed") and "> 0.400 m/s (monitor_speed_factor 1.6 x max_speed_m_s 0.25)" in why


@pytest.mark.parametrize("axis, value, words", [(0, 0.82, "x=0.8200 m above workspace max 0.8000 m + margin"),
                                                (1, -0.415, "y=-0.4150 m below workspace min -0.4000 m - margin"),
                                                (2, -0.001, "z=-0.0010 m below table floor 0.0100 m - margin")])
def test_monitor_stops_outside_box_and_floor_plus_margin(axis, value, words):
    p = P0.copy()
    p[axis] = value
    m = StateMonitor(CFG)
    assert m.check(P0, DOWN, 0.0) is None
    why = m.check(p, DOWN, 10.0)
    assert why is not None and words in why
    inside = p.copy()  # 9 mm outside the face is within the 10 mm margin
    inside[axis] += 0.011 if value < P0[axis] else -0.011
    assert StateMonitor(CFG).check(inside, DOWN, 0.0) is None


def test_monitor_checks_tilt_and_heading_with_a_margin():
    cfg = SafetyConfig(max_tilt_rad=0.5, yaw_range_rad=(-1.75, 1.75), monitor_margin_rad=0.1)
    assert StateMonitor(cfg).check(P0, g.rpy_to_matrix([0.0, 0.55, 0.0]) @ DOWN, 0.0) is None
    why = StateMonitor(cfg).check(P0, g.rpy_to_matrix([0.0, 0.65, 0.0]) @ DOWN, 0.0)
    assert why.startswith("measured tool tilt 0.650 rad > max_tilt_rad 0.500 rad + margin 0.100 rad")
    why = StateMonitor(cfg).check(P0, g.rpy_to_matrix([0.0, 0.0, -1.9]) @ DOWN, 0.0)
    assert "heading -1.900 rad outside yaw_range_rad" in why
    assert StateMonitor(cfg).check(P0, g.rpy_to_matrix([0.0, 0.0, -1.8]) @ DOWN, 0.0) is None
    homing = StateMonitor(cfg)  # homing: only speed counts (it brings the arm back from wherever it was left)
    assert homing.check(P0 + [1.0, 0, 0], DOWN, 0.0, homing=True) is None

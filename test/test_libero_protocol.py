"""LIBERO protocol maths, results schema and the worker pool: pure tests in the main venv (no LIBERO)."""
from __future__ import annotations

import functools
import math
import os
from pathlib import Path

import numpy as np
import pytest

from vla_jepa_ros.core.geometry import quat_to_matrix, rotvec_to_matrix, rpy_to_matrix
from vla_jepa_ros.libero import pool, protocol, results
from vla_jepa_ros.libero.protocol import (ProtocolConfig, client_image, from_libero_action, gripper_command,
                                          libero_state, quat_xyzw_to_axis_angle, to_libero_actions, upright)

# ------------------------------------------------------------------------------------------------ images


def _upright_marker(size: int = 256) -> np.ndarray:
    """A scene as a person sees it: red block top-left, green block bottom-right, blue stripe along the top."""
    img = np.full((size, size, 3), 128, np.uint8)
    img[8:72, 8:72] = (255, 0, 0)
    img[-72:-8, -72:-8] = (0, 255, 0)
    img[0:4, :] = (0, 0, 255)
    return img


def _libero_render(img: np.ndarray) -> np.ndarray:
    """What LIBERO returns for that scene: the image rotated by 180 degrees."""
    return np.rot90(img, 2).copy()


def test_upright_marker_survives_the_rotation_and_resize():
    seen = client_image(_libero_render(_upright_marker()), 224)
    assert seen.shape == (224, 224, 3) and seen.dtype == np.uint8
    assert tuple(seen[30, 30]) == (255, 0, 0), "red marker must be back in the top-left corner"
    assert tuple(seen[-30, -30]) == (0, 255, 0), "green marker must be back in the bottom-right corner"
    assert tuple(seen[1, 112]) == (0, 0, 255), "blue stripe must be back along the top"


def test_a_vertical_flip_alone_would_not_restore_the_marker():
    flipped_only = _libero_render(_upright_marker())[::-1]
    assert tuple(flipped_only[30, 30]) != (255, 0, 0)  # guards the test above against a symmetric marker
    assert np.array_equal(upright(_libero_render(_upright_marker())), _upright_marker())


def test_client_image_rejects_bad_frames_naming_them():
    with pytest.raises(ValueError, match="float32"):
        client_image(np.zeros((8, 8, 3), np.float32))
    with pytest.raises(ValueError, match=r"\(8, 8\)"):
        upright(np.zeros((8, 8), np.uint8))


# ------------------------------------------------------------------------------------------------ state


def test_axis_angle_matches_the_quaternion_rotation():
    rng = np.random.default_rng(0)
    for _ in range(20):
        q = rng.normal(size=4)
        q /= np.linalg.norm(q)
        q *= np.sign(q[3])  # w >= 0 (angle <= pi)
        aa = quat_xyzw_to_axis_angle(q)
        np.testing.assert_allclose(rotvec_to_matrix(aa), quat_to_matrix(q), atol=1e-9)
    np.testing.assert_array_equal(quat_xyzw_to_axis_angle(np.array([0, 0, 0, 1.0])), np.zeros(3))


def test_libero_state_is_pos_axis_angle_gripper_qpos():
    obs = {"robot0_eef_pos": np.array([0.1, -0.2, 1.1]), "robot0_eef_quat": np.array([1.0, 0, 0, 0]),
           "robot0_gripper_qpos": np.array([0.039, -0.038])}
    s = libero_state(obs)
    assert s.dtype == np.float32 and s.shape == (8,)
    np.testing.assert_allclose(s, [0.1, -0.2, 1.1, math.pi, 0, 0, 0.039, -0.038], atol=1e-6)
    r = protocol.robot_state(obs, gripper_open=0.0)
    np.testing.assert_allclose(r[:3], obs["robot0_eef_pos"], atol=1e-6)
    np.testing.assert_allclose(rpy_to_matrix(r[3:6]), quat_to_matrix(obs["robot0_eef_quat"]), atol=1e-6)
    assert r[6] == pytest.approx(0.077) and r[7] == 0.0


# ------------------------------------------------------------------------------------------------ actions


def test_plus_x_chunk_stays_plus_x_in_libero_units():
    chunk = np.zeros((7, 7), np.float32)
    chunk[:, 0] = 0.5
    chunk[:, 6] = 1.0
    a = to_libero_actions(chunk, "libero")
    assert a.shape == (7, 7) and a.dtype == np.float64
    assert (a[:, 0] == 0.5).all() and (a[:, 1:6] == 0).all()
    assert (a[:, 6] == -1).all(), "gripper 1 (open) must become LIBERO's -1 (open)"


def test_gripper_mapping_is_one_minus_two_times_threshold():
    np.testing.assert_array_equal(gripper_command(np.array([1.0, 0.0, 0.51, 0.5, 0.49])), [-1, 1, -1, 1, 1])


def test_robot_units_are_scaled_by_libero_full_scale_and_rotations_become_axis_angle():
    chunk = np.array([[0.025, -0.05, 0.1, 0.1, 0.0, 0.0, 0.0],
                      [0.0, 0.0, 0.0, 0.1, 0.2, -0.3, 1.0]])
    a = to_libero_actions(chunk, "robot")
    np.testing.assert_allclose(a[0, :3], [0.5, -1.0, 1.0])  # 0.1 m is clipped to full scale
    np.testing.assert_allclose(a[0, 3:6], [0.2, 0, 0], atol=1e-12)
    rv = a[1, 3:6] * protocol.FULL_SCALE_ROT_RAD
    np.testing.assert_allclose(rotvec_to_matrix(rv), rpy_to_matrix(chunk[1, 3:6]), atol=1e-9)
    assert a[0, 6] == 1 and a[1, 6] == -1


def test_action_mapping_clips_and_rejects_bad_chunks():
    big = np.zeros((1, 7))
    big[0, :6] = [3, -3, 0.2, 2, -2, 0]
    np.testing.assert_array_equal(to_libero_actions(big)[0, :6], [1, -1, 0.2, 1, -1, 0])
    with pytest.raises(ValueError, match=r"\(3, 6\)"):
        to_libero_actions(np.zeros((3, 6)))
    with pytest.raises(ValueError, match="non-finite"):
        to_libero_actions(np.full((1, 7), np.nan))
    with pytest.raises(ValueError, match="'meters'"):
        to_libero_actions(np.zeros((1, 7)), "meters")


def test_dataset_action_round_trips_through_the_eval_mapping():
    env_action = np.array([0.3, -0.2, 0.1, 0.0, 0.05, -0.1, -1.0])  # open
    ds = from_libero_action(env_action)
    assert ds[6] == 1.0
    np.testing.assert_allclose(to_libero_actions(ds[None])[0], env_action, atol=1e-7)
    assert from_libero_action(np.r_[env_action[:6], 1.0])[6] == 0.0


def test_protocol_config_defaults_and_validation():
    c = ProtocolConfig(suite="libero_10_lan")
    assert c.steps == 520 and c.execute_steps == 7 and c.num_wait_steps == 10 and not c.hard_reset
    assert c.cheap_rendering and c.client_image_px == 224
    assert ProtocolConfig(suite="libero_spatial", max_steps=30).steps == 30
    with pytest.raises(ValueError, match="libero_spatail"):
        ProtocolConfig(suite="libero_spatail")
    with pytest.raises(ValueError, match="execute_steps=0"):
        ProtocolConfig(execute_steps=0)
    assert protocol.perturbation("libero_goal_swap") == "_swap" and protocol.base_suite("libero_goal_swap") == \
        "libero_goal"


# ------------------------------------------------------------------------------------------------ results


def _ep(suite, task, ep, success, error=None):
    return results.EpisodeResult(suite=suite, task_id=task, task_name=f"t{task}", instruction="x", episode=ep,
                                 init_state=ep, success=success, steps=10, wall_s=1.0, error=error)


def _report(eps):
    s = results.summarize(eps)
    return {"schema_version": 1, "kind": "libero_eval", "model_id": "m", "protocol": {}, "episodes":
            [e.to_dict() for e in eps], "wall_s": 1.0, "episodes_per_min": 1.0, "workers": 1, "episodes_per_task": 2,
            **s}


def test_wilson_interval_known_values():
    assert results.wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert results.wilson_interval(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert results.wilson_interval(50, 50) == pytest.approx((0.9287, 1.0), abs=1e-4)
    with pytest.raises(ValueError, match="successes=3"):
        results.wilson_interval(3, 2)


def test_summary_counts_successes_and_excludes_crashed_episodes():
    eps = [_ep("libero_spatial", 0, 0, True), _ep("libero_spatial", 0, 1, False),
           _ep("libero_spatial", 1, 0, True), _ep("libero_spatial", 1, 1, False, error="Traceback\nRuntimeError: x"),
           _ep("libero_goal", 0, 0, True)]
    s = results.summarize(eps)
    t = {(r["suite"], r["task_id"]): r for r in s["tasks"]}
    assert t[("libero_spatial", 0)]["success_rate"] == 0.5 and t[("libero_spatial", 1)]["n"] == 1
    suites = {r["suite"]: r for r in s["suites"]}
    assert suites["libero_spatial"]["n"] == 3 and suites["libero_spatial"]["successes"] == 2
    assert s["average"]["success_rate"] == pytest.approx((2 / 3 + 1.0) / 2)
    assert s["average"]["n"] == 4 and len(s["crashed"]) == 1
    report = _report(eps)
    results.validate_results(report)
    table = results.format_table(s)
    assert "crashed twice and are NOT counted" in table and "RuntimeError: x" in table


def test_results_schema_rejects_inconsistent_reports():
    eps = [_ep("libero_spatial", 0, 0, True), _ep("libero_spatial", 0, 1, False)]
    bad = _report(eps)
    bad["tasks"][0]["success_rate"] = 0.9
    with pytest.raises(ValueError, match="success_rate=0.9"):
        results.validate_results(bad)
    bad = _report(eps)
    bad["episodes"][1]["error"] = "boom"
    bad["episodes"][1]["success"] = True
    with pytest.raises(ValueError, match="crashed episode"):
        results.validate_results(bad)
    bad = _report(eps)
    del bad["average"]
    with pytest.raises(ValueError, match="'average'"):
        results.validate_results(bad)
    bad = _report(eps)
    bad["tasks"][0]["ci95"] = [0.6, 0.9]
    with pytest.raises(ValueError, match="does not bracket"):
        results.validate_results(bad)


def test_robustness_table_has_the_libero_plus_columns():
    eps = [_ep("libero_spatial", 0, 0, True), _ep("libero_spatial_lan", 0, 0, False),
           _ep("libero_spatial_swap", 0, 0, True), _ep("libero_spatial_swap", 0, 1, False)]
    table = results.robustness_table(results.summarize(eps), "m")
    head, _, row, mean = table.splitlines()
    for col in ("Camera", "Robot", "Language", "Light", "Background", "Noise", "Layout", "Object", "Task"):
        assert col in head
    cells = [c.strip() for c in row.split("|")[1:-1]]
    assert cells[0] == "m / libero_spatial" and cells[1] == "100.0"  # original
    assert cells[4] == "0.0" and cells[8] == "50.0" and cells[2] == "n/a"  # language, layout, camera
    assert cells[-1] == "25.0"  # mean of the measured perturbations
    assert mean.startswith("| m / mean")


# ------------------------------------------------------------------------------------------------ pool


class _FlakyRunner:
    """Job ('raise_once', n): raises on its first attempt; ('die_once', n): the process exits on its first
    attempt; ('always', n): always raises; anything else returns n * 2. Attempts are counted in marker files."""

    def __init__(self, marker_dir: str) -> None:
        self.dir = Path(marker_dir)

    def __call__(self, job):
        kind, n = job.key
        marker = self.dir / f"{kind}_{n}"
        first = not marker.exists()
        marker.write_text("tried")
        if kind == "always":
            raise RuntimeError(f"always fails {n}")
        if kind == "raise_once" and first:
            raise RuntimeError(f"first attempt of {n} fails")
        if kind == "die_once" and first:
            os._exit(17)
        return n * 2


def _make_flaky(marker_dir: str) -> _FlakyRunner:
    return _FlakyRunner(marker_dir)


@pytest.mark.parametrize("workers", [0, 2])
def test_pool_retries_a_crashed_episode_once_and_reports_a_double_crash(tmp_path, workers):
    kinds = [("ok", 1), ("raise_once", 2), ("always", 3), ("ok", 4)] + ([("die_once", 5)] if workers else [])
    outcomes = pool.run_jobs([pool.Job(k) for k in kinds], functools.partial(_make_flaky, str(tmp_path)),
                             workers=workers, poll_s=0.1)
    by_key = {o.key: o for o in outcomes}
    assert set(by_key) == set(kinds)
    assert isinstance(by_key[("ok", 1)], pool.JobDone) and by_key[("ok", 1)].value == 2
    assert by_key[("ok", 1)].attempts == 1 and not by_key[("ok", 1)].errors
    flaky = by_key[("raise_once", 2)]
    assert isinstance(flaky, pool.JobDone) and flaky.value == 4 and flaky.attempts == 2
    assert "first attempt of 2 fails" in flaky.errors[0]
    failed = by_key[("always", 3)]
    assert isinstance(failed, pool.JobFailure) and failed.attempts == 2 and len(failed.errors) == 2
    assert "always fails 3" in failed.error
    if workers:
        died = by_key[("die_once", 5)]
        assert isinstance(died, pool.JobDone) and died.attempts == 2 and "exit code 17" in died.errors[0]


def test_pool_rejects_duplicate_keys():
    with pytest.raises(ValueError, match="unique"):
        pool.run_jobs([pool.Job((1,)), pool.Job((1,))], lambda: (lambda j: j), workers=0)


def test_cli_registers_the_libero_commands():
    from vla_jepa_ros import cli

    assert "libero-eval" in cli.COMMANDS and "libero-collect" in cli.COMMANDS
    with pytest.raises(SystemExit) as exc:
        cli.main(["libero-eval", "--help"])
    assert exc.value.code == 0


class _ConstPolicy:
    model_id, cameras, state_dim = "const", ("front", "wrist"), 8

    def __init__(self, period_s: float) -> None:
        self.period_s, self.calls = period_s, 0

    def infer(self, observation):
        from vla_jepa_ros.core.types import ActionChunk

        self.calls += 1
        return ActionChunk(np.tile(np.array([0.5, 0, 0, 0, 0, 0, 1], np.float32), (7, 1)),
                           step_period_s=self.period_s)


@pytest.mark.parametrize("period_s, calls, moves", [(0.05, 4, 28), (0.1, 4, 16)])
def test_chunk_executor_mode_on_sim_time(monkeypatch, period_s, calls, moves):
    """20 Hz chunks: one query per 7 steps and no spurious holds from float sim time; 10 Hz chunks: the stack's
    executor holds every other 20 Hz tick (zero motion, gripper kept open)."""
    from vla_jepa_ros.libero import rollout

    monkeypatch.setattr(rollout, "make_observation", lambda *a, **k: None)
    driver, policy = rollout.ExecutorDriver(ProtocolConfig(execute_steps=7)), _ConstPolicy(period_s)
    actions = np.array([driver.action(policy, None, "", t, 1.0)[0] for t in range(28)])
    assert policy.calls == calls
    assert int((actions[:, 0] == 0.5).sum()) == moves and set(actions[:, 0]) <= {0.0, 0.5}
    assert (actions[:, 6] == -1).all()


def test_step_limits_are_the_public_evaluation_ones():
    """examples/LIBERO/eval_libero.py of the public VLA-JEPA code (latest): 250 / 280 / 300 / 520 / 400 policy steps
    after 10 wait steps; LIBERO-PRO variants inherit their suite's limit."""
    assert {s: protocol.max_steps_for(s) for s in ("libero_spatial", "libero_object", "libero_goal", "libero_10",
                                                   "libero_90")} == {"libero_spatial": 250, "libero_object": 280,
                                                                     "libero_goal": 300, "libero_10": 520,
                                                                     "libero_90": 400}
    assert protocol.max_steps_for("libero_spatial_swap") == 250 and protocol.NUM_WAIT_STEPS == 10
    assert ProtocolConfig(suite="libero_spatial").steps == 250

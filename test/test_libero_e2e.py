"""LIBERO end to end, inside .venv-libero (`make libero`): a tiny bundle through `vla-jepa libero-eval`, the action
mapping in the real env (+x chunk moves the end effector +x; the stack's chunk executor), and the collector's
bit-exact replay. The bundle is exported here in the main venv (export needs onnx), the rest runs as subprocesses
in the LIBERO venv. Skipped with a reason when .venv-libero is absent."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
LIBERO_VENV = Path(os.environ.get("LIBERO_VENV", ROOT / ".venv-libero"))
LIBERO_PY = LIBERO_VENV / "bin" / "python"
pytestmark = [
    pytest.mark.libero, pytest.mark.slow,
    pytest.mark.skipif(not LIBERO_PY.exists(), reason=f"{LIBERO_VENV} is absent: run `make libero` "
                                                       "(bash scripts/install_libero.sh) to create the LIBERO venv"),
]
MIN_MOVE_M = 0.01  # a 14-step chunk at half scale commands 14 * 0.025 m; the arm must cover at least this


def _run(args: list[str], timeout_s: float = 270) -> subprocess.CompletedProcess:
    env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([str(LIBERO_PY), *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout_s)
    if proc.returncode != 0:
        raise AssertionError(f"{args[:3]} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory) -> Path:
    from vla_jepa_ros.libero.tiny import make_tiny_bundle

    tmp = tmp_path_factory.mktemp("libero_bundle")
    return make_tiny_bundle(tmp / "bundle", tmp / "work", seed=0)


def test_libero_eval_runs_a_tiny_bundle_end_to_end(tiny_bundle, tmp_path):
    from vla_jepa_ros.libero.results import validate_results

    out = tmp_path / "eval"
    _run(["-m", "vla_jepa_ros.cli", "libero-eval", str(tiny_bundle), "--suite", "libero_spatial", "--tasks", "1",
          "--episodes-per-task", "1", "--max-steps", "14", "--workers", "1", "--out-dir", str(out)])
    report = json.loads((out / "results.json").read_text())
    validate_results(report)
    assert report["model_id"] == "tiny-libero-seed0" and report["crashed"] == []
    (ep,) = report["episodes"]
    assert (ep["suite"], ep["task_id"], ep["episode"], ep["init_state"]) == ("libero_spatial", 1, 0, 0)
    assert ep["instruction"] == "pick up the black bowl next to the ramekin and place it on the plate"
    assert ep["steps"] == 14 and ep["queries"] == 2, "14 steps of 7-step open-loop chunks = 2 policy calls"
    assert report["protocol"]["hard_reset"] is False and report["protocol"]["cheap_rendering"] is True
    assert report["suites"][0]["n"] == 1 and len(report["suites"][0]["ci95"]) == 2
    md = (out / "results.md").read_text()
    assert "| libero_spatial | 1 |" in md and "95 % CI" in md
    import av

    with av.open(ep["video"]) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(frames) == 15 and frames[0].shape == (256, 512, 3)  # 14 steps + the last obs; agentview | wrist


PROBE = textwrap.dedent("""
    import json, sys
    import numpy as np
    from vla_jepa_ros.core.types import ActionChunk
    from vla_jepa_ros.libero.collect import replay, scripted_rollout
    from vla_jepa_ros.libero.env import LiberoTaskEnv, suite_tasks
    from vla_jepa_ros.libero.protocol import ProtocolConfig
    from vla_jepa_ros.libero.rollout import run_episode

    class Const:
        model_id, cameras, state_dim = "const", ("front", "wrist"), 8
        def __init__(self, row): self.row, self.calls = np.asarray(row, np.float32), 0
        def infer(self, obs):
            self.calls += 1
            assert obs.images["front"].shape == (224, 224, 3) and obs.state.shape == (8,)
            return ActionChunk(np.tile(self.row, (7, 1)), step_period_s=0.05)

    env = LiberoTaskEnv(suite_tasks("libero_spatial")[1], camera_px=128)
    out = {}
    cases = {"+x libero": ([0.5, 0, 0, 0, 0, 0, 1], "libero", False),
             "-z libero": ([0, 0, -0.5, 0, 0, 0, 1], "libero", False),
             "+y robot": ([0, 0.025, 0, 0, 0, 0, 1], "robot", False),
             "+x executor": ([0.5, 0, 0, 0, 0, 0, 1], "libero", True),
             "close": ([0, 0, 0, 0, 0, 0, 0], "libero", False)}
    for name, (row, units, executor) in cases.items():
        pol = Const(row)
        p0 = env.reset(0)["robot0_eef_pos"].copy()
        g0 = env.last_obs["robot0_gripper_qpos"].copy()
        run_episode(env, pol, ProtocolConfig(max_steps=14, units=units, executor=executor, camera_px=128), 0, 0)
        out[name] = {"move": (env.last_obs["robot0_eef_pos"] - p0).tolist(), "calls": pol.calls,
                     "finger_gap": [float(g0[0] - g0[1]), float(env.last_obs["robot0_gripper_qpos"][0]
                                                                - env.last_obs["robot0_gripper_qpos"][1])]}
    demo = scripted_rollout(env, 0, 220, seed=7)  # after other episodes in this env: replay must not care
    env.reset(5, seed=1)
    _, exact = replay(env, demo, 64)
    mid = len(demo.actions) // 2  # flip dx inside [-1, 1]: a +0.2 on a saturated action is clipped to no change
    demo.actions[mid, 0] = -0.5 if demo.actions[mid, 0] > 0 else 0.5
    _, tampered = replay(env, demo, 64)
    out["replay"] = {"success": demo.success, "steps": len(demo.actions), "exact": exact, "tampered": tampered}
    print("PROBE" + json.dumps(out))
""")


def test_action_mapping_moves_the_libero_arm_and_replay_is_bit_exact():
    proc = _run(["-c", PROBE])
    out = json.loads(proc.stdout.split("PROBE", 1)[1])
    for name, axis, sign in (("+x libero", 0, 1), ("-z libero", 2, -1), ("+y robot", 1, 1), ("+x executor", 0, 1)):
        move = np.array(out[name]["move"])
        assert sign * move[axis] > MIN_MOVE_M, f"{name}: end effector moved {move} (m)"
        others = np.delete(np.abs(move), axis)
        assert others.max() < abs(move[axis]) / 2, f"{name}: off-axis motion {move} (m)"
    assert out["+x libero"]["calls"] == 2 and out["+x executor"]["calls"] == 2
    gap0, gap1 = out["close"]["finger_gap"]
    assert gap1 < gap0 - 0.01, f"gripper 0 (closed) must close the fingers: gap {gap0:.3f} -> {gap1:.3f} m"
    assert out["+x libero"]["finger_gap"][1] > gap1 + 0.01, "gripper 1 (open) must keep the fingers open"
    r = out["replay"]
    assert r["success"], "the scripted expert solves libero_spatial task 1 from init state 0"
    assert r["exact"] == "", f"replay with cameras must be bit-exact: {r['exact']}"
    assert r["tampered"].startswith("replay diverged at step"), r["tampered"]


def test_libero_collect_writes_a_dataset_the_training_package_reads(tmp_path):
    from vla_jepa.data import NativeEpisodeSource

    out = tmp_path / "demos"
    _run(["-m", "vla_jepa_ros.cli", "libero-collect", str(out), "--suite", "libero_spatial", "--tasks", "1",
          "--episodes-per-task", "1", "--image-px", "64", "--camera-px", "128", "--workers", "0",
          "--lerobot", str(tmp_path / "lerobot")])
    report = json.loads((out / "collect.json").read_text())
    assert report["kept"] == 1 and report["per_task"][0]["replay_exact"] == 1 and report["mismatches"] == []
    src = NativeEpisodeSource(out)
    ep = src.load(0)
    assert ep.frames.shape[1:] == (2, 64, 64, 3) and len(ep.frames) == src.episode_length(0)
    assert set(np.unique(ep.actions[:, 6])) <= {0.0, 1.0} and ep.actions[0, 6] == 1.0  # starts open
    assert (ep.actions[:, 6] == 0).any(), "the demonstration closes the gripper at some point"
    assert np.abs(ep.actions[:, :6]).max() <= 1.0 and ep.states.shape[1] == 8
    assert ep.instruction == "pick up the black bowl next to the ramekin and place it on the plate"
    info = json.loads((tmp_path / "lerobot" / "meta" / "info.json").read_text())
    assert info["total_episodes"] == 1 and info["total_frames"] == len(ep.frames)

"""`vla-jepa offline-eval`: the error metrics against policies whose answers are known, and the command end to end
on a real tiny bundle (onnxruntime) and a dataset written by the training package's writer."""
import json

import numpy as np
import pytest

from vla_jepa_ros.core.types import ActionChunk
from vla_jepa_ros.flywheel.offline_eval import axis_correlations, chunk_errors, offline_eval

from .runtime_fixtures import tiny_bundle

H = 7


def _episodes():
    from vla_jepa.data import synthetic_episodes

    eps = synthetic_episodes(3, length=20, image_size=64)
    for ep in eps:
        ep.states[:, 7] = np.arange(len(ep.states))  # lets the oracle below find its step
    return eps


class Replay:
    """Answers with the recorded chunk (oracle) or with no motion and the recorded gripper (never-move)."""

    noise_shape = (1, H, 7)

    def __init__(self, episodes, move: bool):
        self.by_key = {(ep.instruction, int(t)): ep for ep in episodes for t in ep.states[:, 7]}
        self.move = move

    def infer(self, obs, noise=None):
        ep = self.by_key[(obs.instruction, int(obs.state[7]))]
        t = int(obs.state[7])
        a = ep.actions[np.minimum(np.arange(t, t + H), len(ep.actions) - 1)].copy()
        if not self.move:
            a[:, :6] = 0.0
        return ActionChunk(actions=a, step_period_s=0.1)


def test_chunk_errors_are_zero_for_the_truth_and_the_scale_for_no_motion():
    rec = np.zeros((H, 7), np.float32)
    rec[:, 0], rec[:, 5], rec[:, 6] = 0.01, 0.1, 1.0
    assert chunk_errors(rec, rec) == {"xyz_mm": 0.0, "zero_xyz_mm": pytest.approx(10.0),
                                      "moved_xyz_mm": pytest.approx(10.0), "yaw_deg": 0.0, "gripper_pct": 100.0}
    still = np.zeros_like(rec)
    e = chunk_errors(still, rec)
    assert e["xyz_mm"] == pytest.approx(10.0) and e["yaw_deg"] == pytest.approx(np.degrees(0.1))
    assert e["moved_xyz_mm"] == 0.0  # the model under-shoots completely
    assert e["gripper_pct"] == 0.0
    with pytest.raises(ValueError, match=r"\(6, 7\)"):
        chunk_errors(rec[:6], rec)


def test_axis_correlations_tell_an_axis_the_model_follows_from_one_it_is_blind_to():
    rng = np.random.default_rng(0)
    recorded = [rng.normal(size=(H, 3)) for _ in range(200)]
    follows_x_blind_y_inverted_z = [np.stack([r[:, 0] * 0.5, rng.normal(size=H), -r[:, 2]], 1) for r in recorded]
    x, y, z = axis_correlations(list(zip(follows_x_blind_y_inverted_z, recorded)))
    assert x == pytest.approx(1.0) and abs(y) < 0.1 and z == pytest.approx(-1.0)
    constant = [np.zeros((H, 3)) for _ in recorded]  # a model that never moves has no correlation to speak of
    assert all(np.isnan(c) for c in axis_correlations(list(zip(constant, recorded))))


def test_oracle_scores_zero_and_never_move_scores_ratio_one():
    eps = _episodes()
    cams = ["front", "wrist"]
    perfect = offline_eval(Replay(eps, move=True), eps, cams, stride=2, progress=False)
    still = offline_eval(Replay(eps, move=False), eps, cams, stride=2, progress=False)
    assert perfect["all"].samples == 3 * 10 == perfect["reach"].samples + perfect["after grasp"].samples
    assert perfect["reach"].samples == 3 * 5  # synthetic episodes close the gripper at step 10
    assert perfect["all"].xyz_mm == 0.0 and perfect["all"].ratio_to_zero == 0.0
    assert perfect["all"].gripper_pct == 100.0
    assert still["all"].ratio_to_zero == pytest.approx(1.0) and still["all"].gripper_pct == 100.0
    assert perfect["all"].moved_xyz_mm == pytest.approx(perfect["all"].zero_xyz_mm) and still["all"].moved_xyz_mm == 0
    moving = [c for c, r in zip(perfect["all"].axis_corr, np.concatenate([e.actions[:, :3] for e in eps]).std(0))
              if r > 0]
    assert moving and all(c == pytest.approx(1.0) for c in moving)


def test_command_end_to_end_on_a_tiny_bundle(tmp_path, capsys):
    from vla_jepa.data import write_episode_dataset

    from vla_jepa_ros.cli import main

    root = write_episode_dataset(tmp_path / "ds", _episodes(), cameras=["front", "wrist"], fps=10)
    out = tmp_path / "oe.json"
    assert main(["offline-eval", str(tiny_bundle()), str(root), "--stride", "5", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "reach" in printed and "after grasp" in printed
    report = json.loads(out.read_text())
    assert report["episodes"] == 3 and report["phases"]["all"]["samples"] == 3 * 4
    assert np.isfinite(np.hstack(list(report["phases"]["all"].values()))).all()  # axis_corr: 3 values


class Words:
    """Moves 10 mm per step in x times the rank of its instruction (reads the words), or always 10 mm (does not)."""

    noise_shape = (1, H, 7)

    def __init__(self, instructions, reads: bool):
        self.rank = {s: i + 1 for i, s in enumerate(sorted(instructions))}
        self.reads = reads

    def infer(self, obs, noise=None):
        a = np.zeros((H, 7), np.float32)
        a[:, 0], a[:, 6] = 0.01 * (self.rank[obs.instruction] if self.reads else 1), 1.0
        return ActionChunk(actions=a, step_period_s=0.1)


def test_words_mm_tells_a_model_that_reads_the_instruction_from_one_that_ignores_it():
    eps = _episodes()
    for i, ep in enumerate(eps):
        ep.instruction = ("pick up the red cube", "pick up the green cube", "pick up the blue cube")[i]
    words = [ep.instruction for ep in eps]
    cams = ["front", "wrist"]
    reads = offline_eval(Words(words, True), eps, cams, stride=2, progress=False, instructions=words)
    ignores = offline_eval(Words(words, False), eps, cams, stride=2, progress=False, instructions=words)
    # blue -> green -> red -> blue in sorted order: ranks 1 -> 2, 2 -> 3, 3 -> 1: 10, 10 and 20 mm per step
    assert reads["all"].words_mm == pytest.approx((10 + 10 + 20) / 3)
    assert ignores["all"].words_mm == 0.0
    assert np.isnan(offline_eval(Words(words, True), eps, cams, stride=2, progress=False)["all"].words_mm)

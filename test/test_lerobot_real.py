"""The LeRobot v3 export through LeRobot's own tools (lerobot 0.6.1 in .venv-lerobot, Python 3.12): LeRobotDataset
reads frames, state, actions, objects, episode boundaries and delta_timestamps as exported; `lerobot-train` trains
ACT for a few steps on it (CPU, no download); `lerobot-edit-dataset` deletes an episode and merges two exports.

Opt-in: skipped with a reason when .venv-lerobot is absent (`make lerobot` creates it). `make test` does not
create it: LeRobot needs Python 3.12 and a torch build for it, which PyPI serves only as the CUDA build (several
GB of downloads), too much for every CI run; `make test-lerobot` installs it and runs this module."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from vla_jepa_ros.dataset.lerobot_v3 import Episode, write_lerobot_v3

ROOT = Path(__file__).resolve().parents[1]
LEROBOT_VENV = Path(os.environ.get("LEROBOT_VENV", ROOT / ".venv-lerobot"))
LEROBOT_BIN = LEROBOT_VENV / "bin"
PROBE = Path(__file__).with_name("lerobot_probe.py")
pytestmark = [
    pytest.mark.lerobot, pytest.mark.slow,
    pytest.mark.skipif(not (LEROBOT_BIN / "lerobot-train").exists(),
                       reason=f"{LEROBOT_VENV} is absent: opt-in, run `make test-lerobot` (or `make lerobot`, "
                              "bash scripts/install_lerobot.sh: Python 3.12 + lerobot 0.6.1 with a multi-GB CUDA torch "
                              "build, so not part of `make test`)"),
]
FPS = 10
CAMERAS = ("front", "wrist")
OBJECTS = ("red_cube", "bowl")
PIXEL_TOL = 4 / 255  # mean |decoded - exported| per pixel (H.264 at crf 15 on smooth frames)


def _episode(n: int, seed: int, task: str) -> Episode:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:64, 0:64]
    frames = np.zeros((n, 64, 64, 3), np.uint8)
    for t in range(n):  # smooth texture + a square that moves with t, shifted per episode
        frames[t, ..., 0] = (xx * 3 + 40 * seed) % 256
        frames[t, ..., 1] = (yy * 3) % 256
        frames[t, 4 + t:24 + t, 8 + 4 * seed:28 + 4 * seed, 2] = 220
    return Episode(frames={"front": frames, "wrist": frames[:, ::-1].copy()},
                   state=rng.normal(size=(n, 8)).astype(np.float32),
                   actions=rng.normal(size=(n, 7)).astype(np.float32), task=task,
                   objects=rng.normal(size=(n, len(OBJECTS), 3)).astype(np.float32), object_names=OBJECTS)


def _export(root: Path, eps: list[Episode], **kw) -> dict:
    return write_lerobot_v3(root, eps, fps=FPS, state_names=[f"s{i}" for i in range(8)],
                            action_names=[f"a{i}" for i in range(7)], **kw)


def _env(tmp: Path) -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp / "hf"),
            "HF_LEROBOT_HOME": str(tmp / "lerobot_home"), "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "2",
            "CUDA_VISIBLE_DEVICES": ""}


def _run(tmp: Path, args: list[str], timeout_s: float = 280) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, cwd=tmp, env=_env(tmp), capture_output=True, text=True, timeout=timeout_s)
    if proc.returncode != 0:
        raise AssertionError(f"{Path(args[0]).name} {args[1:4]} exited {proc.returncode}:\n"
                             f"{proc.stdout[-3000:]}\n{proc.stderr[-4000:]}")
    return proc


def _probe(tmp: Path, root: Path) -> dict:
    out = tmp / f"{root.name}.npz"
    _run(tmp, [str(LEROBOT_BIN / "python"), str(PROBE), str(root), str(out)])
    with np.load(out) as z:
        return {k: z[k] for k in z.files}


def _check_read(got: dict, eps: list[Episode]) -> None:
    """What LeRobotDataset returned equals what was exported (bit-exact vectors, images within the codec's loss)."""
    n = sum(len(e.actions) for e in eps)
    assert int(got["num_frames"]) == n and int(got["num_episodes"]) == len(eps)
    np.testing.assert_array_equal(got["action"], np.concatenate([e.actions for e in eps]))
    np.testing.assert_array_equal(got["observation.state"], np.concatenate([e.state for e in eps]))
    np.testing.assert_array_equal(got["observation.environment_state"],
                                  np.concatenate([e.objects.reshape(len(e.objects), -1) for e in eps]))
    np.testing.assert_array_equal(got["episode_index"], np.repeat(np.arange(len(eps)), [len(e.actions) for e in eps]))
    np.testing.assert_array_equal(got["index"], np.arange(n))
    assert list(got["tasks"]) == [e.task for e in eps]
    for cam in CAMERAS:
        key = f"observation.images.{cam}"
        for i, e in enumerate(eps):
            for which, t in (("first", 0), ("last", -1)):
                want = e.frames[cam][t].transpose(2, 0, 1) / 255.0
                err = np.abs(got[f"{key}/{which}"][i] - want).mean()
                assert err < PIXEL_TOL, (key, i, which, err)


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lerobot")
    a = [_episode(n, s, task) for n, s, task in ((14, 0, "pick up the red cube"), (9, 1, "put the cube in the bowl"),
                                                 (11, 2, "pick up the red cube"), (8, 3, "put the cube in the bowl"))]
    b = [_episode(n, s, task) for n, s, task in ((7, 4, "stack the cubes"), (10, 5, "pick up the red cube"),
                                                 (6, 6, "stack the cubes"))]
    _export(tmp / "a", a)
    # b: limits far below one episode, so every episode has its own data and video files (2 files per chunk)
    _export(tmp / "b", b, data_files_size_in_mb=1e-6, video_files_size_in_mb=1e-6, chunks_size=2)
    return tmp, a, b


def test_lerobot_dataset_reads_the_export(exports):
    tmp, a, b = exports
    got = _probe(tmp, tmp / "a")
    _check_read(got, a)
    _check_read(_probe(tmp, tmp / "b"), b)  # across data/video files and chunks
    # delta_timestamps at the second-to-last frame of episode 0: actions t..t+3, the two past the end padded
    last = len(a[0].actions) - 1
    np.testing.assert_array_equal(got["chunk_action"][:2], a[0].actions[last - 1:last + 1])
    assert got["chunk_action_is_pad"].tolist() == [False, False, True, True]
    prev = a[0].frames["front"][last - 2].transpose(2, 0, 1) / 255.0
    assert np.abs(got["chunk_image"][0] - prev).mean() < PIXEL_TOL
    stats = json.loads(str(got["stats"]))
    assert np.array(stats["observation.images.front"]["mean"]).shape == (3, 1, 1)


def _train_act(tmp: Path, out: Path, steps: int, *extra: str) -> str:
    """lerobot-train, ACT shrunk to run on the CPU in seconds, no download (no pretrained backbone); returns the log."""
    proc = _run(tmp, [
        str(LEROBOT_BIN / "lerobot-train"), "--dataset.repo_id=local/a", f"--dataset.root={tmp / 'a'}",
        "--dataset.video_backend=pyav", "--policy.type=act", "--policy.device=cpu", "--policy.push_to_hub=false",
        "--policy.pretrained_backbone_weights=null", "--policy.chunk_size=4", "--policy.n_action_steps=4",
        "--policy.dim_model=32", "--policy.dim_feedforward=64", "--policy.n_heads=2",
        "--policy.n_encoder_layers=1", "--policy.n_decoder_layers=1", "--policy.n_vae_encoder_layers=1",
        "--policy.latent_dim=8", f"--steps={steps}", "--batch_size=2", "--num_workers=0", "--log_freq=1",
        f"--save_freq={steps}", "--env_eval_freq=0", "--wandb.enable=false", f"--output_dir={out}", "--seed=0",
        *extra], timeout_s=400)
    return proc.stdout + proc.stderr


def test_lerobot_train_runs_act_on_the_export(exports):
    tmp, _, _ = exports
    # as users run it: camera normalisation from ImageNet's statistics, which lerobot writes into the dataset's
    # camera statistics (the KeyError of an export without them)
    log = _train_act(tmp, tmp / "act", 3)
    losses = [float(w.split(":")[1]) for w in log.split() if w.startswith("loss:")]
    assert len(losses) == 3 and all(np.isfinite(losses)), log[-2000:]
    model = tmp / "act" / "checkpoints" / "000003" / "pretrained_model"
    assert (model / "model.safetensors").exists(), sorted(p.name for p in model.parent.rglob("*"))
    config = json.loads((model / "config.json").read_text())
    assert {"observation.images.front", "observation.images.wrist", "observation.state",
            "observation.environment_state"} <= set(config["input_features"])

    # with the exported camera statistics: what lerobot normalises with is what was exported
    _train_act(tmp, tmp / "act_own_stats", 1, "--dataset.use_imagenet_stats=false")
    from safetensors.numpy import load_file

    model = tmp / "act_own_stats" / "checkpoints" / "000001" / "pretrained_model"
    (norm,) = model.glob("policy_preprocessor_step_*_normalizer_processor.safetensors")
    used = load_file(norm)
    stats = json.loads((tmp / "a" / "meta" / "stats.json").read_text())
    for key in ("observation.images.front", "observation.images.wrist", "action", "observation.environment_state"):
        for stat in ("mean", "std"):
            np.testing.assert_allclose(used[f"{key}.{stat}"].ravel(), np.ravel(stats[key][stat]), rtol=1e-6)


def test_lerobot_edit_dataset_deletes_and_merges(exports):
    tmp, a, b = exports
    edit = str(LEROBOT_BIN / "lerobot-edit-dataset")
    _run(tmp, [edit, "--repo_id=local/a", f"--root={tmp / 'a'}", "--new_repo_id=local/a_del",
               f"--new_root={tmp / 'a_del'}", "--operation.type=delete_episodes", "--operation.episode_indices=[1]"])
    kept = [a[0], a[2], a[3]]
    _check_read(_probe(tmp, tmp / "a_del"), kept)
    _run(tmp, [edit, "--new_repo_id=local/merged", f"--new_root={tmp / 'merged'}", "--operation.type=merge",
               "--operation.repo_ids=['local/a_del', 'local/b']",
               f"--operation.roots=['{tmp / 'a_del'}', '{tmp / 'b'}']"])
    got = _probe(tmp, tmp / "merged")
    _check_read(got, kept + b)
    stats = json.loads(str(got["stats"]))
    assert stats["action"]["count"] == [sum(len(e.actions) for e in kept + b)]
    pixels = np.concatenate([e.frames["wrist"] for e in kept + b]).reshape(-1, 3) / 255.0
    np.testing.assert_allclose(np.array(stats["observation.images.wrist"]["mean"])[:, 0, 0], pixels.mean(0),
                               atol=1e-6)

"""The data flywheel end to end through the CLI, small: collect 2 expert episodes through the sim graph (recorded
MCAP bags) -> bags-to-dataset -> train tiny a few steps -> export -> eval 1 episode of the bundle in the graph,
recorded -> relabelled by the expert (DAgger) -> fine-tuned on both datasets."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from .hosts import loopback

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
HOST = loopback(44)  # franky-sim of this module binds here


def _run(*cmd, timeout_s=300):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([str(BIN / cmd[0]), *map(str, cmd[1:])], capture_output=True, text=True, env=env,
                          timeout=timeout_s)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n" \
                                 f"{proc.stderr[-3000:]}"
    return proc.stdout


def test_collect_convert_train_export_eval(tmp_path):
    bags, data, train, bundle = tmp_path / "bags", tmp_path / "data", tmp_path / "train", tmp_path / "bundle"
    _run("vla-jepa", "collect", bags, "--episodes-per-family", 1, "--seed", 3, "--robot-host", HOST)
    episodes = sorted(p for p in bags.iterdir() if (p / "episode.yaml").exists())
    assert len(episodes) == 2  # one per task family
    out = _run("vla-jepa", "bags-to-dataset", bags, data, "--image-size-px", 128)
    assert "kept 2/2 episodes" in out
    assert len(list(data.glob("episode_*.npz"))) == 2 and (data / "lerobot_v3").is_dir()
    _run("vla-jepa-train", "--preset", "tiny", "--data", data, "--out-dir", train, "--threads", 1,
         "--train.total-steps", 3, "--train.batch-size", 4, "--no-progress")
    _run("vla-jepa", "export", train / "step_000003", bundle, "--model-id", "flywheel-e2e")
    _run("vla-jepa", "eval", bundle, "--episodes-per-family", 1, "--families", "pick_up", "--task-timeout-s", 3,
         "--robot-host", HOST, "--out-dir", tmp_path / "eval", "--record", tmp_path / "rollouts", "--noise-scale", 0)
    results = json.loads((tmp_path / "eval" / "eval_results.json").read_text())
    assert results["model_id"] == "flywheel-e2e" and len(results["episodes"]) == 1 and results["noise_scale"] == 0
    episode = results["episodes"][0]
    assert episode["outcome"] in ("FAILED", "SUCCEEDED") and episode["chunks"] > 0  # the bundle drove the graph
    import av  # the episode's video: the front camera while the task ran, every frame at the camera rate
    with av.open(episode["video"]) as container:
        assert sum(1 for _ in container.decode(video=0)) >= 10
    assert Path(episode["strip"]).is_file()
    # DAgger: the learner's own rollout, every step labelled by the expert, then training on both datasets
    out = _run("vla-jepa", "bags-to-dataset", tmp_path / "rollouts", tmp_path / "relabelled", "--image-size-px", 128,
               "--no-lerobot", "--relabel-expert")
    assert "kept 1/1 episodes" in out
    _run("vla-jepa-train", "--preset", "tiny", "--data", data, tmp_path / "relabelled", "--init-from",
         train / "step_000003", "--out-dir", tmp_path / "dagger", "--threads", 1, "--train.total-steps", 2,
         "--train.batch-size", 4, "--no-progress")
    assert (tmp_path / "dagger" / "step_000002" / "model.safetensors").exists()

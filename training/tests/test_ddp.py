"""torch.distributed: 2 CPU processes (gloo) match one process with the same global batch."""

import os
import subprocess
import sys

import pytest
from safetensors.torch import load_file

from vla_jepa.config import TrainConfig
from vla_jepa.train import TrainArgs, train

TRAIN_KW = dict(total_steps=2, batch_size=4, warmup_steps=1, lr_vlm=1e-3, lr_action_head=1e-3, lr_predictor=1e-3,
                min_lr=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["ddp", "fsdp"])
def test_two_process_gloo_matches_single_process(tmp_path, mode):
    single = train(TrainArgs(out_dir=str(tmp_path / "single"), synthetic_episodes=2, train=TrainConfig(**TRAIN_KW),
                             progress=False))
    cli = [f"--train.{k.replace('_', '-')}={v}" for k, v in TRAIN_KW.items()]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    port = 29533 if mode == "ddp" else 29534
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2", f"--master-port={port}",
           "-m", "vla_jepa.train", f"--out-dir={tmp_path / 'ddp'}", "--synthetic-episodes=2", "--no-progress", *cli,
           *(["--train.fsdp"] if mode == "fsdp" else [])]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "world_size=2" in res.stdout, res.stdout[-2000:]
    a = load_file(str(single["checkpoint"] / "model.safetensors"))
    b = load_file(str(tmp_path / "ddp" / "step_000002" / "model.safetensors"))
    assert a.keys() == b.keys()
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    print("worst", worst)
    assert worst < 1e-5, f"max weight difference {worst}"
    init = train(TrainArgs(out_dir=str(tmp_path / "zero"), synthetic_episodes=2,
                           train=TrainConfig(**{**TRAIN_KW, "total_steps": 1}), progress=False))
    c = load_file(str(init["checkpoint"] / "model.safetensors"))
    assert max((a[k] - c[k]).abs().max().item() for k in a) > 1e-4  # training moved the weights: test can fail

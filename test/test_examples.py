"""examples/send_task.py, the README's way to send a task, against a real task manager in another process."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vla_jepa_ros.bringup import Bringup

pytestmark = pytest.mark.slow

SEND_TASK = Path(__file__).resolve().parents[1] / "examples" / "send_task.py"


def run_send_task(*args, env=None):
    return subprocess.run([sys.executable, str(SEND_TASK), *args], capture_output=True, text=True, timeout=120,
                          env=env)


def test_send_task_prints_the_outcome_and_exits_non_zero_when_the_task_did_not_succeed(tmp_path):
    # No policy or controller runs: the task times out, which the task manager reports as FAILED.
    with Bringup("task_manager_only", log_dir=tmp_path, extra_params={"task_manager": {"status_rate_hz": 10.0}}):
        proc = run_send_task("pick up the red cube", "--timeout-s", "1.0")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("task-") and "FAILED after" in last, proc.stdout


def test_send_task_without_a_graph_says_so_and_exits_2():
    env = dict(os.environ, ROS_DOMAIN_ID=str((int(os.environ.get("ROS_DOMAIN_ID", "0")) + 7) % 100 + 1))
    proc = run_send_task("pick up the red cube", "--wait-s", "1", env=env)
    assert proc.returncode == 2 and "no task manager serves /vla/run_task" in proc.stderr, proc.stderr

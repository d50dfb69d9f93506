"""Cost of signing and checking control messages (docs/security.md), per message, in microseconds.

    .venv/bin/python benchmarks/bench_auth.py [--n 2000] [--out benchmarks/results/auth_cpu.txt]

Rows: ActionChunk (the policy's horizon x 7 chunk, signed by the policy, checked by the controller) and TaskStatus;
columns: median and p99 of sign and of verify, and verify as a share of the controller's 10 ms control period.
"""
from __future__ import annotations

import argparse
import array
import platform
import time

import numpy as np

from vla_jepa_interfaces.msg import ActionChunk, TaskStatus
from vla_jepa_ros.core.auth import Signer, Verifier, generate_key
from vla_jepa_ros.core.types import DELTA_EE_DIM_NAMES
from vla_jepa_ros.ros.auth import sign_message, verify_message

CONTROL_PERIOD_US = 10_000.0  # control_rate_hz 100


def _chunk(horizon: int) -> ActionChunk:
    data = np.random.default_rng(0).normal(0, 0.01, (horizon, 7)).astype(np.float32)
    return ActionChunk(task_id="task-0001", sequence=1, horizon=horizon, action_dim=7, step_period_s=0.1,
                       action_space="franka_delta_ee", dim_names=list(DELTA_EE_DIM_NAMES),
                       data=array.array("f", data.tobytes()), inference_ms=50.0, model_id="bench")


def _status() -> TaskStatus:
    return TaskStatus(task_id="task-0001", instruction="put the red cube in the bowl", state=TaskStatus.RUNNING,
                      steps=10, elapsed_s=3.0, timeout_s=60.0, record=True, message="running")


def measure(make, n: int) -> dict:
    key = generate_key()
    signer, verifier = Signer(key, "bench"), Verifier(key, max_age_s=60.0)
    sign_us, verify_us = [], []
    for _ in range(n):
        msg = make()
        t0 = time.perf_counter()
        sign_message(signer, msg)
        t1 = time.perf_counter()
        reason = verify_message(verifier, msg)
        t2 = time.perf_counter()
        assert reason is None, reason
        sign_us.append((t1 - t0) * 1e6)
        verify_us.append((t2 - t1) * 1e6)
    s, v = np.array(sign_us), np.array(verify_us)
    return {"sign_p50_us": np.median(s), "sign_p99_us": np.percentile(s, 99), "verify_p50_us": np.median(v),
            "verify_p99_us": np.percentile(v, 99), "verify_share_of_period": np.median(v) / CONTROL_PERIOD_US}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=2000, help="messages per row")
    p.add_argument("--out", default=None, help="also write the table to this file")
    a = p.parse_args()
    rows = {"ActionChunk 8x7": lambda: _chunk(8), "ActionChunk 50x7": lambda: _chunk(50), "TaskStatus": _status}
    lines = [f"auth sign/verify per message, n={a.n}, {platform.processor() or platform.machine()}, "
             f"python {platform.python_version()}",
             f"{'message':<18}{'sign p50':>10}{'sign p99':>10}{'verify p50':>12}{'verify p99':>12}{'of 10 ms':>10}"]
    for name, make in rows.items():
        r = measure(make, a.n)
        lines.append(f"{name:<18}{r['sign_p50_us']:>8.1f}us{r['sign_p99_us']:>8.1f}us{r['verify_p50_us']:>10.1f}us"
                     f"{r['verify_p99_us']:>10.1f}us{100 * r['verify_share_of_period']:>9.2f}%")
    text = "\n".join(lines)
    print(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

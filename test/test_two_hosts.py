"""Two hosts on one machine: the GPU host (task manager + policy) and the robot computer (camera frames, arm state,
the client that starts a task) in two network namespaces this test creates, joined by a veth pair, with the
discovery settings of docs/two_hosts.md (ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST + ROS_STATIC_PEERS = the other
host). Nothing leaves the namespaces: no discovery or multicast traffic reaches the machine's real network.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from .runtime_fixtures import tiny_bundle

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
GPU_ADDR, ROBOT_ADDR = "10.201.0.1", "10.201.0.2"  # only inside the test's own namespaces


def _ip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)


@pytest.fixture
def two_hosts():
    """Two namespaces (gpu, robot) joined by a veth pair; yields their names; removes them afterwards."""
    tag = uuid.uuid4().hex[:6]
    gpu, robot = f"vj{tag}g", f"vj{tag}r"
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root (ip netns add)")
    made = _ip("netns", "add", gpu)
    if made.returncode != 0:
        pytest.skip(f"network namespaces not permitted here: {made.stderr.strip()}")
    try:
        steps = [("netns", "add", robot),
                 ("link", "add", f"{tag}g", "netns", gpu, "type", "veth", "peer", "name", f"{tag}r", "netns", robot)]
        for ns, dev, addr in ((gpu, f"{tag}g", GPU_ADDR), (robot, f"{tag}r", ROBOT_ADDR)):
            steps += [("-n", ns, "link", "set", "lo", "up"), ("-n", ns, "addr", "add", f"{addr}/24", "dev", dev),
                      ("-n", ns, "link", "set", dev, "up")]
        for step in steps:
            res = _ip(*step)
            if res.returncode != 0:
                pytest.skip(f"could not set up the test network (ip {' '.join(step)}): {res.stderr.strip()}")
        yield gpu, robot
    finally:
        for ns in (gpu, robot):
            _ip("netns", "del", ns)  # also removes the veth pair


def _env(peer: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("FASTRTPS_DEFAULT_PROFILES_FILE", None)
    env.update(ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST", ROS_STATIC_PEERS=peer, PYTHONUNBUFFERED="1")
    return env


def test_policy_host_and_robot_host_talk_through_static_peers_only(two_hosts, tmp_path):
    gpu, robot = two_hosts
    bundle = tiny_bundle()
    # GPU host: the task manager and the policy (the bringup command of docs/two_hosts.md, with the tiny bundle)
    gpu_cmd = ["ip", "netns", "exec", gpu, sys.executable, "-m", "vla_jepa_ros.bringup", "--graph", "sim",
               "--nodes", "task_manager", "policy", "--quiet", "--log-dir", str(tmp_path / "gpu"),
               "-p", "*.use_sim_time=false", "-p", "policy.policy=bundle", "-p", f"policy.bundle_path={bundle}",
               "-p", "policy.use_ground_truth=false", "-p", "policy.inference_rate_hz=5.0",
               "-p", "policy.camera_width_px=160", "-p", "policy.camera_height_px=120"]
    gpu_proc = subprocess.Popen(gpu_cmd, cwd=ROOT, env=_env(ROBOT_ADDR), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        # robot computer: camera frames + arm state out, a task started, chunks and statuses in
        probe = subprocess.run(["ip", "netns", "exec", robot, sys.executable, "-m", "test.two_hosts_probe", "90"],
                               cwd=ROOT, env=_env(GPU_ADDR), capture_output=True, text=True, timeout=200)
    finally:
        os.killpg(gpu_proc.pid, signal.SIGINT)
        try:
            gpu_out, _ = gpu_proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(gpu_proc.pid, signal.SIGKILL)
            gpu_out, _ = gpu_proc.communicate()
    logs = "\n".join(f"--- {p.name}\n{p.read_text()[-2000:]}" for p in sorted((tmp_path / "gpu").glob("*.log")))
    lines = [ln for ln in probe.stdout.splitlines() if ln.startswith("{")]
    assert lines, f"probe printed no result\nprobe:\n{probe.stdout[-2000:]}{probe.stderr[-3000:]}\ngpu host:\n{logs}"
    result = json.loads(lines[-1])
    assert result["ok"], f"{result}\nprobe stderr:\n{probe.stderr[-3000:]}\ngpu host:\n{gpu_out[-2000:]}\n{logs}"
    assert result["accepted"] and result["chunks"] >= 3 and result["chunk_finite"]
    assert result["chunk_shape"][0] > 0 and result["chunk_shape"][1] == 7
    from vla_jepa_interfaces.msg import TaskStatus

    assert {TaskStatus.RUNNING, TaskStatus.CANCELED} <= set(result["statuses"])

"""Two hosts on one machine: the GPU host (task manager + policy) and the robot computer (camera frames, arm state,
the client that starts a task) in two network namespaces this test creates, joined by a veth pair, with the
discovery settings of docs/two_hosts.md (ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST + ROS_STATIC_PEERS = the other
host). Nothing leaves the namespaces: no discovery or multicast traffic reaches the machine's real network.
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from .runtime_fixtures import tiny_bundle

pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    os.environ.get("VLA_JEPA_NETNS_TESTS") != "1",
    reason="opt-in (VLA_JEPA_NETNS_TESTS=1): creates two network namespaces as root; it passes alone but timed out "
           "waiting for chunks late in a full CI run, cause not yet found")]
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
    if shutil.which("ip") is None:
        pytest.skip("no `ip` command (iproute2) to create network namespaces")
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


def _key_params(tmp_path: Path) -> tuple[list[str], list[str]]:
    """With signed control messages (core/auth.py, docs/security.md): one key written by `vla-jepa keygen` on the
    robot computer and copied, mode kept, to the GPU host; each host's nodes get their own copy. Without: none."""
    if importlib.util.find_spec("vla_jepa_ros.core.auth") is None:
        return [], []
    robot_key, gpu_key = tmp_path / "robot" / "auth.key", tmp_path / "gpu" / "auth.key"
    for d in (robot_key.parent, gpu_key.parent):
        d.mkdir(parents=True, exist_ok=True)
    made = subprocess.run([str(Path(sys.executable).parent / "vla-jepa"), "keygen", str(robot_key)],
                          capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    shutil.copy2(robot_key, gpu_key)  # scp -p
    return [f"*.auth_key_file={robot_key}"], [f"*.auth_key_file={gpu_key}"]


def _bringup(ns: str, peer: str, log_dir: Path, nodes: list[str], *params: str) -> subprocess.Popen:
    """`vla-jepa-bringup --nodes ...` inside namespace ns, discovering only ns's own nodes and those at `peer`."""
    cmd = ["ip", "netns", "exec", ns, sys.executable, "-m", "vla_jepa_ros.bringup", "--graph", "sim", "--nodes",
           *nodes, "--quiet", "--log-dir", str(log_dir), "-p", "*.use_sim_time=false"]
    for p in params:
        cmd += ["-p", p]
    return subprocess.Popen(cmd, cwd=ROOT, env=_env(peer), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)


def _stop(proc: subprocess.Popen) -> str:
    os.killpg(proc.pid, signal.SIGINT)
    try:
        return proc.communicate(timeout=20)[0]
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        return proc.communicate()[0]


def test_policy_host_and_robot_host_talk_through_static_peers_only(two_hosts, tmp_path):
    gpu, robot = two_hosts
    bundle = tiny_bundle()
    robot_key, gpu_key = _key_params(tmp_path)
    # the split of docs/two_hosts.md: the policy on the GPU host (here the tiny bundle on onnxruntime), the task
    # manager on the robot computer, where a probe plays the camera drivers and the controller
    procs = {"gpu": _bringup(gpu, ROBOT_ADDR, tmp_path / "gpu", ["policy"], "policy.policy=bundle",
                             f"policy.bundle_path={bundle}", "policy.use_ground_truth=false",
                             "policy.camera_width_px=160", "policy.camera_height_px=120", *gpu_key),
             "robot": _bringup(robot, GPU_ADDR, tmp_path / "robot", ["task_manager"], *robot_key)}
    outs = {}
    try:
        probe = subprocess.run(["ip", "netns", "exec", robot, sys.executable, "-m", "test.two_hosts_probe", "90"],
                               cwd=ROOT, env=_env(GPU_ADDR), capture_output=True, text=True, timeout=200)
    finally:
        for name, proc in procs.items():
            outs[name] = _stop(proc)
    logs = "\n".join(f"--- {p}\n{p.read_text()[-2000:]}" for p in sorted(tmp_path.glob("*/*.log")))
    lines = [ln for ln in probe.stdout.splitlines() if ln.startswith("{")]
    assert lines, f"probe printed no result\n{probe.stdout[-2000:]}{probe.stderr[-3000:]}\n{logs}"
    result = json.loads(lines[-1])
    assert result["ok"], f"{result}\nprobe stderr:\n{probe.stderr[-3000:]}\n{outs}\n{logs}"
    assert result["accepted"] and result["chunks"] >= 3 and result["chunk_finite"]
    assert result["chunk_shape"][0] > 0 and result["chunk_shape"][1] == 7
    from vla_jepa_interfaces.msg import TaskStatus

    assert {TaskStatus.RUNNING, TaskStatus.CANCELED} <= set(result["statuses"])

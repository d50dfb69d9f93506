"""bringup: one process per node, a dead node brings the graph down with a reason, SIGINT stops it all."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vla_jepa_ros.bringup import Bringup, NodeDied, node_command
from vla_jepa_ros.graph import GRAPHS, Graph, NodeSpec, get_graph

pytestmark = pytest.mark.slow
TWO_NODES = Graph("two", "config/franka.yaml",
                  (NodeSpec("tm_a", "task_manager"), NodeSpec("tm_b", "task_manager", remaps=(("/vla/stop", "/b/stop"),))),
                  "two nodes for the bringup tests")


def _children(pid: int) -> list[int]:
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.append(int(stat.parent.name))
    return kids


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"


def _fastdds_files() -> set[str]:
    return {p.name for p in Path("/dev/shm").glob("fastdds_*")}


def test_node_command_has_params_files_name_and_remaps(tmp_path):
    spec = NodeSpec("policy", "policy", remaps=(("/in", "/out"),))
    cmd = node_command(spec, [tmp_path / "p.yaml", tmp_path / "o.yaml"])
    assert cmd[1:3] == ["-m", "vla_jepa_ros.nodes.policy_node"]
    assert "__node:=policy" in cmd and "/in:=/out" in cmd
    assert cmd.index(str(tmp_path / "o.yaml")) > cmd.index(str(tmp_path / "p.yaml"))  # overrides come last


def test_every_graph_node_module_exists():
    import importlib.util

    for graph in GRAPHS.values():
        for spec in graph.nodes:
            assert importlib.util.find_spec(spec.module) is not None or spec.name == "recorder", spec.module
    with pytest.raises(ValueError, match="unknown graph 'nope'"):
        get_graph("nope")


def test_sigkill_of_one_node_brings_the_rest_down_with_reason(tmp_path):
    before = _fastdds_files()
    b = Bringup(TWO_NODES, log_dir=tmp_path).start()
    try:
        time.sleep(2.0)
        b.check()
        victim = b.procs["tm_b"]
        os.kill(victim.pid, signal.SIGKILL)
        with pytest.raises(NodeDied, match=r"node 'tm_b' killed by SIGKILL"):
            b.supervise(poll_s=0.05)
    finally:
        t0 = time.monotonic()
        codes = b.stop()
    assert time.monotonic() - t0 < 5.0
    assert codes["tm_a"] == 0, b.log_tail("tm_a")  # the survivor shut down cleanly on SIGINT
    assert not any(_alive(p.pid) for p in b.procs.values())
    assert _fastdds_files() <= before, "shared-memory files left behind"


def test_cli_sigint_stops_everything_within_5_s(tmp_path):
    before = _fastdds_files()
    proc = subprocess.Popen([sys.executable, "-m", "vla_jepa_ros.bringup", "--graph", "task_manager_only",
                             "--log-dir", str(tmp_path), "--quiet"], stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 10
        kids = []
        while time.monotonic() < deadline and not (tmp_path / "task_manager.log").exists():
            time.sleep(0.1)
        time.sleep(1.5)
        kids = _children(proc.pid)
        assert kids, "bringup started no node process"
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=5)
        elapsed = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, proc.stderr.read()
    assert elapsed < 5.0
    assert not any(_alive(k) for k in kids)
    assert _fastdds_files() <= before


def test_cli_reports_a_node_that_refuses_to_start(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "vla_jepa_ros.bringup", "--graph", "task_manager_only",
                           "--log-dir", str(tmp_path), "--quiet", "-p", "task_manager.default_timeout_s=-3"],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1
    assert "node 'task_manager' exited with code 2" in proc.stderr
    assert "default_timeout_s=-3" in proc.stderr  # the node's own reason, from its log tail


def test_nodes_never_inherit_a_realtime_scheduler(tmp_path):
    """A parent on SCHED_FIFO (what a franky connection leaves behind) must not pass it to the graph's nodes."""
    if os.geteuid() != 0:
        pytest.skip("setting SCHED_FIFO needs root (CAP_SYS_NICE)")
    previous = os.sched_getscheduler(0), os.sched_getparam(0)
    os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))
    try:
        b = Bringup("task_manager_only", log_dir=tmp_path).start()
    finally:
        os.sched_setscheduler(0, previous[0], previous[1])
    try:
        pid = b.procs["task_manager"].pid
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and "rclpy" not in Path(f"/proc/{pid}/maps").read_text():
            time.sleep(0.2)
        time.sleep(1.0)
        b.check()
        assert os.sched_getscheduler(pid) == os.SCHED_OTHER
    finally:
        b.stop()


def test_a_second_graph_in_the_same_ros_domain_is_refused_with_what_to_do(ros_context):
    """`vla-jepa demo/collect/eval` refuse to start while another graph's nodes are up in the ROS domain (their
    topics and task managers would mix); the message names the nodes and the way out."""
    import rclpy

    from vla_jepa_ros.bringup import GraphAlreadyRunning, ensure_no_running_graph, running_graph_nodes

    assert running_graph_nodes(wait_s=0.5) == []
    ensure_no_running_graph(wait_s=0.5)  # alone: nothing raised
    node = rclpy.create_node("task_manager", namespace="/", context=ros_context)
    try:
        with pytest.raises(GraphAlreadyRunning, match=r"ROS domain \d+ \(nodes /task_manager\).*ROS_DOMAIN_ID"):
            ensure_no_running_graph(wait_s=10.0)
        bin_dir = Path(sys.executable).parent
        proc = subprocess.run([str(bin_dir / "vla-jepa"), "demo", "--out-dir", "unused"], capture_output=True,
                              text=True, timeout=120)
        assert proc.returncode == 2, proc.stderr[-2000:]
        assert "vla-jepa demo: another graph is running" in proc.stderr and "Traceback" not in proc.stderr
    finally:
        node.destroy_node()

"""The closed loop across processes: task_manager, sim (franky-sim + MuJoCo + cameras), policy (scripted expert)
and franka_controller (franky over the libfranka protocol), started by Bringup and driven over real DDS.
Success is decided by the sim's ground-truth check and declared through /vla/finish_task.
"""
import os
import subprocess
import sys
import time

import numpy as np
import pytest
from geometry_msgs.msg import PoseStamped
from std_msgs.msg import Bool
from std_srvs.srv import Trigger

from vla_jepa_interfaces.msg import ActionChunk, ObjectPoses, RobotState, TaskStatus
from vla_jepa_interfaces.srv import ExecuteTask
from vla_jepa_ros.bringup import Bringup
from vla_jepa_ros.core.auth import load_key
from vla_jepa_ros.ros.auth import publish_estop_release
from vla_jepa_ros.ros.qos import RELIABLE_QOS
from vla_jepa_ros.sim.world import BOWL_NAME, SimWorldConfig, random_layout

from .rosutil import RosClient
from .hosts import loopback

pytestmark = pytest.mark.slow

HOST = loopback(23)  # franky-sim of this module binds here
LAYOUT_SEED = 100  # task k of the module runs on layout LAYOUT_SEED + k - 1
WALL_PER_SIM_S = 4.0  # generous: the graph runs at about 0.5x real time on 2 shared cores
HOLD_TOL_M = 0.003


@pytest.fixture(scope="module")
def graph(tmp_path_factory):
    params = {"sim": {"layout_seed": LAYOUT_SEED, "world": {"robot_host": HOST}},
              "franka_controller": {"arm": {"robot_host": HOST}},
              "task_manager": {"status_rate_hz": 10.0}}
    env = {"MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    with Bringup("sim", nodes=("task_manager", "sim", "policy", "franka_controller"), extra_params=params, env=env,
                 log_dir=tmp_path_factory.mktemp("graph_logs")) as b:
        client = RosClient("closed_loop_test")
        client.subscribe("/franka/state", RobotState, RELIABLE_QOS)
        client.subscribe("/franka/ee_pose", PoseStamped, RELIABLE_QOS)
        client.subscribe("/vla/action_chunk", ActionChunk, RELIABLE_QOS)
        client.subscribe("/sim/object_poses", ObjectPoses, RELIABLE_QOS)
        estop = client.node.create_publisher(Bool, "/franka/estop", RELIABLE_QOS)
        client.wait_for(lambda: _connected(client) or b.check(), 60, "the controller to connect to franky-sim")
        yield b, client, estop
        client.close()
        b.check()  # every node survived the module


def _connected(client) -> bool:
    states = client.messages["/franka/state"]
    return bool(states) and states[-1].mode != RobotState.MODE_DISCONNECTED


def _latest(client, topic):
    msgs = client.messages[topic]
    return msgs[-1] if msgs else None


def _run_task(graph, instruction, timeout_s):
    b, client, _ = graph
    res = client.call(ExecuteTask, "/vla/execute_task", ExecuteTask.Request(instruction=instruction, timeout_s=timeout_s),
                      timeout_s=20)
    assert res.accepted, res.message
    deadline = time.monotonic() + timeout_s * WALL_PER_SIM_S + 20
    while time.monotonic() < deadline:
        b.check()
        s = client.latest_status()
        if s is not None and s.task_id == res.task_id and s.state not in (TaskStatus.IDLE, TaskStatus.RUNNING):
            return res.task_id, s
        time.sleep(0.1)
    raise TimeoutError(f"{instruction!r}: no outcome within {timeout_s * WALL_PER_SIM_S + 20} s wall")


@pytest.mark.parametrize("instruction", ["pick up the red cube", "pick up the blue cube",
                                         "put the red cube in the bowl", "put the green cube in the bowl"])
def test_expert_solves_task_families(graph, instruction):
    t0 = time.monotonic()
    task_id, status = _run_task(graph, instruction, timeout_s=40.0)
    assert status.state == TaskStatus.SUCCEEDED, f"{instruction!r}: {status.message}"
    assert "finish_task" in status.message  # the sim's ground-truth check ended it
    chunks = [c for c in graph[1].messages["/vla/action_chunk"] if c.task_id == task_id]
    assert len(chunks) >= 5 and all(c.horizon == 7 and c.action_dim == 7 for c in chunks)
    print(f"\n{instruction!r}: SUCCEEDED in {status.elapsed_s:.1f} s sim, {time.monotonic() - t0:.1f} s wall, "
          f"{len(chunks)} chunks")


def test_impossible_instruction_fails_on_timeout(graph):
    _, status = _run_task(graph, "pick up the purple cube", timeout_s=4.0)
    assert status.state == TaskStatus.FAILED and "timed out" in status.message


def test_the_next_layout_is_placed_when_a_task_ends(graph):
    """Objects are placed between tasks, not at a task's start: a camera frame rendered just before a reset at the
    start would be stamped after it and show the last layout (the recorder and the policy take it as the scene)."""
    b, client, _ = graph
    _, status = _run_task(graph, "pick up the purple cube", timeout_s=3.0)
    tasks = list(dict.fromkeys(s.task_id for s in client.statuses if s.state == TaskStatus.RUNNING))
    assert tasks[-1] == status.task_id
    next_bowl = np.array(random_layout(SimWorldConfig(), LAYOUT_SEED + len(tasks)).placements[BOWL_NAME][:2])

    def bowl_xy() -> np.ndarray:
        msg = _latest(client, "/sim/object_poses")
        p = msg.poses[list(msg.names).index(BOWL_NAME)].position
        return np.array([p.x, p.y])

    client.wait_for(lambda: np.allclose(bowl_xy(), next_bowl, atol=1e-6), 10,
                    f"the bowl at the next task's place {next_bowl} (now {bowl_xy()})")
    assert client.latest_status().task_id == status.task_id  # placed while no task runs


def test_estop_topic_stops_refuses_and_its_release_needs_a_key_and_ends_the_task(graph):
    b, client, estop = graph
    res = client.call(ExecuteTask, "/vla/execute_task",
                      ExecuteTask.Request(instruction="put the blue cube in the bowl", timeout_s=60.0))
    assert res.accepted, res.message
    client.wait_for(lambda: (s := _latest(client, "/franka/state")) is not None and s.task_id == res.task_id
                    and s.mode == RobotState.MODE_EXECUTING and s.steps_executed > 5, 40, "the arm executing chunks")
    estop.publish(Bool(data=True))
    client.wait_for(lambda: _latest(client, "/franka/state").mode == RobotState.MODE_ESTOP, 5, "e-stop mode")
    time.sleep(1.0)  # let the arm come to rest
    rejected0 = _latest(client, "/franka/state").chunks_rejected
    steps0 = _latest(client, "/franka/state").steps_executed
    p0 = _pose(client)
    time.sleep(2.0)
    st = _latest(client, "/franka/state")
    assert np.linalg.norm(_pose(client) - p0) < HOLD_TOL_M, "the arm moved while the e-stop was engaged"
    assert st.mode == RobotState.MODE_ESTOP and st.steps_executed == steps0
    assert st.chunks_rejected > rejected0, "chunks kept coming and must be refused"
    estop.publish(Bool(data=False))  # anyone may engage; releasing this way is refused
    time.sleep(1.0)
    assert _latest(client, "/franka/state").mode == RobotState.MODE_ESTOP
    assert publish_estop_release(load_key(b.auth_key_file), "test", "closed-loop test")
    # released, but the interrupted task never resumes: it ends ABORTED and the arm holds
    final = client.wait_status(res.task_id, TaskStatus.ABORTED, timeout_s=10)
    assert "e-stop" in final.message, final.message
    p1 = _pose(client)
    time.sleep(2.0)
    st = _latest(client, "/franka/state")
    assert st.mode != RobotState.MODE_ESTOP and st.steps_executed in (0, steps0), st
    assert np.linalg.norm(_pose(client) - p1) < HOLD_TOL_M, "the arm moved after the release"


def _pose(client) -> np.ndarray:
    p = _latest(client, "/franka/ee_pose").pose.position
    return np.array([p.x, p.y, p.z])


def test_controller_refuses_bad_parameters(tmp_path):
    env = {**os.environ, "ROS_LOG_DIR": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "vla_jepa_ros.nodes.franka_controller_node", "--ros-args",
                           "-p", "safety.max_step_m:=-0.5", "-p", f"arm.robot_host:={HOST}"],
                          env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "max_step_m=-0.5 must be a finite number > 0" in proc.stdout + proc.stderr

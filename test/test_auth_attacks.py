"""Attacks on the control topics of the running sim graph (franky-sim FR3 in MuJoCo, expert policy, controller,
task manager, each in its own process) from a foreign publisher in this process, judged on the MEASURED TCP
(/franka/ee_pose, read from franky-sim by the controller) and on what the nodes report:

- idle graph: a forged TaskStatus RUNNING for a made-up task plus chunks for it (unsigned, and signed with a
  wrong key) adopt no task and move nothing;
- running task: unsigned chunks with the running task id (extreme deltas, huge sequence), altered and replayed
  copies of the real policy's signed chunks, a forged FAILED status of the running task: the real policy is not
  locked out, the task is not dropped, the sim does not re-place the layout;
- e-stop: Bool false, unsigned and wrong-key releases leave it engaged and the arm still; a signed release ends
  the interrupted task (ABORTED) and the arm does not move again.
Every refusal is counted on the controller's /diagnostics under its reason.
"""
from __future__ import annotations

import array
import copy
import os
import time

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped
from std_msgs.msg import Bool
from std_srvs.srv import Trigger

from vla_jepa_interfaces.msg import ActionChunk, EStopRelease, ObjectPoses, RobotState, TaskStatus
from vla_jepa_interfaces.srv import ExecuteTask
from vla_jepa_ros.bringup import Bringup
from vla_jepa_ros.core.auth import Signer, generate_key, load_key
from vla_jepa_ros.core.types import DELTA_EE_DIM_NAMES
from vla_jepa_ros.ros.auth import publish_estop_release, sign_message
from vla_jepa_ros.ros.qos import RELIABLE_QOS, STATUS_QOS
from vla_jepa_ros.sim.world import BOWL_NAME

from .hosts import loopback
from .rosutil import RosClient

pytestmark = pytest.mark.slow

HOST = loopback(110)  # franky-sim of this module binds here
HOLD_TOL_M = 0.003
CHUNK = "auth_refused.vla_jepa_interfaces/ActionChunk."
STATUS = "auth_refused.vla_jepa_interfaces/TaskStatus."
RELEASE = "auth_refused.vla_jepa_interfaces/EStopRelease."


@pytest.fixture(scope="module")
def graph(tmp_path_factory):
    params = {"sim": {"camera_rate_hz": 2.0, "world": {"robot_host": HOST}},  # the expert needs no cameras
              "franka_controller": {"arm": {"robot_host": HOST}},
              "task_manager": {"status_rate_hz": 10.0}}
    env = {"MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    with Bringup("sim", nodes=("task_manager", "sim", "policy", "franka_controller"), extra_params=params, env=env,
                 log_dir=tmp_path_factory.mktemp("auth_graph_logs")) as b:
        client = RosClient("auth_attacker")
        # the task manager answers only once its start-up check for another task manager is over: a forged status
        # sent before that would make it refuse to start (a second task manager), not test the stack's defence
        client.call(Trigger, "/vla/stop", Trigger.Request(), timeout_s=60)
        client.subscribe("/franka/state", RobotState, RELIABLE_QOS)
        client.subscribe("/franka/ee_pose", PoseStamped, RELIABLE_QOS)
        client.subscribe("/vla/action_chunk", ActionChunk, RELIABLE_QOS)
        client.subscribe("/sim/object_poses", ObjectPoses, RELIABLE_QOS)
        client.subscribe("/diagnostics", DiagnosticArray, 10)
        pubs = {"chunk": client.node.create_publisher(ActionChunk, "/vla/action_chunk", RELIABLE_QOS),
                "status": client.node.create_publisher(TaskStatus, "/vla/task_status", STATUS_QOS),
                "estop": client.node.create_publisher(Bool, "/franka/estop", RELIABLE_QOS),
                "release": client.node.create_publisher(EStopRelease, "/franka/estop_release", RELIABLE_QOS)}
        client.wait_for(lambda: _connected(client) or b.check(), 90, "the controller to connect to franky-sim")
        client.wait_for(lambda: _latest(client, "/franka/ee_pose") is not None, 20, "measured poses")
        try:
            yield b, client, pubs
        finally:
            client.close()
        b.check()  # every node survived the attacks


def _connected(client) -> bool:
    states = client.messages["/franka/state"]
    return bool(states) and states[-1].mode != RobotState.MODE_DISCONNECTED


def _latest(client, topic):
    msgs = client.messages[topic]
    return msgs[-1] if msgs else None


def _tcp(client) -> np.ndarray:
    p = _latest(client, "/franka/ee_pose").pose.position
    return np.array([p.x, p.y, p.z])


def _bowl_xy(client) -> np.ndarray:
    msg = _latest(client, "/sim/object_poses")
    p = msg.poses[list(msg.names).index(BOWL_NAME)].position
    return np.array([p.x, p.y])


def _controller_diag(client) -> dict[str, str]:
    for d in reversed(client.messages["/diagnostics"]):
        for s in d.status:
            if s.name == "franka_controller":
                return {kv.key: kv.value for kv in s.values}
    return {}


def _wait_counts(client, wanted: dict[str, int], timeout_s: float = 40.0) -> dict[str, str]:
    def ok():
        d = _controller_diag(client)
        return all(int(d.get(k, "0")) >= n for k, n in wanted.items())
    client.wait_for(ok, timeout_s, f"controller /diagnostics counts {wanted} (last: {_controller_diag(client)})")
    return _controller_diag(client)


def _forged_chunk(task_id: str, sequence: int, delta_m=(0.05, 0.0, 0.05)) -> ActionChunk:
    """A well-formed chunk that would push the TCP hard along delta_m every step (gripper open)."""
    rows = np.tile(np.array([*delta_m, 0.0, 0.0, 0.0, 1.0], np.float32), (8, 1))
    msg = ActionChunk(task_id=task_id, sequence=sequence, horizon=8, action_dim=7, step_period_s=0.1,
                      action_space="franka_delta_ee", dim_names=list(DELTA_EE_DIM_NAMES),
                      data=array.array("f", rows.tobytes()), model_id="attacker")
    return msg


def _stamped(client, msg):
    msg.header.stamp = client.node.get_clock().now().to_msg()
    return msg


def test_idle_graph_adopts_no_forged_task_and_the_arm_stays(graph):
    b, client, pubs = graph
    wrong = Signer(generate_key(), "task_manager")
    wrong_policy = Signer(generate_key(), "policy")
    p0 = _tcp(client)
    states_before = len(client.messages["/franka/state"])
    chunks_before = len(client.messages["/vla/action_chunk"])
    deadline = time.monotonic() + 4.0
    seq = 0
    while time.monotonic() < deadline:
        for status in (TaskStatus(task_id="forged-1", instruction="pick up the red cube", state=TaskStatus.RUNNING),
                       sign_message(wrong, TaskStatus(task_id="forged-1", instruction="pick up the red cube",
                                                      state=TaskStatus.RUNNING))):
            pubs["status"].publish(_stamped(client, status))
        seq += 1
        pubs["chunk"].publish(_stamped(client, _forged_chunk("forged-1", seq)))
        pubs["chunk"].publish(sign_message(wrong_policy, _stamped(client, _forged_chunk("forged-1", 10_000 + seq))))
        time.sleep(0.05)
    time.sleep(1.0)
    states = client.messages["/franka/state"][states_before:]
    assert states and all(s.task_id != "forged-1" for s in states), "the controller adopted the forged task"
    assert all(s.mode not in (RobotState.MODE_HOMING, RobotState.MODE_EXECUTING) for s in states)
    policy_chunks = [m for m in client.messages["/vla/action_chunk"][chunks_before:] if m.model_id != "attacker"]
    assert not policy_chunks, "the policy started inferring for the forged task"
    assert np.linalg.norm(_tcp(client) - p0) < HOLD_TOL_M, f"the measured TCP moved: {p0} -> {_tcp(client)}"
    # (task status is keep-last-1: of two published back to back the controller may see only the second)
    _wait_counts(client, {STATUS + "unsigned": 1, STATUS + "bad_tag": 10, CHUNK + "unsigned": 10,
                          CHUNK + "bad_tag": 10})


def test_running_task_survives_forged_replayed_and_altered_messages(graph):
    b, client, pubs = graph
    client.call(Trigger, "/vla/stop", Trigger.Request())  # (a rerun finds its task still running)
    res = client.call(ExecuteTask, "/vla/execute_task",
                      ExecuteTask.Request(instruction="pick up the red cube", timeout_s=120.0))
    assert res.accepted, res.message
    client.wait_for(lambda: (s := _latest(client, "/franka/state")) is not None and s.task_id == res.task_id
                    and s.steps_executed > 5, 90, "the arm executing the policy's chunks")
    bowl0 = _bowl_xy(client)
    d0 = _controller_diag(client)
    real = [m for m in client.messages["/vla/action_chunk"] if m.task_id == res.task_id and m.model_id != "attacker"]
    assert real and real[-1].auth.tag, "the policy's chunks are signed"
    deadline = time.monotonic() + 3.0
    seq = 2**63
    while time.monotonic() < deadline:
        latest = [m for m in client.messages["/vla/action_chunk"] if m.task_id == res.task_id
                  and m.model_id != "attacker"][-1]
        altered = copy.deepcopy(latest)
        altered.data = array.array("f", (np.frombuffer(latest.data, np.float32) + 0.05).tobytes())
        pubs["chunk"].publish(altered)  # a real chunk with its actions changed
        bigger = copy.deepcopy(latest)
        bigger.sequence = seq
        pubs["chunk"].publish(bigger)  # a real chunk with a huge sequence
        pubs["chunk"].publish(_stamped(client, _forged_chunk(res.task_id, seq, (0.5, -0.5, -0.5))))  # unsigned
        time.sleep(0.01)
        pubs["chunk"].publish(copy.deepcopy(latest))  # an exact replay of a real signed chunk (last: the reader
        seq += 1                                      # queue keeps the newest when the controller lags)
        pubs["status"].publish(_stamped(client, TaskStatus(task_id=res.task_id, state=TaskStatus.FAILED,
                                                           message="forged")))
        time.sleep(0.05)
    # the real policy is not locked out: the controller accepts its chunks after the attack (only its are sent now)
    n_diag = len(client.messages["/diagnostics"])
    client.wait_for(lambda: len(client.messages["/diagnostics"]) > n_diag + 8, 60, "fresh diagnostics")
    accepted0 = int(_controller_diag(client)["chunks_accepted"])
    st0 = _latest(client, "/franka/state")
    client.wait_for(lambda: int(_controller_diag(client)["chunks_accepted"]) >= accepted0 + 3
                    and _latest(client, "/franka/state").steps_executed > st0.steps_executed + 5, 60,
                    f"the real policy's chunks to be accepted and executed after the attack "
                    f"(accepted {accepted0} -> {_controller_diag(client).get('chunks_accepted')})")
    assert _latest(client, "/franka/state").task_id == res.task_id, "the controller dropped the running task"
    assert client.latest_status().task_id == res.task_id and client.latest_status().state == TaskStatus.RUNNING
    assert np.allclose(_bowl_xy(client), bowl0, atol=1e-6), "the sim re-placed the layout under the arm"
    # (messages published back to back may replace each other in the controller's reader queue: counts are lower
    # bounds of what was sent)
    d = _wait_counts(client, {CHUNK + "replayed": int(d0.get(CHUNK + "replayed", 0)) + 2,
                              CHUNK + "bad_tag": int(d0.get(CHUNK + "bad_tag", 0)) + 10,
                              CHUNK + "unsigned": int(d0.get(CHUNK + "unsigned", 0)) + 5,
                              STATUS + "unsigned": int(d0.get(STATUS + "unsigned", 0)) + 1})
    assert int(d["auth_accepted.vla_jepa_interfaces/ActionChunk"]) > 0
    client.running_task = res.task_id  # the e-stop test interrupts this task


def test_estop_release_needs_the_key_and_never_resumes_the_task(graph):
    b, client, pubs = graph
    task_id = getattr(client, "running_task", None)
    if task_id is None or client.latest_status().state != TaskStatus.RUNNING:
        res = client.call(ExecuteTask, "/vla/execute_task",
                          ExecuteTask.Request(instruction="pick up the red cube", timeout_s=120.0))
        assert res.accepted, res.message
        task_id = res.task_id
    client.wait_for(lambda: _latest(client, "/franka/state").task_id == task_id
                    and _latest(client, "/franka/state").mode == RobotState.MODE_EXECUTING, 90, "the arm executing")
    pubs["estop"].publish(Bool(data=True))  # anyone may engage
    client.wait_for(lambda: _latest(client, "/franka/state").mode == RobotState.MODE_ESTOP, 5, "e-stop mode")
    time.sleep(1.0)  # the arm comes to rest
    p0 = _tcp(client)
    d0 = _controller_diag(client)
    wrong = Signer(generate_key(), "operator")
    for _ in range(5):
        pubs["estop"].publish(Bool(data=False))
        pubs["release"].publish(_stamped(client, EStopRelease(released_by="attacker")))
        pubs["release"].publish(sign_message(wrong, _stamped(client, EStopRelease(released_by="attacker"))))
        time.sleep(0.2)
    time.sleep(1.0)
    assert _latest(client, "/franka/state").mode == RobotState.MODE_ESTOP, "a foreign release released the e-stop"
    assert np.linalg.norm(_tcp(client) - p0) < HOLD_TOL_M, f"the arm moved: {p0} -> {_tcp(client)}"
    _wait_counts(client, {"estop_release_refused.bool_false": int(d0.get("estop_release_refused.bool_false", 0)) + 5,
                          RELEASE + "unsigned": int(d0.get(RELEASE + "unsigned", 0)) + 5,
                          RELEASE + "bad_tag": int(d0.get(RELEASE + "bad_tag", 0)) + 5})
    # the operator's signed release: the e-stop is released, the interrupted task ends and never moves the arm
    assert publish_estop_release(load_key(b.auth_key_file), "test operator", "attack test")
    final = client.wait_status(task_id, TaskStatus.ABORTED, timeout_s=15)
    assert "e-stop" in final.message, final.message
    p1 = _tcp(client)
    time.sleep(2.0)
    assert _latest(client, "/franka/state").mode != RobotState.MODE_ESTOP
    assert np.linalg.norm(_tcp(client) - p1) < HOLD_TOL_M, f"the arm moved after the release: {p1} -> {_tcp(client)}"
    _wait_counts(client, {"auth_accepted.vla_jepa_interfaces/EStopRelease": 1})

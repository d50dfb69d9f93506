"""task_manager in its own process, driven over real DDS from this test process."""
import time

import pytest
from std_msgs.msg import String
from std_srvs.srv import SetBool, Trigger

from vla_jepa_interfaces.action import RunTask
from vla_jepa_interfaces.msg import RobotState, TaskStatus
from vla_jepa_interfaces.srv import ExecuteTask
from vla_jepa_ros.bringup import Bringup

from .rosutil import RosClient

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def graph(tmp_path_factory):
    with Bringup("task_manager_only", log_dir=tmp_path_factory.mktemp("logs"),
                 extra_params={"task_manager": {"status_rate_hz": 10.0, "default_timeout_s": 30.0}}) as b:
        client = RosClient()
        client.call(Trigger, "/vla/stop", Trigger.Request(), timeout_s=15)  # waits for the node
        yield b, client
        client.close()
        b.check()  # the node survived everything the tests threw at it


def execute(client, instruction, timeout_s=0.0, record=False):
    return client.call(ExecuteTask, "/vla/execute_task",
                       ExecuteTask.Request(instruction=instruction, timeout_s=timeout_s, record=record))


def stop(client):
    return client.call(Trigger, "/vla/stop", Trigger.Request())


def test_accept_refuse_second_stop(graph):
    _, client = graph
    first = execute(client, "pick up the red cube", record=True)
    assert first.accepted, first.message
    status = client.wait_status(first.task_id, TaskStatus.RUNNING)
    assert status.instruction == "pick up the red cube" and status.record
    second = execute(client, "pick up the blue cube")
    assert not second.accepted and first.task_id in second.message and "pick up the red cube" in second.message
    res = stop(client)
    assert res.success
    client.wait_status(first.task_id, TaskStatus.CANCELED)
    assert not stop(client).success  # nothing left to stop


@pytest.mark.parametrize("instruction, reason", [
    ("", "empty"), ("   ", "empty"), ("x" * 10_000, "limit is 512"), ("pick\x07up", "non-printable")])
def test_bad_instructions_refused(graph, instruction, reason):
    _, client = graph
    res = execute(client, instruction)
    assert not res.accepted and reason in res.message and res.task_id == ""


def test_timeout_ends_task_failed(graph):
    _, client = graph
    res = execute(client, "wave", timeout_s=0.5)
    assert res.accepted
    status = client.wait_status(res.task_id, TaskStatus.FAILED, timeout_s=5)
    assert "timed out" in status.message


def test_finish_task_and_reinstruct(graph):
    _, client = graph
    res = execute(client, "put the red cube in the bowl")
    client.wait_status(res.task_id, TaskStatus.RUNNING)
    pub = client.node.create_publisher(String, "/vla/instruction", 10)
    client.wait_for(lambda: pub.get_subscription_count() > 0, 5, "task_manager subscribing /vla/instruction")
    pub.publish(String(data="put the blue cube in the bowl"))
    client.wait_for(lambda: client.latest_status().instruction == "put the blue cube in the bowl", 5, "re-instruction")
    done = client.call(SetBool, "/vla/finish_task", SetBool.Request(data=True))
    assert done.success
    client.wait_status(res.task_id, TaskStatus.SUCCEEDED)
    res2 = execute(client, "again")
    client.call(SetBool, "/vla/finish_task", SetBool.Request(data=False))
    client.wait_status(res2.task_id, TaskStatus.FAILED)


def test_robot_fault_of_the_running_task_aborts_it(graph):
    _, client = graph
    pub = client.node.create_publisher(RobotState, "/franka/state", 10)
    client.wait_for(lambda: pub.get_subscription_count() > 0, 5, "task_manager subscribing /franka/state")
    res = execute(client, "pick up the red cube", timeout_s=20.0)
    client.wait_status(res.task_id, TaskStatus.RUNNING)
    # a fault reported for another task (the previous one, before the controller switched) is not this task's
    for mode, task_id in ((RobotState.MODE_FAULT, "task-9999"), (RobotState.MODE_HOLDING, res.task_id)):
        pub.publish(RobotState(mode=mode, task_id=task_id, error="old reflex"))
    time.sleep(0.5)
    assert client.latest_status().task_id == res.task_id and client.latest_status().state == TaskStatus.RUNNING
    for _ in range(5):  # a fault repeats at the state rate; the task ends once
        pub.publish(RobotState(mode=RobotState.MODE_FAULT, task_id=res.task_id, error="homing did not reach home"))
    status = client.wait_status(res.task_id, TaskStatus.ABORTED, timeout_s=5)
    assert status.message == "robot fault: homing did not reach home"
    next_task = execute(client, "pick up the blue cube")  # the machine takes the next task as usual
    assert next_task.accepted, next_task.message
    stop(client)


def test_status_is_transient_local_for_late_joiners(graph):
    _, client = graph
    res = execute(client, "late joiner check")
    client.wait_status(res.task_id, TaskStatus.RUNNING)
    late = RosClient("late_joiner")
    try:
        late.wait_for(lambda: late.latest_status() is not None, 5, "a status for a late subscriber")
        assert late.latest_status().task_id == res.task_id
    finally:
        late.close()
        stop(client)


def test_action_goal_feedback_cancel_and_refusal(graph):
    _, client = graph
    action = client.action_client(RunTask, "/vla/run_task")
    assert action.wait_for_server(timeout_sec=5)
    feedback = []
    goal_future = action.send_goal_async(RunTask.Goal(instruction="stack the cubes", timeout_s=20.0),
                                         feedback_callback=lambda fb: feedback.append(fb.feedback))
    client.wait_for(goal_future.done, 5, "goal response")
    handle = goal_future.result()
    assert handle.accepted
    client.wait_for(lambda: len(feedback) >= 2, 5, "feedback")
    assert feedback[-1].state == TaskStatus.RUNNING and feedback[-1].task_id
    # a second goal (or service request) while the first runs is refused
    busy = action.send_goal_async(RunTask.Goal(instruction="another"))
    client.wait_for(busy.done, 5, "second goal response")
    assert not busy.result().accepted
    assert not execute(client, "another").accepted
    cancel = handle.cancel_goal_async()
    client.wait_for(cancel.done, 5, "cancel response")
    result_future = handle.get_result_async()
    client.wait_for(result_future.done, 5, "result")
    result = result_future.result().result
    assert result.outcome == TaskStatus.CANCELED and result.task_id == feedback[-1].task_id
    client.wait_status(result.task_id, TaskStatus.CANCELED)


def test_action_result_on_timeout(graph):
    _, client = graph
    action = client.action_client(RunTask, "/vla/run_task")
    assert action.wait_for_server(timeout_sec=5)
    t0 = time.monotonic()
    goal_future = action.send_goal_async(RunTask.Goal(instruction="wait", timeout_s=0.6))
    client.wait_for(goal_future.done, 5, "goal response")
    result_future = goal_future.result().get_result_async()
    client.wait_for(result_future.done, 5, "result")
    assert result_future.result().result.outcome == TaskStatus.FAILED
    assert time.monotonic() - t0 < 4

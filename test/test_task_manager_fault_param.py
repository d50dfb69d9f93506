"""task_manager with abort_on_robot_fault: false (its own process; test_task_manager_graph covers the default)."""
import time

import pytest
from std_srvs.srv import Trigger

from vla_jepa_interfaces.msg import RobotState, TaskStatus
from vla_jepa_interfaces.srv import ExecuteTask
from vla_jepa_ros.bringup import Bringup

from .rosutil import RosClient

pytestmark = pytest.mark.slow


def test_with_abort_on_robot_fault_false_a_fault_leaves_the_task_running(tmp_path):
    with Bringup("task_manager_only", log_dir=tmp_path,
                 extra_params={"task_manager": {"status_rate_hz": 10.0, "abort_on_robot_fault": False}}) as graph:
        client = RosClient()
        try:
            client.call(Trigger, "/vla/stop", Trigger.Request(), timeout_s=15)  # waits for the node
            res = client.call(ExecuteTask, "/vla/execute_task",
                              ExecuteTask.Request(instruction="pick up the red cube", timeout_s=20.0))
            client.wait_status(res.task_id, TaskStatus.RUNNING)
            pub = client.node.create_publisher(RobotState, "/franka/state", 10)
            for _ in range(5):
                pub.publish(RobotState(mode=RobotState.MODE_FAULT, task_id=res.task_id, error="reflex"))
                time.sleep(0.1)
            time.sleep(0.5)
            status = client.latest_status()
            assert status.task_id == res.task_id and status.state == TaskStatus.RUNNING, status.message
            assert pub.get_subscription_count() == 0  # it does not even listen
            client.call(Trigger, "/vla/stop", Trigger.Request())
        finally:
            client.close()
        graph.check()

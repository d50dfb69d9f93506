"""The custom interfaces import and round-trip through rclpy serialization (the CDR bytes on the wire)."""
import numpy as np
from rclpy.serialization import deserialize_message, serialize_message

from vla_jepa_interfaces.action import RunTask
from vla_jepa_interfaces.msg import ActionChunk, ObjectPoses, RobotState, TaskStatus
from vla_jepa_interfaces.srv import ExecuteTask
from vla_jepa_ros.core.types import ActionChunk as CoreChunk
from vla_jepa_ros.core.types import TaskState
from vla_jepa_ros.ros.conversions import chunk_to_msg, msg_to_chunk


def test_task_state_constants_match_core_enum():
    for state in TaskState:
        assert getattr(TaskStatus, state.name) == state.value


def test_action_chunk_round_trip_through_cdr():
    actions = np.arange(49, dtype=np.float32).reshape(7, 7) / 10
    core = CoreChunk(actions=actions, step_period_s=0.1, stamp_s=12.345678, task_id="task-0007", sequence=42,
                     inference_ms=31.5, model_id="tiny-abc")
    wire = serialize_message(chunk_to_msg(core))
    back = msg_to_chunk(deserialize_message(wire, ActionChunk))
    np.testing.assert_array_equal(back.actions, actions)
    assert (back.task_id, back.sequence, back.model_id, back.dim_names) == ("task-0007", 42, "tiny-abc", core.dim_names)
    assert abs(back.stamp_s - 12.345678) < 1e-9 and back.step_period_s == 0.1


def test_other_messages_round_trip():
    status = TaskStatus(task_id="t", instruction="pick", state=TaskStatus.RUNNING, steps=3, elapsed_s=1.5, record=True)
    assert deserialize_message(serialize_message(status), TaskStatus) == status
    state = RobotState(mode=RobotState.MODE_HOLDING, gripper_width_m=0.08, error="none")
    state.ee_position_m = [0.4, 0.0, 0.3]
    assert deserialize_message(serialize_message(state), RobotState) == state
    poses = ObjectPoses(names=["red_cube"])
    poses.poses.append(_pose())
    assert deserialize_message(serialize_message(poses), ObjectPoses).names == ["red_cube"]
    req = ExecuteTask.Request(instruction="pick", timeout_s=5.0, record=True)
    assert deserialize_message(serialize_message(req), ExecuteTask.Request) == req
    goal = RunTask.Goal(instruction="pick", timeout_s=3.0)
    assert deserialize_message(serialize_message(goal), RunTask.Goal) == goal


def _pose():
    from geometry_msgs.msg import Pose

    return Pose()


def test_chunk_with_wrong_size_is_refused():
    msg = ActionChunk(horizon=7, action_dim=7)
    msg.data = [0.0] * 48
    try:
        msg_to_chunk(msg)
    except ValueError as exc:
        assert "48" in str(exc) and "49" in str(exc)
    else:
        raise AssertionError("a 48-value chunk for 7x7 was accepted")

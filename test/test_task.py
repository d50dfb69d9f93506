"""The task state machine (pure): one task at a time, validation, timeouts, finish, re-instruct."""
import math

import pytest

from vla_jepa_ros.core.task import Liveness, TaskConfig, TaskMachine, lost_message, validate_instruction
from vla_jepa_ros.core.types import TaskState


def test_accepts_then_refuses_second_task_naming_the_running_one():
    m = TaskMachine(TaskConfig(default_timeout_s=10.0))
    first = m.start("  pick up the red cube ", 0.0, True, now_s=100.0)
    assert first.accepted and first.task_id
    s = m.status(103.5)
    assert s.state == TaskState.RUNNING and s.instruction == "pick up the red cube"
    assert s.elapsed_s == pytest.approx(3.5) and s.timeout_s == 10.0 and s.record
    second = m.start("put the blue cube in the bowl", 0.0, False, now_s=104.0)
    assert not second.accepted
    assert first.task_id in second.message and "pick up the red cube" in second.message


def test_timeout_fails_the_task_and_frees_the_machine():
    m = TaskMachine()
    d = m.start("go", 2.0, False, now_s=0.0)
    assert not m.tick(1.9)
    assert m.tick(2.0)
    s = m.status(5.0)
    assert s.state == TaskState.FAILED and "timed out after 2 s" in s.message and s.elapsed_s == pytest.approx(2.0)
    assert s.task_id == d.task_id
    assert m.start("again", 0.0, False, now_s=6.0).accepted


@pytest.mark.parametrize("state", [TaskState.SUCCEEDED, TaskState.FAILED, TaskState.CANCELED, TaskState.ABORTED])
def test_finish_in_each_terminal_state(state):
    m = TaskMachine()
    m.start("go", 0, False, 0.0)
    assert m.finish(state, "why", 1.0).accepted
    assert m.status(2.0).state == state
    assert not m.finish(TaskState.SUCCEEDED, "again", 3.0).accepted  # nothing running any more


def test_finish_rejects_non_terminal_state():
    m = TaskMachine()
    m.start("go", 0, False, 0.0)
    with pytest.raises(ValueError, match="RUNNING"):
        m.finish(TaskState.RUNNING, "no", 1.0)


def test_reinstruct_only_while_running_and_validated():
    m = TaskMachine()
    assert not m.reinstruct("new").accepted
    m.start("old", 0, False, 0.0)
    assert m.reinstruct("put it in the bowl").accepted
    assert m.status(1.0).instruction == "put it in the bowl"
    assert not m.reinstruct("   ").accepted
    assert m.status(1.0).instruction == "put it in the bowl"


def test_steps_count_only_while_running():
    m = TaskMachine()
    m.add_steps(3)
    m.start("go", 0, False, 0.0)
    m.add_steps(2)
    m.add_steps(1)
    assert m.status(0.0).steps == 3


@pytest.mark.parametrize("text, reason", [
    ("", "empty"),
    ("   \t\n ", "empty"),
    ("x" * 10_000, "10000 characters; the limit is 512"),
    ("pick\x00up", "non-printable"),
    ("pick up\x1b[31m", "non-printable"),
    ("line\nbreak", "non-printable"),
])
def test_bad_instructions_refused_with_reason(text, reason):
    m = TaskMachine()
    d = m.start(text, 0, False, 0.0)
    assert not d.accepted and reason in d.message
    assert m.status(0.0).state == TaskState.IDLE


def test_unicode_instruction_is_fine():
    assert validate_instruction("mets le cube rouge dans le bol — vite")[1] is None


@pytest.mark.parametrize("timeout_s", [-1.0, math.nan, 1e9])
def test_bad_timeouts_refused(timeout_s):
    d = TaskMachine(TaskConfig(max_timeout_s=100.0)).start("go", timeout_s, False, 0.0)
    assert not d.accepted and "timeout_s" in d.message


def test_config_validation_names_values():
    with pytest.raises(ValueError, match="default_timeout_s=0"):
        TaskConfig(default_timeout_s=0)
    with pytest.raises(ValueError, match="max_instruction_chars=0"):
        TaskConfig(max_instruction_chars=0)


def test_liveness_loses_a_silent_node_and_only_watched_heard_ones():
    live = Liveness(("sim", "policy", "franka_controller"), timeout_s=1.0, startup_s=3.0)
    for t in range(0, 41):  # 4 s of beats at 10 Hz from sim and policy; the controller never beats
        live.beat("sim", t / 10)
        live.beat("policy", t / 10)
        live.beat("recorder", t / 10)  # not watched
    assert live.lost(4.9) == {}  # 0.9 s silent
    lost = live.lost(5.25)
    assert list(lost) == ["sim", "policy"] and lost["sim"] == pytest.approx(1.25)
    assert lost_message(lost) == "nodes 'sim', 'policy' lost: no heartbeat for 1.2 s (wall clock)"
    live.beat("sim", 5.3)  # back
    assert list(live.lost(5.3)) == ["policy"]
    assert lost_message({"policy": 1.04}) == "node 'policy' lost: no heartbeat for 1.0 s (wall clock)"


def test_liveness_allows_a_starting_node_a_longer_silence():
    live = Liveness(("sim",), timeout_s=1.0, startup_s=3.0)
    live.beat("sim", 10.0)  # heard once, then busy warming up
    assert live.lost(12.5) == {}
    assert live.lost(13.1) == {"sim": pytest.approx(3.1)}
    with pytest.raises(ValueError, match="timeout_s=0"):
        Liveness(("sim",), timeout_s=0)

"""The safety envelope, watchdog, e-stop and gripper against franky-sim's MuJoCo FR3, driven by real franky
over the libfranka protocol. franky-sim simulates no reflexes or limits, so every bound checked here is
enforced by our own code and verified on the *simulated* end-effector pose.

libfranka raises the thread that constructs a franky.Robot to SCHED_FIFO 99 whenever it may (always as root),
even with RealtimeConfig.Ignore, so this test process runs realtime threads after the module; node processes
reset their policy at start (run_node), so graphs started afterwards are unaffected (test_bringup checks it).
"""
import time

import numpy as np
import pytest

from vla_jepa_ros.core.chunk_executor import ChunkExecutor, ExecutorConfig, Mode, Verdict
from vla_jepa_ros.core.safety import SafetyConfig, SafetyEnvelope
from vla_jepa_ros.core.types import ActionChunk
from vla_jepa_ros.robot.arm import ArmNotConnectedError
from vla_jepa_ros.robot.controller import FR3_HOME_Q_RAD, ArmController, ControllerConfig
from vla_jepa_ros.robot.franky_arm import FrankyArm, FrankyArmConfig
from .hosts import loopback

pytestmark = pytest.mark.slow

HOST = loopback(22)  # a loopback address of its own: franky-sim binds ports 1337/1338 on it
POSITION_TOL_M = 0.004  # the simulated arm settles within a few mm of a target (no feed-forward in franky-sim)
HOLD_TOL_M = 0.002
# Tight box around the home pose (TCP at about x 0.554, y 0, z 0.521) so that every face is reached quickly.
SAFETY = SafetyConfig(workspace_min_m=(0.45, -0.12, 0.0), workspace_max_m=(0.62, 0.12, 0.6), table_height_m=0.44,
                      min_height_above_table_m=0.01, max_step_m=0.03, max_step_rad=0.2, max_speed_m_s=0.25,
                      max_angular_speed_rad_s=1.5, max_lead_m=0.05)


@pytest.fixture(scope="module")
def world():
    from vla_jepa_ros.sim.world import SimWorld, SimWorldConfig

    with SimWorld(SimWorldConfig(robot_host=HOST, cameras=(), realtime_factor=1.0)) as w:
        yield w


@pytest.fixture(scope="module")
def arm(world):
    a = FrankyArm(FrankyArmConfig(robot_host=HOST, realtime_config="ignore", relative_dynamics_factor=0.2))
    a.connect()
    yield a
    a.close()


class Rig:
    """Controller + helpers; time is simulation time."""

    def __init__(self, world, arm, executor=ExecutorConfig(chunk_timeout_s=1.0, max_chunk_age_s=0.5),
                 controller=ControllerConfig(dry_run=False, home_on_task_start=True)):
        self.world, self.arm = world, arm
        self.ctrl = ArmController(arm, ChunkExecutor(executor), SafetyEnvelope(SAFETY), controller)
        self.seq = 0
        self.ctrl.set_task("", world.time_s)
        self.ctrl.set_task(f"t{id(self)}", world.time_s)  # starts homing; ticks carry it out
        self.task = self.ctrl.executor.task_id
        self.home()
        self.run(0.3)

    def home(self):
        self.ctrl.finish_homing(lambda: self.world.time_s)
        assert not self.ctrl.report.fault, self.ctrl.report.error

    def chunk(self, delta, horizon=7, gripper=1.0, period=0.1):
        self.seq += 1
        a = np.zeros((horizon, 7), np.float32)
        a[:, :6] = delta
        a[:, 6] = gripper
        return ActionChunk(actions=a, step_period_s=period, stamp_s=self.world.time_s, task_id=self.task,
                           sequence=self.seq)

    def submit(self, chunk):
        return self.ctrl.submit(chunk, self.world.time_s)

    def run(self, sim_s, every_s=None, make=None, on_tick=None):
        """Tick the controller for sim_s; submit make() every every_s of sim time."""
        t0 = self.world.time_s
        next_submit = t0
        while self.world.time_s - t0 < sim_s:
            now = self.world.time_s
            if make is not None and now >= next_submit:
                self.submit(make())
                next_submit = now + every_s
            self.ctrl.tick(now)
            if on_tick:
                on_tick(now)
            time.sleep(0.003)

    def pos(self):
        return self.arm.state().position_m


def test_not_connected_raises():
    with pytest.raises(ArmNotConnectedError, match="not connected"):
        FrankyArm(FrankyArmConfig(robot_host=HOST, realtime_config="ignore")).state()


@pytest.mark.parametrize("axis, sign, bound", [(0, 1, 0.62), (1, -1, -0.12), (1, 1, 0.12)])
def test_chunks_leaving_the_box_stop_at_its_face(world, arm, axis, sign, bound):
    rig = Rig(world, arm)
    delta = np.zeros(6)
    delta[axis] = sign * 0.03
    rig.run(2.5, every_s=0.2, make=lambda: rig.chunk(delta))  # asks for ~0.5 m, the box allows < 0.15 m
    rig.run(0.5)
    p = rig.pos()
    assert sign * (p[axis] - bound) <= POSITION_TOL_M, f"{'xyz'[axis]}={p[axis]:.4f} beyond the face {bound}"
    assert abs(p[axis] - bound) <= POSITION_TOL_M, f"arm should reach the face {bound}, is at {p[axis]:.4f}"
    assert "workspace" in rig.ctrl.report.last_clip_reason and rig.ctrl.report.steps_clipped > 0


def test_chunks_going_below_the_table_stop_at_the_floor(world, arm):
    rig = Rig(world, arm)
    rig.run(2.0, every_s=0.2, make=lambda: rig.chunk([0, 0, -0.03, 0, 0, 0]))
    rig.run(0.5)
    z = rig.pos()[2]
    floor = SAFETY.floor_z_m
    assert z >= floor - POSITION_TOL_M and z <= floor + POSITION_TOL_M, f"z={z:.4f}, floor {floor}"
    assert "below table floor" in rig.ctrl.report.last_clip_reason


def test_oversized_step_is_clipped(world, arm):
    rig = Rig(world, arm)
    p0 = rig.pos()
    rig.submit(rig.chunk([0, 0.2, 0, 0, 0, 0], horizon=1))  # 20 cm in one 0.1 s step
    rig.run(0.8)
    moved = np.linalg.norm(rig.pos() - p0)
    limit = min(SAFETY.max_step_m, SAFETY.max_speed_m_s * 0.1)
    assert moved <= limit + POSITION_TOL_M, f"moved {moved:.4f} m, limit {limit} m"
    assert moved >= limit - POSITION_TOL_M  # it did move, by the clipped step
    assert "translation step 0.2000 m" in rig.ctrl.report.last_clip_reason


def test_nan_chunk_rejected_and_arm_still(world, arm):
    rig = Rig(world, arm)
    p0 = rig.pos()
    bad = rig.chunk([0.01, np.nan, 0, 0, 0, 0])
    result = rig.submit(bad)
    assert result.verdict is Verdict.REJECTED and "non-finite" in result.reason
    rig.run(0.5)
    assert np.linalg.norm(rig.pos() - p0) < HOLD_TOL_M


def test_watchdog_holds_when_chunks_stop(world, arm):
    rig = Rig(world, arm, ExecutorConfig(chunk_timeout_s=0.35, max_chunk_age_s=0.5))
    p0 = rig.pos()
    rig.submit(rig.chunk([0, -0.01, 0, 0, 0, 0], horizon=30))  # 30 cm over 3 s, but only 0.35 s is fresh
    rig.run(0.8)
    assert rig.ctrl.report.mode is Mode.HOLDING
    p_hold = rig.pos()
    assert 0.02 <= np.linalg.norm(p_hold - p0) <= 0.06, "moved for about the watchdog time, then stopped"
    rig.run(1.0)
    assert np.linalg.norm(rig.pos() - p_hold) < HOLD_TOL_M, "arm drifted while holding"


def test_estop_stops_motion_and_refuses_chunks_until_released(world, arm):
    rig = Rig(world, arm)
    rig.run(0.4, every_s=0.2, make=lambda: rig.chunk([0, 0.02, 0, 0, 0, 0]))
    moving_p = rig.pos()
    rig.ctrl.set_estop(True)
    t_stop = world.time_s
    rig.run(0.3)
    p_stopped = rig.pos()
    assert np.linalg.norm(p_stopped - moving_p) < 0.05, "stopped within the lead of its last target"
    refused = rig.submit(rig.chunk([0, 0.02, 0, 0, 0, 0]))
    assert refused.verdict is Verdict.REJECTED and "e-stop" in refused.reason
    rig.run(0.7, every_s=0.2, make=lambda: rig.chunk([0, 0.02, 0, 0, 0, 0]))
    assert np.linalg.norm(rig.pos() - p_stopped) < HOLD_TOL_M, "moved while the e-stop was engaged"
    assert rig.ctrl.report.mode is Mode.ESTOP and world.time_s - t_stop > 0.9
    rig.ctrl.set_estop(False)
    rig.run(0.6, every_s=0.2, make=lambda: rig.chunk([0, -0.02, 0, 0, 0, 0]))
    assert np.linalg.norm(rig.pos() - p_stopped) > 0.03, "motion resumes after release"


def _traverse(rig, toggle_gripper: bool) -> tuple[float, float]:
    """Move 10 cm in y as fresh chunks; returns (sim seconds to arrive within 5 mm, largest set_gripper ms)."""
    start = rig.pos()
    goal_y = start[1] + 0.10  # inside the box (y max 0.12)
    gripper_ms = [0.0]
    state = {"n": 0}

    def make():
        state["n"] += 1
        g = 1.0 if not toggle_gripper else float(state["n"] % 2)  # alternate close/open every chunk
        remaining = goal_y - rig.pos()[1]
        return rig.chunk([0, np.clip(remaining, -0.015, 0.015), 0, 0, 0, 0], horizon=2, gripper=g)

    orig = rig.arm.set_gripper

    def timed(open_):
        t = time.perf_counter()
        orig(open_)
        gripper_ms.append((time.perf_counter() - t) * 1e3)

    rig.arm.set_gripper = timed
    t0 = rig.world.time_s
    arrived = [None]

    def check(now):
        if arrived[0] is None and abs(rig.pos()[1] - goal_y) < 0.005:
            arrived[0] = now - t0
    try:
        rig.run(3.0, every_s=0.2, make=make, on_tick=check)
    finally:
        rig.arm.set_gripper = orig
    assert arrived[0] is not None, f"did not arrive: y={rig.pos()[1]:.4f}, goal {goal_y:.4f}"
    return arrived[0], max(gripper_ms)


def test_gripper_commands_do_not_stall_the_arm(world, arm):
    plain, _ = _traverse(Rig(world, arm), toggle_gripper=False)
    with_gripper, worst_ms = _traverse(Rig(world, arm), toggle_gripper=True)
    print(f"\n10 cm traverse: {plain:.2f} s sim without gripper commands, {with_gripper:.2f} s with the gripper "
          f"toggling every chunk; slowest set_gripper call {worst_ms:.2f} ms")
    assert worst_ms < 20.0, "set_gripper must return at once (asynchronous)"
    assert with_gripper <= plain * 1.15 + 0.1
    width = arm.state().gripper_width_m
    assert 0.0 <= width <= 0.081


def test_homing_runs_in_ticks_and_the_estop_cancels_it(world, arm):
    rig = Rig(world, arm)
    rig.run(1.2, every_s=0.2, make=lambda: rig.chunk([0.03, 0.0, -0.03, 0, 0, 0]))
    rig.run(0.3)
    away = rig.pos()
    t0 = time.monotonic()
    rig.ctrl.set_task("homing-1", world.time_s)
    assert time.monotonic() - t0 < 0.2, "set_task must not wait for the homing motion"
    rig.task = "homing-1"
    modes = []
    rig.run(0.4, on_tick=lambda now: modes.append(rig.ctrl.report.mode))
    assert rig.ctrl.homing and set(modes) == {Mode.HOMING}
    moved = np.linalg.norm(rig.pos() - away)
    assert moved > 0.005, f"homing should be moving the arm, moved {moved:.4f} m"
    rig.ctrl.set_estop(True)
    rig.run(0.4)  # the stop decelerates
    p_stopped = rig.pos()
    rig.run(0.6)
    assert np.linalg.norm(rig.pos() - p_stopped) < HOLD_TOL_M
    assert not rig.ctrl.homing and rig.ctrl.report.mode is Mode.ESTOP and "e-stop" in rig.ctrl.report.error
    rig.ctrl.set_estop(False)
    rig.ctrl.set_task("homing-2", world.time_s)  # a new task homes all the way; chunks sent meanwhile are dropped
    rig.task = "homing-2"
    assert rig.submit(rig.chunk([0.03, 0.0, 0.0, 0, 0, 0])).verdict is Verdict.ACCEPTED
    rig.home()
    q = arm.state().q_rad
    assert np.abs(q - np.array(FR3_HOME_Q_RAD)).max() < 0.01, f"q={np.round(q, 3).tolist()}"
    assert rig.ctrl.report.mode is Mode.HOLDING and not rig.ctrl.report.fault
    p_home = rig.pos()
    rig.run(0.5)
    # the arm still settles onto home (homing ends within home_tolerance_rad of the joints), but the chunk's 3 cm
    # step must not run
    assert np.linalg.norm(rig.pos() - p_home) < 0.01, "the chunk from before the end of homing must not run"


def test_a_homing_that_times_out_faults_and_the_next_task_starts_without_that_fault(world, arm):
    rig = Rig(world, arm)
    rig.run(1.0, every_s=0.2, make=lambda: rig.chunk([0.03, 0.0, -0.03, 0, 0, 0]))
    rig.run(0.3)
    impatient = ArmController(arm, ChunkExecutor(ExecutorConfig()), SafetyEnvelope(SAFETY),
                              ControllerConfig(dry_run=False, home_on_task_start=True, home_timeout_s=0.05))
    impatient.set_task("far-from-home", world.time_s)
    impatient.finish_homing(lambda: world.time_s)
    assert impatient.report.fault and "home_timeout_s=0.05" in impatient.report.error
    assert impatient.report.mode is Mode.HOLDING
    impatient.set_task("next", world.time_s)  # a fresh attempt: the task manager must not abort it for the old fault
    assert impatient.homing and not impatient.report.fault and impatient.report.error == ""
    impatient.set_task("", world.time_s)
    Rig(world, arm)  # home again for the tests after this one


def test_planner_faults_within_planner_fault_retries_do_not_end_the_task(world, arm):
    """franky's trajectory generator failing mid-task (made to fail here by a NaN target sent to the arm behind
    the envelope's back: "Motion planner failed with error code -100"; under the learned policy it was -101): the
    first fault is cleared and the chunks go on from the measured pose, the one past planner_fault_retries faults
    the task as before."""
    rig = Rig(world, arm, controller=ControllerConfig(dry_run=False, home_on_task_start=True,
                                                      planner_fault_retries=1))
    step = lambda: rig.chunk([-0.005, 0.0, 0.0, 0, 0, 0])  # noqa: E731
    rig.run(0.5, every_s=0.2, make=step)
    fail_the_planner = lambda: (arm.move_to(np.array([0.5, 0.0, np.nan]), np.eye(3)),  # noqa: E731
                                time.sleep(0.2))  # no tick meanwhile: the motion runs and fails before it is replaced
    fail_the_planner()
    rig.run(0.5, every_s=0.2, make=step)
    r = rig.ctrl.report
    assert not r.fault and r.planner_faults_recovered == 1, r.error
    assert "Motion planner failed" in r.last_recovered_error
    before = rig.pos()
    rig.run(0.8, every_s=0.2, make=step)
    assert before[0] - rig.pos()[0] > 0.015, "the chunks must go on after the recovery"
    fail_the_planner()
    faults = []  # what the node publishes at each tick (the task manager ends the task on the first)
    rig.run(0.5, every_s=0.2, make=step, on_tick=lambda now: faults.append(r.error) if r.fault else None)
    assert faults and "Motion planner failed" in faults[0] and r.planner_faults_recovered == 1
    rig.ctrl.set_task("next", world.time_s)  # a new task gets its own retries
    assert r.planner_faults_recovered == 0
    rig.ctrl.set_task("", world.time_s)
    Rig(world, arm)  # home again for the tests after this one


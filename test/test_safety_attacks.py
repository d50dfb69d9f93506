"""ArmController on franky-sim driven the way an attacker or a buggy policy would drive it: chunks at 50 Hz,
chunks declaring long step periods, pushes at every face of the box and the floor, a cancel mid-motion, homing
from a far pose, a motion that leaves the envelope behind the controller's back.

Every check is on the *measured* TCP of the simulated FR3, recorded in the physics thread at every 1 ms step of
simulated time (forward kinematics of the simulated joints, so controller jitter on a loaded machine neither
fakes nor hides speed), and on the controller's protective stop.
"""
import dataclasses
import time

import numpy as np
import pytest

from vla_jepa_ros.core.chunk_executor import ChunkExecutor, ExecutorConfig, Mode, Verdict
from vla_jepa_ros.core.safety import SafetyConfig, SafetyEnvelope
from vla_jepa_ros.core.types import ActionChunk
from vla_jepa_ros.robot.arm import ArmError
from vla_jepa_ros.robot.controller import ArmController, ControllerConfig
from vla_jepa_ros.robot.franky_arm import FrankyArm, FrankyArmConfig
from .hosts import loopback

pytestmark = pytest.mark.slow

HOST = loopback(100)
BOX_TOL_M = 0.005  # the measured TCP may be this far outside the box / above the floor
SPEED_TOL = 1.1  # measured speed may reach this times the limit
SPEED_WINDOW_S = 0.02  # measured speed = displacement over this much simulated time
# A box around the home pose (TCP about x 0.554, y 0, z 0.521) so that every face is reached within a second.
SAFETY = SafetyConfig(workspace_min_m=(0.45, -0.12, 0.0), workspace_max_m=(0.62, 0.12, 0.6), table_height_m=0.44,
                      min_height_above_table_m=0.01, max_step_m=0.03, max_step_rad=0.2, max_speed_m_s=0.25,
                      max_angular_speed_rad_s=1.5, max_lead_m=0.05)
# Loose per-step limits: the speed limit must hold through the elapsed-time limit alone.
LOOSE = dataclasses.replace(SAFETY, workspace_min_m=(0.3, -0.3, 0.0), workspace_max_m=(0.7, 0.3, 0.6), max_step_m=0.2,
                            max_lead_m=0.1)
TCP_OFFSET_M = np.array([0.0, 0.0, 0.1034])  # franky-sim's FR3: TCP along the hand's z axis


class Recorder:
    """Measured TCP positions at every physics step (sim time), from a hook in the physics thread."""

    def __init__(self, world):
        import mujoco

        self.world, self.samples, self.on = world, [], False
        self._data = mujoco.MjData(world.model)
        self._hand = mujoco.mj_name2id(world.model, mujoco.mjtObj.mjOBJ_BODY, "robot0_hand")
        world.add_time_hook(self._hook, 0.001)

    def _hook(self, _t):
        if self.on:
            self.samples.append(self.world.snapshot())

    def start(self):
        self.samples = []
        self.on = True

    def stop(self):
        """(times (N,), TCP positions (N, 3)) since start()."""
        import mujoco

        self.on = False
        t, p = [], []
        for s in self.samples:
            self._data.qpos[:] = s.qpos
            mujoco.mj_kinematics(self.world.model, self._data)
            p.append(self._data.xpos[self._hand] + self._data.xmat[self._hand].reshape(3, 3) @ TCP_OFFSET_M)
            t.append(s.time_s)
        return np.array(t), np.array(p)


def peak_speed(t, p, window_s=SPEED_WINDOW_S):
    """Largest displacement / sim time over windows of window_s (m/s)."""
    k = max(1, int(round(window_s / np.median(np.diff(t)))))
    return float((np.linalg.norm(p[k:] - p[:-k], axis=1) / (t[k:] - t[:-k])).max())


def box_excess(p, cfg=SAFETY):
    """How far (m) the farthest sample lies outside the box / above the floor."""
    lo = np.array(cfg.workspace_min_m)
    lo[2] = cfg.floor_z_m
    return float(max((lo - p).max(), (p - np.array(cfg.workspace_max_m)).max(), 0.0))


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


@pytest.fixture(scope="module")
def recorder(world):
    return Recorder(world)


class Rig:
    """A controller homed for a fresh task; time is simulation time."""

    def __init__(self, world, arm, controller=ControllerConfig(dry_run=False, home_on_task_start=True),
                 safety=SAFETY, home=True):
        self.world, self.arm = world, arm
        self.ctrl = ArmController(arm, ChunkExecutor(ExecutorConfig(chunk_timeout_s=1.0, max_chunk_age_s=0.5)),
                                  SafetyEnvelope(safety), controller)
        self.seq = 0
        self.task = f"t{id(self)}"
        self.ctrl.set_task(self.task, world.time_s)
        if home:
            self.ctrl.finish_homing(lambda: world.time_s)
            assert not self.ctrl.report.fault, self.ctrl.report.error
            self.run(0.2)

    def chunk(self, delta, horizon=7, period=0.1, gripper=1.0):
        self.seq += 1
        a = np.zeros((horizon, 7), np.float32)
        a[:, :6] = delta
        a[:, 6] = gripper
        return ActionChunk(actions=a, step_period_s=period, stamp_s=self.world.time_s, task_id=self.task,
                           sequence=self.seq)

    def run(self, sim_s, every_s=None, make=None):
        t0 = next_submit = self.world.time_s
        while self.world.time_s - t0 < sim_s:
            now = self.world.time_s
            if make is not None and now >= next_submit:
                self.ctrl.submit(make(), now)
                next_submit = now + every_s
            self.ctrl.tick(now)
            time.sleep(0.002)

    def pos(self):
        return self.arm.state().position_m


def test_a_protective_stop_aborts_the_running_task_with_the_reason(tmp_path):
    """The real graph (task manager, sim, controller processes): the box's top lies below the home pose, so once
    homing has brought the arm there the monitor finds it outside; the task ends ABORTED naming the value and the
    limit, /franka/state reports the fault, and the arm holds. Runs first, before this module's own franky-sim."""
    from vla_jepa_interfaces.msg import RobotState, TaskStatus
    from vla_jepa_interfaces.srv import ExecuteTask
    from vla_jepa_ros.bringup import Bringup
    from vla_jepa_ros.ros.qos import RELIABLE_QOS

    from .rosutil import RosClient

    host = loopback(101)
    params = {"sim": {"world": {"robot_host": host, "cameras": ["front"]}},
              "franka_controller": {"arm": {"robot_host": host}, "safety": {"workspace_max_m": [0.8, 0.45, 0.4]}},
              "task_manager": {"status_rate_hz": 10.0}}
    with Bringup("sim", nodes=("task_manager", "sim", "franka_controller"), extra_params=params,
                 log_dir=tmp_path) as graph:
        client = RosClient("safety_attacks_test")
        try:
            states = client.subscribe("/franka/state", RobotState, RELIABLE_QOS)
            client.wait_for(lambda: (states and states[-1].mode != RobotState.MODE_DISCONNECTED) or graph.check(),
                            90, "the controller to connect to franky-sim")
            res = client.call(ExecuteTask, "/vla/execute_task",
                              ExecuteTask.Request(instruction="pick up the red cube", timeout_s=60.0), timeout_s=20)
            assert res.accepted, res.message
            status = client.wait_status(res.task_id, TaskStatus.ABORTED, timeout_s=120)
            assert "robot fault: protective stop: measured TCP z=" in status.message, status.message
            assert "above workspace max 0.4000 m + margin 0.0100 m" in status.message, status.message
            faults = [m for m in states if m.mode == RobotState.MODE_FAULT and m.task_id == res.task_id]
            assert faults and faults[0].error.startswith("protective stop: "), faults[:1]
            graph.check()
        finally:
            client.close()


def test_recorded_tcp_is_the_arm_state_franky_reports(world, arm, recorder):
    Rig(world, arm)
    recorder.start()
    time.sleep(0.05)
    _, p = recorder.stop()
    assert np.linalg.norm(p[-1] - arm.state().position_m) < 0.002


@pytest.mark.parametrize("every_s, period", [(0.02, 0.1), (0.2, 1.0)], ids=["50Hz-chunks", "long-step-period"])
def test_no_chunk_stream_makes_the_arm_faster_than_max_speed(world, arm, recorder, every_s, period):
    """Fresh chunks asking 20 cm per step, replacing each other at 50 Hz (each step 0 runs at once), or declaring
    1 s steps (bigger steps), with loose per-step limits: the measured TCP never exceeds max_speed_m_s, but moves."""
    rig = Rig(world, arm, safety=LOOSE)
    p0 = rig.pos()
    recorder.start()
    rig.run(0.8, every_s=every_s, make=lambda: rig.chunk([0.0, 0.2, 0.0, 0, 0, 0], period=period))
    t, p = recorder.stop()
    v = peak_speed(t, p)
    print(f"\nchunks every {every_s} s declaring {period} s steps: peak measured speed {v:.3f} m/s")
    assert v <= SPEED_TOL * SAFETY.max_speed_m_s, f"measured {v:.3f} m/s > {SPEED_TOL} x {SAFETY.max_speed_m_s}"
    assert np.linalg.norm(rig.pos() - p0) > 0.05
    assert not rig.ctrl.report.protective_stop, rig.ctrl.report.error


def test_fast_rotation_requests_are_held_to_max_angular_speed(world, arm, recorder):
    """Chunks turning 0.2 rad per 20 ms step at 50 Hz: the measured tool turns no faster than the limit and the
    command never runs more than max_lead_rad ahead of it."""
    rig = Rig(world, arm)
    r0 = arm.state().rotation
    angles, leads = [], []

    def turned(r):
        return float(np.arccos(np.clip((np.trace(r @ r0.T) - 1) / 2, -1, 1)))

    t0 = world.time_s
    for _ in range(6):
        rig.run(0.1, every_s=0.02, make=lambda: rig.chunk([0, 0, 0, 0, 0, 0.2], period=0.02))
        r = arm.state().rotation
        angles.append((world.time_s - t0, turned(r)))
        if rig.ctrl._cmd_r is not None:
            leads.append(float(np.arccos(np.clip((np.trace(rig.ctrl._cmd_r @ r.T) - 1) / 2, -1, 1))))
    (ta, a), (tb, b) = angles[0], angles[-1]
    assert (b - a) / (tb - ta) <= SPEED_TOL * SAFETY.max_angular_speed_rad_s
    assert b > 0.1, "the tool must turn"
    assert max(leads) <= SAFETY.max_lead_rad + 0.03, f"command {max(leads):.3f} rad ahead of the arm"
    assert not rig.ctrl.report.protective_stop, rig.ctrl.report.error


@pytest.mark.parametrize("delta", [[0.03, 0, 0], [-0.03, 0, 0], [0, 0.03, 0], [0, -0.03, 0], [0, 0, -0.03]],
                         ids=["+x", "-x", "+y", "-y", "floor"])
def test_pushes_at_every_face_stay_inside_the_box(world, arm, recorder, delta):
    rig = Rig(world, arm)
    recorder.start()
    rig.run(1.2, every_s=0.02, make=lambda: rig.chunk([*delta, 0, 0, 0], period=0.02))
    rig.run(0.3)
    t, p = recorder.stop()
    print(f"\npush {delta}: {box_excess(p) * 1e3:.1f} mm outside the box at most, peak {peak_speed(t, p):.3f} m/s")
    assert box_excess(p) <= BOX_TOL_M, f"measured TCP {box_excess(p) * 1e3:.1f} mm outside the box"
    assert peak_speed(t, p) <= SPEED_TOL * SAFETY.max_speed_m_s
    assert not rig.ctrl.report.protective_stop, rig.ctrl.report.error


def test_a_cancel_mid_motion_halts_the_arm(world, arm, recorder):
    """A 50 Hz stream of chunks declaring 1 s steps, then the task is cancelled: the arm stops within franky-sim's
    tracking lag at the speed limit (2-3 cm) instead of running on to targets up to max_lead_m ahead."""
    rig = Rig(world, arm, safety=LOOSE)
    rig.run(0.5, every_s=0.02, make=lambda: rig.chunk([0.0, -0.2, 0.0, 0, 0, 0], period=1.0))
    rig.ctrl.set_task("", world.time_s)  # the task manager cancelled the task
    at_cancel = rig.pos()
    recorder.start()
    rig.run(1.0)
    _, p = recorder.stop()
    drift = float(np.linalg.norm(p - at_cancel, axis=1).max())
    print(f"\ndrift after the cancel: {drift * 1e3:.1f} mm")
    assert drift < 0.035, f"the arm went on {drift * 1e3:.0f} mm after the cancel"
    assert np.linalg.norm(p[-1] - p[-200]) < 0.001, "still moving 0.8 s after the cancel"


def test_homing_from_a_far_pose_obeys_the_speed_limit(world, arm, recorder):
    far = np.array([0.9, 0.3, 0.3, -1.9, -0.3, 2.0, 1.2])  # TCP about 0.65 m from home
    try:
        arm.poll()
    except ArmError:  # the last test's motion was preempted
        arm.recover()
    arm.start_joint_motion(far)
    while arm.poll():
        time.sleep(0.01)
    recorder.start()
    Rig(world, arm, safety=dataclasses.replace(SAFETY, workspace_min_m=(0.2, -0.45, 0.0),
                                                     workspace_max_m=(0.8, 0.45, 0.65)))
    t, p = recorder.stop()
    v = peak_speed(t, p)
    print(f"\nhoming {np.linalg.norm(p[0] - p[-1]):.3f} m: peak measured speed {v:.3f} m/s")
    assert v <= SPEED_TOL * SAFETY.max_speed_m_s, f"homing moved the TCP at {v:.3f} m/s"
    assert np.linalg.norm(p[0] - p[-1]) > 0.5, "the test must start far from home"


def test_motion_behind_the_controllers_back_is_a_latched_protective_stop(world, arm, recorder):
    """Something moves the arm out of the box (here a target sent to the arm directly, as a fault in franky or
    a stale motion would): the monitor stops the arm at once, faults with the value and the limit, refuses
    chunks; a new task homes the arm and clears it."""
    rig = Rig(world, arm)
    p = rig.pos()
    arm.move_to(p + [0.0, 0.0, -0.25], arm.state().rotation)  # 20 cm below the floor of this box
    recorder.start()
    rig.run(1.0)
    t, samples = recorder.stop()
    r = rig.ctrl.report
    assert r.protective_stop and r.fault and r.error.startswith("protective stop: measured TCP")
    assert "below table floor 0.4500 m - margin 0.0100 m" in r.error, r.error
    trip_z = SAFETY.floor_z_m - SAFETY.monitor_margin_m
    assert trip_z - samples[:, 2].min() < 0.03, "stopped within the tracking lag of the breach"
    assert rig.ctrl.submit(rig.chunk([0.0, 0.0, 0.01, 0, 0, 0]), world.time_s).verdict is Verdict.REJECTED
    still = rig.pos()
    rig.run(0.5)
    assert np.linalg.norm(rig.pos() - still) < 0.002, "the arm holds while latched"
    rig.ctrl.set_task("operator-restart", world.time_s)
    rig.ctrl.finish_homing(lambda: world.time_s)
    assert not r.protective_stop and not r.fault and rig.ctrl.report.mode is Mode.HOLDING, r.error

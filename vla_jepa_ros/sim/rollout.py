"""Closed-loop episodes without ROS: SimWorld + FrankyArm (real libfranka protocol into franky-sim) +
ArmController + a policy, paced by simulation time. Used by the benchmark to measure the expert's success
rate quickly; the ROS graph runs the same core objects in separate processes.
"""
from __future__ import annotations

import dataclasses
import time

from ..core.chunk_executor import ChunkExecutor, ExecutorConfig
from ..core.safety import SafetyConfig, SafetyEnvelope
from ..core.types import Observation
from ..robot.controller import ArmController, ControllerConfig
from ..robot.franky_arm import FrankyArm, FrankyArmConfig
from .tasks import SuccessCheck, SuccessConfig, TaskSpec
from .world import SimWorld


@dataclasses.dataclass
class EpisodeResult:
    spec: TaskSpec
    seed: int
    success: bool
    sim_time_s: float
    wall_time_s: float
    chunks: int
    steps_clipped: int
    phases: list[str]


class DirectRollout:
    """Owns one arm connection and controller for many episodes in a running SimWorld."""

    def __init__(self, world: SimWorld, policy, inference_period_s: float = 0.2, control_period_s: float = 0.01,
                 safety: SafetyConfig = SafetyConfig(), executor: ExecutorConfig = ExecutorConfig()) -> None:
        self.world, self.policy = world, policy
        self.inference_period_s, self.control_period_s = inference_period_s, control_period_s
        self.arm = FrankyArm(FrankyArmConfig(robot_host=world.robot_host, realtime_config="ignore"))
        self.arm.connect()
        self.controller = ArmController(self.arm, ChunkExecutor(executor), SafetyEnvelope(safety),
                                        ControllerConfig(dry_run=False, home_on_task_start=True))
        self._episodes = 0

    def run(self, spec: TaskSpec, seed: int, timeout_s: float = 30.0, success: SuccessConfig = SuccessConfig()) -> EpisodeResult:
        """One episode of `spec` on the layout drawn from `seed`; `timeout_s` in simulation seconds."""
        self._episodes += 1
        self.controller.set_task("", self.world.time_s)
        self.world.reset(seed=seed)
        self.controller.set_task(f"direct-{self._episodes}", self.world.time_s)
        self.controller.finish_homing(lambda: self.world.time_s)
        check = SuccessCheck(spec, success)
        start_sim, start_wall = self.world.time_s, time.monotonic()
        next_infer = start_sim
        chunks, phases = 0, []
        while True:
            now = self.world.time_s
            if now - start_sim > timeout_s:
                break
            if check.update(self.world.object_poses(), now):
                break
            if now >= next_infer:
                state = self.arm.state()
                obs = Observation(images={}, image_stamps_s={"state": now}, state=self.controller.state_vector(state),
                                  instruction=spec.instruction, task_id=self.controller.executor.task_id,
                                  extras={"object_poses": self.world.object_poses()})
                chunk = self.policy.infer(obs)
                self.controller.submit(chunk, now)
                chunks += 1
                phase = getattr(self.policy, "last_phase", "")
                if not phases or phases[-1] != phase:
                    phases.append(phase)
                next_infer = now + self.inference_period_s
            self.controller.tick(now)
            time.sleep(self.control_period_s / 2)
        return EpisodeResult(spec, seed, check.succeeded, self.world.time_s - start_sim, time.monotonic() - start_wall,
                             chunks, self.controller.report.steps_clipped, phases)

    def close(self) -> None:
        self.arm.close()

"""`vla-jepa render-layouts`: many random tabletop layouts, rendered, with where every object is.

A few hundred demonstrations show a small model only a few hundred cube placements: it memorises them instead
of learning to find a named cube (see docs/experiments/tiny_sim/README.md). Rendering a layout costs a
small fraction of what recording a demonstration does, so this command draws thousands of layouts, renders the policy's cameras with the arm in
poses taken from recorded episodes (or at home), and writes a native episode dataset whose samples carry the
object positions but no actions. `vla-jepa-train --train.action-loss-weight 0 --train.object-loss-weight 1`
on it pretrains the backbone to localise objects (the auxiliary object head); the demonstrations come after.
Simulation ground truth is used for training only; nothing of it reaches the exported policy graph.

Layout k uses seed `seed + k` (the same draw as the sim node's), so keep these seeds apart from evaluation's.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np

from ..core.images import resize_rgb
from ..robot.controller import FR3_HOME_Q_RAD
from ..sim.tasks import FAMILIES, TaskSpec
from ..sim.world import BOWL_NAME, SimWorldConfig, random_layout

FINGER_JOINTS = ("robot0_finger_joint1", "robot0_finger_joint2")
ARM_JOINTS = tuple(f"robot0_fr3_joint{i}" for i in range(1, 8))


@dataclasses.dataclass(frozen=True)
class ArmPose:
    q_rad: tuple[float, ...]   # 7 joint positions
    gripper_width_m: float     # distance between the fingers


HOME_POSE = ArmPose(tuple(FR3_HOME_Q_RAD), 0.08)


def arm_poses_from_bags(bags: list[str | Path], every: int = 10) -> list[ArmPose]:
    """Every `every`-th /franka/state of the episode bags under `bags`: arm poses the policy really sees."""
    from ..dataset.convert import STATE_TOPIC, find_episode_bags
    from ..recording.reader import EpisodeReader

    poses: list[ArmPose] = []
    for bag in find_episode_bags(bags):
        reader = EpisodeReader(bag, allow_truncated=True)
        for k, (_, _, msg) in enumerate(reader.messages([STATE_TOPIC])):
            if k % every == 0:
                poses.append(ArmPose(tuple(float(v) for v in msg.q_rad), float(msg.gripper_width_m)))
    if not poses:
        raise ValueError(f"no {STATE_TOPIC} messages in the bags under {[str(b) for b in bags]}")
    return poses


def render_layouts(out_dir: str | Path, num_layouts: int, seed: int, arm_poses: list[ArmPose],
                   poses_per_layout: int = 2, image_size_px: int = 128, world: SimWorldConfig = SimWorldConfig(),
                   overwrite: bool = False, progress: bool = True) -> Path:
    """Render `num_layouts` layouts (seeds seed..) x `poses_per_layout` arm poses drawn from `arm_poses` into a
    native episode dataset (one episode per layout; zero actions and state: object targets only)."""
    import mujoco
    from tqdm import tqdm
    from vla_jepa.data import Episode, write_episode_dataset

    from ..sim.world import SimWorld

    if num_layouts < 1 or poses_per_layout < 1:
        raise ValueError(f"num_layouts={num_layouts} and poses_per_layout={poses_per_layout} must be >= 1")
    if not arm_poses:
        raise ValueError("arm_poses is empty")
    rng = np.random.default_rng(seed)
    names = tuple(sorted((*world.cube_names, BOWL_NAME)))  # the order bags-to-dataset writes
    colours = world.cube_colours
    half = world.cube_size_m / 2

    def episodes(w: SimWorld):
        m = w.model
        adr = {n: int(m.jnt_qposadr[mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_JOINT, n)])
               for n in (*ARM_JOINTS, *FINGER_JOINTS, *(f"{c}_joint" for c in world.cube_names))}
        bowl = int(m.body_mocapid[mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, BOWL_NAME)])
        base = w.snapshot()
        for k in tqdm(range(num_layouts), desc="layouts", unit="layout", disable=not progress):
            layout = random_layout(world, seed + k)
            qpos, mocap = base.qpos.copy(), base.mocap_pos.copy()
            positions = {}
            for name, (x, y, yaw) in layout.placements.items():
                if name == BOWL_NAME:
                    mocap[bowl] = positions[name] = (x, y, 0.0)
                else:
                    a = adr[f"{name}_joint"]
                    qpos[a:a + 7] = (x, y, half, np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2))
                    positions[name] = (x, y, half)
            frames = []
            for pose in (arm_poses[i] for i in rng.integers(0, len(arm_poses), poses_per_layout)):
                for joint, q in zip(ARM_JOINTS, pose.q_rad):
                    qpos[adr[joint]] = q
                for joint in FINGER_JOINTS:
                    qpos[adr[joint]] = pose.gripper_width_m / 2
                snap = dataclasses.replace(base, qpos=qpos.copy(), mocap_pos=mocap.copy())
                views = [w.render(cam, snap)[0] for cam in world.cameras]
                frames.append([resize_rgb(v, image_size_px) if image_size_px else v for v in views])
            t = len(frames)
            colour = colours[int(rng.integers(len(colours)))]  # colour, then family: the draws the data was made with
            spec = TaskSpec(FAMILIES[int(rng.integers(len(FAMILIES)))], colour)
            yield Episode(frames=np.asarray(frames, np.uint8), states=np.zeros((t, 8), np.float32),
                          actions=np.zeros((t, 7), np.float32), instruction=spec.instruction,
                          objects=np.repeat(np.asarray([positions[n] for n in names], np.float32)[None], t, 0),
                          object_names=names)

    with SimWorld(world) as w:
        return write_episode_dataset(out_dir, episodes(w), cameras=list(world.cameras), fps=1.0,
                                     action_space="none (object targets only)", overwrite=overwrite)


def main_from_args(out: str, layouts: int, seed: int, arm_poses_from: list[str], poses_per_layout: int,
                   image_size_px: int, robot_host: str, overwrite: bool) -> int:
    t0 = time.monotonic()
    poses = arm_poses_from_bags(arm_poses_from) if arm_poses_from else [HOME_POSE]
    print(f"{len(poses)} arm poses ({'from ' + ', '.join(arm_poses_from) if arm_poses_from else 'home only'})")
    root = render_layouts(out, layouts, seed, poses, poses_per_layout, image_size_px,
                          SimWorldConfig(robot_host=robot_host), overwrite=overwrite)
    print(f"{layouts} layouts x {poses_per_layout} arm poses -> {root} ({time.monotonic() - t0:.0f} s); next: "
          f"vla-jepa-train --data {root} --train.action-loss-weight 0 --train.no-use-wm-loss "
          f"--train.object-loss-weight 1 ...")
    return 0

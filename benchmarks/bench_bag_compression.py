"""Episode bag size and writer CPU per second of recording: MCAP chunk compression none / lz4 / zstd levels.

    .venv/bin/python benchmarks/bench_bag_compression.py --robot-host 127.0.0.1
    .venv/bin/python benchmarks/bench_bag_compression.py --seconds 8 --seconds-vga 4 \
        --out benchmarks/results/bag_compression.json

Frames are real: a scripted-expert episode ("pick up the red cube") runs in franky-sim + MuJoCo (no ROS), the
physics state is captured at 30 Hz of sim time, and both cameras (front, wrist) are rendered from it at 224x224
and at 640x480; a second set adds Gaussian noise (sigma --noise-levels grey levels, like a real camera's
sensor noise) to the same frames, since rendered flat colours compress far better than real images. The
recording is then replayed into the recorder's EpisodeWriter (one thread, as in the
recorder) with what the recorder writes besides the cameras (joint states, robot state and EE pose at 100 Hz,
/clock samples), flushing every 0.25 s of recording like the recorder's default flush_period_s. Per setting:
MB written per second of recording, the ratio to uncompressed, and the writer's CPU time per second of
recording (thread CPU; 100 % = one core), median and max over --repeats runs.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CAMERA_HZ, FAST_HZ, FLUSH_PERIOD_S = 30.0, 100.0, 0.25
SETTINGS = (("none", 0), ("lz4", 0), ("zstd", 1), ("zstd", 3), ("zstd", 6), ("zstd", 9))


def capture_episode(robot_host: str, seconds: float, seed: int) -> list:
    """Physics snapshots at 30 Hz of sim time while the scripted expert works on one task."""
    from vla_jepa_ros.sim.expert import ScriptedExpertPolicy
    from vla_jepa_ros.sim.rollout import DirectRollout
    from vla_jepa_ros.sim.tasks import parse_instruction
    from vla_jepa_ros.sim.world import SimWorld, SimWorldConfig

    snapshots: list = []
    capturing = {"on": False}
    with SimWorld(SimWorldConfig(robot_host=robot_host)) as world:
        def capture(_t):
            if capturing["on"] and len(snapshots) < seconds * CAMERA_HZ:
                snapshots.append(world.snapshot())
        world.add_time_hook(capture, 1.0 / CAMERA_HZ)
        rollout = DirectRollout(world, ScriptedExpertPolicy())
        try:
            capturing["on"] = True
            result = rollout.run(parse_instruction("pick up the red cube"), seed=seed, timeout_s=seconds)
        finally:
            capturing["on"] = False
            rollout.close()
        print(f"episode: success {result.success}, {result.sim_time_s:.1f} s sim in {result.wall_time_s:.1f} s wall, "
              f"{len(snapshots)} snapshots", file=sys.stderr)
        frames = {size: render_all(world, snapshots, size) for size in ((224, 224), (640, 480))}
    return snapshots, frames


def render_all(world, snapshots: list, size: tuple[int, int]) -> list[tuple[np.ndarray, np.ndarray]]:
    """(front, wrist) RGB frames (H, W, 3) for each snapshot, rendered at size (width, height)."""
    import mujoco

    width, height = size
    renderer = mujoco.Renderer(world.model, height, width)
    data = mujoco.MjData(world.model)
    out = []
    try:
        for s in snapshots:
            data.qpos[:], data.mocap_pos[:] = s.qpos, s.mocap_pos
            mujoco.mj_kinematics(world.model, data)
            mujoco.mj_comPos(world.model, data)
            mujoco.mj_camlight(world.model, data)
            pair = []
            for camera in ("front", "wrist"):
                renderer.update_scene(data, camera=camera)
                pair.append(renderer.render().copy())
            out.append(tuple(pair))
    finally:
        renderer.close()
    return out


def recording(frames: list, seconds: float) -> list[tuple[float, str, bytes]]:
    """(time s, topic, CDR bytes) of `seconds` of recording, in time order."""
    from geometry_msgs.msg import PoseStamped
    from rclpy.serialization import serialize_message
    from sensor_msgs.msg import JointState

    from vla_jepa_interfaces.msg import RobotState
    from vla_jepa_ros.ros.conversions import rgb_to_image

    events = []
    for k, (front, wrist) in enumerate(frames[: int(seconds * CAMERA_HZ)]):
        t = k / CAMERA_HZ
        events.append((t, "/cameras/front/image_raw", serialize_message(rgb_to_image(front, t, "front"))))
        events.append((t, "/cameras/wrist/image_raw", serialize_message(rgb_to_image(wrist, t, "wrist"))))
    rng = np.random.default_rng(0)
    for k in range(int(seconds * FAST_HZ)):
        t = k / FAST_HZ + 0.0005
        q = rng.normal(size=7).tolist()
        events.append((t, "/franka/joint_states", serialize_message(
            JointState(name=[f"fr3_joint{i}" for i in range(1, 8)], position=q, velocity=q, effort=q))))
        events.append((t, "/franka/state", serialize_message(RobotState(q_rad=q, dq_rad_s=q))))
        events.append((t, "/franka/ee_pose", serialize_message(PoseStamped())))
    return sorted(events, key=lambda e: e[0])


TOPICS = ("/cameras/front/image_raw:sensor_msgs/msg/Image", "/cameras/wrist/image_raw:sensor_msgs/msg/Image",
          "/franka/joint_states:sensor_msgs/msg/JointState", "/franka/state:vla_jepa_interfaces/msg/RobotState",
          "/franka/ee_pose:geometry_msgs/msg/PoseStamped")


def write_once(events: list, seconds: float, compression: str, level: int, folder: Path) -> tuple[float, int]:
    """Replay into an EpisodeWriter: (writer thread CPU s, bytes on disk)."""
    from vla_jepa_ros.recording import RecorderConfig
    from vla_jepa_ros.recording.typestore import make_typestore
    from vla_jepa_ros.recording.writer import EpisodeWriter

    specs = RecorderConfig(topics=TOPICS, compression=compression, compression_level=level).topic_specs
    bag = folder / f"{compression}{level}_{time.monotonic_ns()}"
    wall0 = 1_800_000_000_000_000_000
    cpu0 = time.thread_time()
    writer = EpisodeWriter(bag, specs, make_typestore(), compression=compression,
                           compression_level=level or None).open()
    next_flush = FLUSH_PERIOD_S
    for t, topic, data in events:
        if t >= next_flush:
            writer.flush()
            next_flush += FLUSH_PERIOD_S
        ns = int(t * 1e9)
        writer.write(topic, wall0 + ns, data, wall0 + ns, 0, ros_time_ns=ns)
    writer.close({})
    cpu = time.thread_time() - cpu0
    size = sum(p.stat().st_size for p in bag.glob("*.mcap"))
    return cpu, size


def noisy(frames: list, sigma: float, seed: int = 0) -> list:
    """The frames with Gaussian sensor noise of `sigma` grey levels, clipped to uint8."""
    rng = np.random.default_rng(seed)

    def add(img):
        return np.clip(img + rng.normal(0.0, sigma, img.shape), 0, 255).astype(np.uint8)
    return [(add(f), add(w)) for f, w in frames]


def run(frames_by_size: dict, seconds_by_size: dict, repeats: int, noise: float) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_bag_compression_") as tmp:
        cases = []  # (size, noise sigma, seconds)
        for size, frames in frames_by_size.items():
            seconds = min(seconds_by_size[size], len(frames) / CAMERA_HZ)
            cases += [(size, sigma, seconds) for sigma in ((0.0, noise) if noise else (0.0,))]
        for size, sigma, seconds in cases:
            frames = frames_by_size[size][: int(seconds * CAMERA_HZ)]
            events = recording(noisy(frames, sigma) if sigma else frames, seconds)
            raw_bytes = sum(len(d) for _, _, d in events)
            base = None
            for compression, level in SETTINGS:
                cpus, sizes = [], []
                for _ in range(repeats):
                    cpu, nbytes = write_once(events, seconds, compression, level, Path(tmp))
                    cpus.append(cpu)
                    sizes.append(nbytes)
                    for p in Path(tmp).iterdir():  # keep the disk use to one bag
                        for f in p.iterdir():
                            f.unlink()
                        p.rmdir()
                mb_per_s = statistics.median(sizes) / 1e6 / seconds
                base = base or mb_per_s
                rows.append({"resolution": f"{size[0]}x{size[1]}", "noise_sigma": sigma,
                             "compression": compression,
                             "level": level or "default", "seconds": seconds,
                             "payload_mb_per_s": raw_bytes / 1e6 / seconds,
                             "mb_per_s": mb_per_s, "ratio_to_none": mb_per_s / base,
                             "cpu_pct_median": 100 * statistics.median(cpus) / seconds,
                             "cpu_pct_max": 100 * max(cpus) / seconds, "repeats": repeats})
                print(table_row(rows[-1]), file=sys.stderr)
    return rows


HEADER = (f"{'cameras':>10} {'noise':>5} {'compression':>11} {'level':>7} {'MB/s rec':>9} {'x none':>7} "
          f"{'writer CPU % (median)':>22} {'(max)':>6}")


def table_row(r: dict) -> str:
    return (f"{r['resolution']:>10} {r['noise_sigma']:5.1f} {r['compression']:>11} {str(r['level']):>7} "
            f"{r['mb_per_s']:9.2f} {r['ratio_to_none']:7.3f} {r['cpu_pct_median']:22.1f} {r['cpu_pct_max']:6.1f}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--robot-host", default="127.0.0.1", help="loopback address franky-sim binds (ports 1337/1338)")
    p.add_argument("--seconds", type=float, default=8.0, help="seconds of 224x224 recording (sim time)")
    p.add_argument("--seconds-vga", type=float, default=4.0, help="seconds of 640x480 recording (0 = skip)")
    p.add_argument("--repeats", type=int, default=3, help="runs per setting")
    p.add_argument("--noise-levels", type=float, default=3.0,
                   help="sigma of the sensor noise added for the second set, grey levels (0 = no second set)")
    p.add_argument("--seed", type=int, default=3, help="layout seed of the episode")
    p.add_argument("--out", help="write the rows as JSON here (e.g. benchmarks/results/bag_compression.json)")
    a = p.parse_args(argv)
    if not 1 <= a.seconds <= 60 or not 0 <= a.seconds_vga <= 30 or not 1 <= a.repeats <= 20:
        p.error(f"--seconds {a.seconds} must be in [1, 60], --seconds-vga {a.seconds_vga} in [0, 30], "
                f"--repeats {a.repeats} in [1, 20]")
    snapshots, frames = capture_episode(a.robot_host, max(a.seconds, a.seconds_vga), a.seed)
    if not a.seconds_vga:
        frames.pop((640, 480))
    rows = run(frames, {(224, 224): a.seconds, (640, 480): a.seconds_vga}, a.repeats, a.noise_levels)
    print(HEADER)
    for r in rows:
        print(table_row(r))
    if a.out:
        import os

        Path(a.out).write_text(json.dumps({
            "benchmark": "bench_bag_compression.py", "date": time.strftime("%Y-%m-%d"),
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs (shared, loaded)",
            "python": platform.python_version(), "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""`vla-jepa bags-to-dataset`: recorded episode bags -> the training package's dataset (+ LeRobot v3).

For each episode bag: camera frames (raw or compressed), /franka/state and /vla/action_chunk are aligned on
the policy's step grid (see align.py: inputs at or before each step, targets from the executed chunks, or with
`relabel_expert` the scripted expert's action at each step, see relabel.py), frames
are resized to `image_size_px`, and the episode is written with `vla_jepa.data.write_episode_dataset` (which
also computes the normalisation statistics). Bags that cannot be read are reported by name and skipped.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Iterable

import numpy as np

from ..core.images import ImageError, decode_compressed, raw_to_rgb, resize_rgb
from ..core.types import DELTA_EE_DIM_NAMES, STATE_DIM_NAMES, robot_state_vector
from ..sim.tasks import parse_instruction
from .align import ChunkRecord, Stream, align_episode
from .relabel import counterfactual_instructions, expert_actions

STATE_TOPIC = "/franka/state"
CHUNK_TOPIC = "/vla/action_chunk"
OBJECTS_TOPIC = "/sim/object_poses"  # simulation ground truth: kept as per-step object positions when recorded
NAMED_OBJECT = "named_object"  # with ConvertConfig.named_object: the object the instruction names, after the others
SUCCEEDED = "SUCCEEDED"
GRIPPER_OPEN_DIM = STATE_DIM_NAMES.index("gripper_open")  # the commanded open flag in the state vector


@dataclasses.dataclass(frozen=True)
class ConvertConfig:
    cameras: tuple[str, ...] = ("front", "wrist")
    image_size_px: int = 0          # 0 = keep the recorded size
    keep_failed: bool = False       # keep episodes whose task did not succeed
    min_steps: int = 8              # shorter episodes are skipped (too little to learn from)
    lerobot: bool = True            # also write <out>/lerobot_v3
    relabel_expert: bool = False    # targets: the scripted expert's action at each step (DAgger), not the executed one
    counterfactual_colours: bool = False  # + the reach phase once per other cube, instruction and labels for it
    named_object: bool = False      # + one more tracked object: where the object the instruction names is
    include_repaired: bool = False  # also use bags that were cut short (repaired or truncated): not full demos

    def __post_init__(self) -> None:
        if self.counterfactual_colours and not self.relabel_expert:
            raise ValueError("counterfactual_colours needs relabel_expert (the expert labels the other instructions)")
        if not self.cameras:
            raise ValueError("cameras must name at least one camera")
        if self.image_size_px < 0 or self.image_size_px > 4096:
            raise ValueError(f"image_size_px={self.image_size_px} must be in [0, 4096]")
        if self.min_steps < 1:
            raise ValueError(f"min_steps={self.min_steps} must be >= 1")


class CutShort(Exception):
    """The bag was cut short (recorder killed, disk full, copy truncated): not a full demonstration."""

    def __init__(self, kind: str, outcome: str) -> None:
        super().__init__(kind)
        self.kind, self.outcome = kind, outcome


@dataclasses.dataclass
class EpisodeReport:
    bag: str
    outcome: str = ""
    steps: int = 0
    kept: bool = False
    reason: str = ""
    counterfactual: int = 0  # reach-phase copies written with another cube named (counterfactual_colours)


def find_episode_bags(paths: Iterable[str | Path]) -> list[Path]:
    """Bag folders (with .mcap files) among `paths` and their direct children, sorted, without duplicates."""
    found: list[Path] = []
    for p in map(Path, paths):
        p = p.expanduser()
        if not p.exists():
            raise FileNotFoundError(f"{p}: no such file or folder")
        if p.is_file() or any(p.glob("*.mcap")):
            found.append(p)
        else:
            found += sorted(c for c in p.iterdir() if c.is_dir() and any(c.glob("*.mcap")))
    return sorted(dict.fromkeys(found))


def _camera_topics(topics: dict[str, str], camera: str) -> tuple[str, str]:
    for suffix, kind in (("image_raw", "raw"), ("compressed", "compressed")):
        topic = f"/cameras/{camera}/{suffix}"
        if topic in topics:
            return topic, kind
    raise ValueError(f"no /cameras/{camera}/image_raw or .../compressed topic (bag has {sorted(topics)})")


def _stamp_s(header) -> float:
    return header.stamp.sec + header.stamp.nanosec * 1e-9


def read_episode(bag: Path, config: ConvertConfig):
    """One bag -> (vla_jepa.data.Episode, outcome, period_s, counterfactual variants: [Episode]).
    Raises ValueError/BagReadError with the reason."""
    from vla_jepa.data import Episode

    from ..recording.reader import EpisodeReader

    reader = EpisodeReader(bag, allow_truncated=True)
    meta = reader.metadata
    topics = reader.topics
    cams = {c: _camera_topics(topics, c) for c in config.cameras}
    for needed in (STATE_TOPIC, CHUNK_TOPIC):
        if needed not in topics:
            raise ValueError(f"no {needed} topic in the bag")
    frames: dict[str, tuple[list, list]] = {c: ([], []) for c in config.cameras}
    states: tuple[list, list] = ([], [])
    chunks: list[ChunkRecord] = []
    objects: tuple[list, list] = ([], [])  # stamps, {name: (position (3,), quaternion xyzw (4,))}
    by_topic = {topic: (cam, kind) for cam, (topic, kind) in cams.items()}
    extra = [OBJECTS_TOPIC] if OBJECTS_TOPIC in topics else []
    if (reader.truncated or meta.get("repaired")) and not config.include_repaired:
        raise CutShort("repaired" if meta.get("repaired") else "truncated (bag-info --repair rewrites it)",
                       meta.get("outcome", ""))
    # receive times on the ROS clock (sim time in simulation), like the stamps in the headers
    for topic, log_ns, msg in reader.messages([*by_topic, STATE_TOPIC, CHUNK_TOPIC, *extra], ros_time=True):
        if topic in by_topic:
            cam, kind = by_topic[topic]
            try:
                rgb = (raw_to_rgb(msg.data, msg.width, msg.height, msg.step, msg.encoding) if kind == "raw"
                       else decode_compressed(msg.data, msg.format))
            except ImageError as exc:
                raise ValueError(f"bad image on {topic}: {exc}") from None
            if config.image_size_px:
                rgb = resize_rgb(rgb, config.image_size_px)
            frames[cam][0].append(_stamp_s(msg.header))
            frames[cam][1].append(np.ascontiguousarray(rgb))
        elif topic == STATE_TOPIC:
            states[0].append(_stamp_s(msg.header))
            states[1].append(robot_state_vector(msg.ee_position_m, msg.ee_rpy_rad, msg.gripper_width_m,
                                                msg.gripper_open_commanded))
        elif topic == OBJECTS_TOPIC:
            objects[0].append(_stamp_s(msg.header))
            objects[1].append({n: (np.array([p.position.x, p.position.y, p.position.z]),
                                   np.array([p.orientation.x, p.orientation.y, p.orientation.z, p.orientation.w]))
                               for n, p in zip(msg.names, msg.poses)})
        else:
            actions = np.asarray(msg.data, np.float32)
            if actions.size != msg.horizon * msg.action_dim or list(msg.dim_names) != list(DELTA_EE_DIM_NAMES):
                raise ValueError(f"action chunk {msg.sequence} is not a {len(DELTA_EE_DIM_NAMES)}-d delta-EE chunk")
            chunks.append(ChunkRecord(log_ns * 1e-9, actions.reshape(msg.horizon, msg.action_dim),
                                      float(msg.step_period_s)))
    if not chunks:
        raise ValueError("no action chunks recorded")
    chunks.sort(key=lambda c: c.received_s)
    period_s = chunks[0].step_period_s
    cam_streams = {c: Stream.sorted(t, v) for c, (t, v) in frames.items()}
    state_stream = Stream.sorted(*states)
    last_chunk_end_s = chunks[-1].received_s + chunks[-1].actions.shape[0] * chunks[-1].step_period_s
    end_s = min(last_chunk_end_s, (meta.get("end_time_ns") or 0) * 1e-9 or last_chunk_end_s)
    aligned = align_episode(cam_streams, state_stream, chunks, period_s, end_s=end_s)
    views = [np.stack([cam_streams[c].values[i] for i in aligned.frame_indices[c]]) for c in config.cameras]
    pose_stream = Stream.sorted(*objects) if objects[0] else None
    pose_indices = np.maximum(pose_stream.latest_index_at(aligned.times_s), 0) if pose_stream else None
    names, positions = _object_positions(pose_stream, pose_indices) if pose_stream else ((), None)
    states = np.asarray(state_stream.values)[aligned.state_indices].astype(np.float32)
    instruction = meta.get("instruction", "")
    if not instruction:
        raise ValueError("the episode has no instruction in its metadata")
    actions = aligned.actions
    frames = np.stack(views, axis=1)  # (T, V, H, W, 3)
    variants = []
    if config.relabel_expert:
        if pose_stream is None:
            raise ValueError(f"relabelling with the expert needs {OBJECTS_TOPIC} in the bag")
        step_poses = [pose_stream.values[i] for i in pose_indices]
        actions = expert_actions(states, step_poses, instruction)
        if config.counterfactual_colours:  # same frames and states until the first close, another cube named
            closed = np.nonzero(states[:, GRIPPER_OPEN_DIM] < 0.5)[0]
            reach = int(closed[0]) if len(closed) else len(states)
            variants = [Episode(frames=frames[:reach], states=states[:reach],
                                actions=expert_actions(states[:reach], step_poses[:reach], other),
                                instruction=other, object_names=names, objects=positions[:reach])
                        for other in counterfactual_instructions(instruction, names)]
    episode = Episode(frames=frames, states=states, actions=actions, instruction=instruction, objects=positions,
                      object_names=names)
    if config.named_object:
        if positions is None:
            raise ValueError(f"the named object's position needs {OBJECTS_TOPIC} in the bag")
        episode, variants = with_named_object(episode), [with_named_object(v) for v in variants]
    return episode, meta.get("outcome", ""), period_s, variants


def with_named_object(episode):
    """The episode with one more tracked object, NAMED_OBJECT, after the others: at each step the position (T, 3) of
    the object its instruction names. A model that estimates it must read the words to find the object, and a head
    that reads its estimate gets the way to the target without picking it out of every object's offset."""
    spec = parse_instruction(episode.instruction)
    if spec is None or spec.object_name not in episode.object_names:
        raise ValueError(f"{episode.instruction!r} names no tracked object of {list(episode.object_names)}")
    named = episode.objects[:, episode.object_names.index(spec.object_name)]  # (T, 3)
    return dataclasses.replace(episode, objects=np.concatenate([episode.objects, named[:, None]], axis=1),
                               object_names=(*episode.object_names, NAMED_OBJECT))


def _object_positions(poses: Stream, indices: np.ndarray) -> tuple[tuple[str, ...], np.ndarray]:
    """Object pose messages, the message index of each step (the latest at or before it; the first message for
    steps before it) -> (names sorted, positions (T, N, 3)). A name missing from some message makes the episode
    unusable."""
    names = tuple(sorted(poses.values[0]))
    try:
        table = np.asarray([[msg[n][0] for n in names] for msg in poses.values], np.float32)  # (M, N, 3)
    except KeyError as exc:
        raise ValueError(f"{OBJECTS_TOPIC}: object {exc} missing from some messages") from None
    return names, table[indices]


def bags_to_dataset(bags: Iterable[str | Path], out_dir: str | Path, config: ConvertConfig = ConvertConfig(),
                    progress: bool = True, overwrite: bool = False) -> list[EpisodeReport]:
    """Convert every readable episode bag under `bags` into `out_dir`. Returns one report per bag."""
    from tqdm import tqdm
    from vla_jepa.data import write_episode_dataset

    from ..recording.reader import BagReadError

    paths = find_episode_bags(bags)
    if not paths:
        raise ValueError(f"no episode bags (folders with .mcap files) under {list(map(str, bags))}")
    reports: list[EpisodeReport] = []
    kept = []
    period = None
    for path in tqdm(paths, desc="bags", unit="bag", disable=not progress):
        report = EpisodeReport(str(path))
        reports.append(report)
        try:
            episode, report.outcome, period_s, variants = read_episode(path, config)
        except (BagReadError, ValueError, OSError) as exc:
            report.reason = f"unreadable: {exc}"
            continue
        except CutShort as exc:
            report.outcome = exc.outcome
            report.reason = f"{exc.kind}: cut short, not a full demonstration (--include-repaired uses it)"
            continue
        report.steps = len(episode.actions)
        if report.outcome != SUCCEEDED and not (config.keep_failed or config.relabel_expert):
            report.reason = f"outcome {report.outcome or 'unknown'} (use --keep-failed to keep it)"
        elif report.steps < config.min_steps:
            report.reason = f"{report.steps} steps < min_steps {config.min_steps}"
        elif period is not None and abs(period_s - period) > 1e-6:
            report.reason = f"step period {period_s} s differs from the first episode's {period} s"
        else:
            period = period_s
            report.kept = True
            kept.append(episode)
            extra = [v for v in variants if len(v.actions) >= config.min_steps]
            report.counterfactual = len(extra)
            kept += extra
    if not kept:
        raise ValueError("no episode was kept:\n" + "\n".join(f"  {r.bag}: {r.reason}" for r in reports))
    fps = 1.0 / period
    write_episode_dataset(out_dir, kept, cameras=list(config.cameras), fps=fps, overwrite=overwrite)
    if config.lerobot:
        from .lerobot_v3 import Episode as LeRobotEpisode
        from .lerobot_v3 import write_lerobot_v3

        write_lerobot_v3(Path(out_dir) / "lerobot_v3",
                         (LeRobotEpisode(frames={c: e.frames[:, i] for i, c in enumerate(config.cameras)},
                                         state=e.states, actions=e.actions, task=e.instruction) for e in kept),
                         fps=round(fps), state_names=list(STATE_DIM_NAMES), action_names=list(DELTA_EE_DIM_NAMES))
    return reports


def print_reports(reports: list[EpisodeReport], seconds: float) -> None:
    kept = [r for r in reports if r.kept]
    width = max(len(Path(r.bag).name) for r in reports)
    print(f"\n{'episode'.ljust(width)}  {'outcome':10} {'steps':>6}  result")
    for r in reports:
        print(f"{Path(r.bag).name.ljust(width)}  {r.outcome or '-':10} {r.steps:6d}  "
              f"{'kept' if r.kept else 'skipped: ' + r.reason}"
              f"{f' (+{r.counterfactual} with another cube named)' if r.counterfactual else ''}")
    steps = sum(r.steps for r in kept)
    extra = sum(r.counterfactual for r in kept)
    print(f"\nkept {len(kept)}/{len(reports)} episodes, {steps} samples in {seconds:.1f} s "
          f"({steps / max(seconds, 1e-9):.0f} samples/s)" + (f"; + {extra} counterfactual episodes" if extra else ""))


def main_from_args(bags: list[str], out: str, cameras: list[str], image_size_px: int, keep_failed: bool,
                   min_steps: int, lerobot: bool, overwrite: bool, relabel_expert: bool = False,
                   counterfactual_colours: bool = False, named_object: bool = False,
                   include_repaired: bool = False) -> int:
    t0 = time.monotonic()
    reports = bags_to_dataset(bags, out, ConvertConfig(tuple(cameras), image_size_px, keep_failed, min_steps,
                                                       lerobot, relabel_expert, counterfactual_colours, named_object,
                                                       include_repaired),
                              overwrite=overwrite)
    print_reports(reports, time.monotonic() - t0)
    return 0

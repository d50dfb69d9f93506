"""Recorder configuration: a frozen dataclass that validates itself (the recorder node's ROS parameters)."""
from __future__ import annotations

import dataclasses
import re

DEFAULT_TOPICS = (
    "/cameras/front/image_raw:sensor_msgs/msg/Image",
    "/cameras/wrist/image_raw:sensor_msgs/msg/Image",
    "/vla/action_chunk:vla_jepa_interfaces/msg/ActionChunk",
    "/vla/task_status:vla_jepa_interfaces/msg/TaskStatus",
    "/franka/state:vla_jepa_interfaces/msg/RobotState",
    "/franka/joint_states:sensor_msgs/msg/JointState",
    "/franka/ee_pose:geometry_msgs/msg/PoseStamped",
    "/sim/object_poses:vla_jepa_interfaces/msg/ObjectPoses",
)
STATUS_TOPIC = "/vla/task_status"
STATUS_TYPE = "vla_jepa_interfaces/msg/TaskStatus"
ACTION_CHUNK_TYPE = "vla_jepa_interfaces/msg/ActionChunk"
CAMERA_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
QOS_KINDS = ("auto", "best_effort", "reliable", "transient_local")
COMPRESSIONS = ("zstd", "lz4", "none")  # MCAP chunk compression
COMPRESSION_LEVELS = {"zstd": (1, 19), "lz4": (0, 16), "none": (0, 0)}  # 0 always means "the default level"
_TOPIC_RE = re.compile(r"^/[A-Za-z0-9_~{}/]*[A-Za-z0-9_}]$")
_TYPE_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*/(msg|srv|action)/[A-Z][A-Za-z0-9_]*$")
_CAMERA_RE = re.compile(r"^/cameras/([^/]+)/")


@dataclasses.dataclass(frozen=True)
class TopicSpec:
    """One recorded topic: 'NAME:TYPE' or 'NAME:TYPE:QOS' (QOS one of QOS_KINDS; auto = by type/topic)."""

    name: str
    msgtype: str
    qos: str = "auto"

    @property
    def camera(self) -> str | None:
        """Camera name for /cameras/<name>/... topics, else None."""
        match = _CAMERA_RE.match(self.name)
        return match.group(1) if match else None

    @property
    def resolved_qos(self) -> str:
        if self.qos != "auto":
            return self.qos
        if self.name == STATUS_TOPIC:
            return "transient_local"  # late joiners (a restarted recorder) must see the running task
        if self.msgtype in CAMERA_TYPES:
            return "best_effort"  # cameras publish best effort; a reliable subscription would not match
        return "reliable"


def parse_topic(text: str) -> TopicSpec:
    """'NAME:TYPE[:QOS]' -> TopicSpec. Raises ValueError naming the bad entry."""
    parts = text.strip().split(":")
    if len(parts) not in (2, 3):
        raise ValueError(f"topic entry {text!r} must be 'NAME:TYPE' or 'NAME:TYPE:QOS', "
                         f"e.g. '/cameras/front/image_raw:sensor_msgs/msg/Image'")
    name, msgtype = parts[0].strip(), parts[1].strip()
    qos = parts[2].strip() if len(parts) == 3 else "auto"
    if not _TOPIC_RE.match(name) or "//" in name:
        raise ValueError(f"topic entry {text!r}: {name!r} is not an absolute ROS topic name")
    if not _TYPE_RE.match(msgtype):
        raise ValueError(f"topic entry {text!r}: type {msgtype!r} must look like 'pkg/msg/Type'")
    if qos not in QOS_KINDS:
        raise ValueError(f"topic entry {text!r}: qos {qos!r} must be one of {', '.join(QOS_KINDS)}")
    return TopicSpec(name, msgtype, qos)


def _help(text: str) -> dict:
    return {"help": text}


@dataclasses.dataclass(frozen=True)
class RecorderConfig:
    topics: tuple[str, ...] = dataclasses.field(
        default=DEFAULT_TOPICS, metadata=_help("recorded topics, each 'NAME:TYPE[:QOS]' (QOS: auto, best_effort, "
                                               "reliable, transient_local)"))
    output_dir: str = dataclasses.field(
        default="~/vla_jepa_bags", metadata=_help("one bag folder per episode is created here (named by task id)"))
    record_all_tasks: bool = dataclasses.field(
        default=False, metadata=_help("record every task, not only those started with record: true"))
    max_bag_size_mb: float = dataclasses.field(
        default=2048.0, metadata=_help("start a new file of the same bag beyond this size, MB (0 = never)"))
    max_bag_duration_s: float = dataclasses.field(
        default=0.0, metadata=_help("start a new file of the same bag beyond this duration, s (0 = never)"))
    min_free_disk_mb: float = dataclasses.field(
        default=1024.0, metadata=_help("stop recording (clear status) when the free space under output_dir "
                                       "falls below this, MB"))
    queue_size: int = dataclasses.field(
        default=2000, metadata=_help("messages buffered between the callbacks and the writer thread; "
                                     "a full queue drops (and counts) messages"))
    queue_max_mb: float = dataclasses.field(
        default=512.0, metadata=_help("bytes buffered between the callbacks and the writer thread, MB; beyond "
                                      "this messages are dropped (and counted) too"))
    flush_period_s: float = dataclasses.field(
        default=0.25, metadata=_help("close the pending MCAP chunk and flush to the OS this often, s "
                                     "(bounds what a SIGKILL can lose)"))
    metadata_period_s: float = dataclasses.field(
        default=1.0, metadata=_help("rewrite metadata.yaml and episode.yaml of the open bag this often, s"))
    compression: str = dataclasses.field(
        default="zstd", metadata=_help("MCAP chunk compression: zstd, lz4 or none (docs/recording.md compares "
                                       "size and writer CPU)"))
    compression_level: int = dataclasses.field(
        default=0, metadata=_help("chunk compression level (zstd 1-19, lz4 0-16); 0 = the default level "
                                  "(docs/recording.md)"))
    diagnostics_period_s: float = dataclasses.field(
        default=1.0, metadata=_help("publish the recorder's status on /diagnostics this often, s"))

    def __post_init__(self) -> None:
        specs = self.topic_specs  # validates every entry
        names = [s.name for s in specs]
        if not specs:
            raise ValueError("topics is empty: give at least one 'NAME:TYPE' entry")
        if dupes := sorted({n for n in names if names.count(n) > 1}):
            raise ValueError(f"topics lists {dupes} more than once")
        if not self.output_dir.strip():
            raise ValueError("output_dir is empty")
        for name, low in (("max_bag_size_mb", 0.0), ("max_bag_duration_s", 0.0), ("min_free_disk_mb", 0.0)):
            if not getattr(self, name) >= low:
                raise ValueError(f"{name}={getattr(self, name)} must be >= {low}")
        if 0 < self.max_bag_size_mb < 1:
            raise ValueError(f"max_bag_size_mb={self.max_bag_size_mb} must be 0 (never split) or >= 1")
        if 0 < self.max_bag_duration_s < 1:
            raise ValueError(f"max_bag_duration_s={self.max_bag_duration_s} must be 0 (never split) or >= 1")
        if not 1 <= self.queue_size <= 1_000_000:
            raise ValueError(f"queue_size={self.queue_size} must be in [1, 1000000]")
        if not 1 <= self.queue_max_mb <= 65536:
            raise ValueError(f"queue_max_mb={self.queue_max_mb} must be in [1, 65536]")
        if not 0.01 <= self.flush_period_s <= 10:
            raise ValueError(f"flush_period_s={self.flush_period_s} must be in [0.01, 10] "
                             f"(a SIGKILL loses up to about this much)")
        if not self.flush_period_s <= self.metadata_period_s <= 60:
            raise ValueError(f"metadata_period_s={self.metadata_period_s} must be in "
                             f"[flush_period_s={self.flush_period_s}, 60]")
        if self.compression not in COMPRESSIONS:
            raise ValueError(f"compression={self.compression!r} must be one of {', '.join(COMPRESSIONS)}")
        low, high = COMPRESSION_LEVELS[self.compression]
        if self.compression_level != 0 and not low <= self.compression_level <= high:
            raise ValueError(f"compression_level={self.compression_level} must be 0 (the default) or in "
                             f"[{low}, {high}] for {self.compression}")
        if not 0.05 <= self.diagnostics_period_s <= 60:
            raise ValueError(f"diagnostics_period_s={self.diagnostics_period_s} must be in [0.05, 60]")

    @property
    def topic_specs(self) -> tuple[TopicSpec, ...]:
        return tuple(parse_topic(t) for t in self.topics)

    @property
    def resolved_compression_level(self) -> int | None:
        """The level to pass to the compressor (None = its default)."""
        return self.compression_level or None

    @property
    def camera_names(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(s.camera for s in self.topic_specs if s.camera))

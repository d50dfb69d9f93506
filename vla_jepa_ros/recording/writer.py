"""EpisodeWriter: one rosbag2 bag folder (version 9, MCAP storage) per episode, split into files by size/duration.

Built on rosbags' MCAP storage writer, with three additions the recorder needs:
- explicit file names, so a split bag is one folder `<bag>/<bag>_0.mcap, <bag>_1.mcap, ...` listed by a single
  metadata.yaml (what rosbag2 itself writes, so `ros2 bag info`/`play` and Foxglove see one bag);
- `flush()`: closes the pending chunk (rosbags only closes one beyond 1 MiB) and flushes the file, so after a
  SIGKILL every message written before the last flush is in a complete chunk (see reader.repair_episode);
- `write_metadata()`: rewrites metadata.yaml atomically while recording, so a killed bag still has one.
Log times are whatever the caller passes (the recorder passes ROS receive time, sim time in simulation).
"""
from __future__ import annotations

import io
import os
from collections import defaultdict
from pathlib import Path
from typing import Callable, Sequence

import yaml
from rosbags.interfaces import Connection, ConnectionExtRosbag2, MessageDefinition, MessageDefinitionFormat
from rosbags.rosbag2.storage_mcap import McapWriter, PendingChunk, write_record, write_string
from rosbags.typesys.store import Typestore

from .config import TopicSpec

ROSBAG2_VERSION = 9
ROS_DISTRO = "kilted"
MCAP_MAGIC = b"\x89MCAP\x30\r\n"
_DURATION_ZERO = {"sec": 0, "nsec": 0}


class McapFile(McapWriter):
    """rosbags' MCAP storage writer on an explicit file path (it otherwise always writes <dir>/<dir>.mcap)."""

    def __init__(self, path: Path) -> None:  # noqa: D107  (same body as McapWriter.__init__ but for the path)
        self.path = path
        self.bio = path.open("xb")
        self.bio.write(MCAP_MAGIC)
        rec = io.BytesIO()
        write_string(rec, "ros2")
        write_string(rec, "vla_jepa_ros recorder (rosbags McapWriter)")
        write_record(self.bio, 0x01, rec)
        # the rest of McapWriter.__init__ (schemas, channels, chunk, statistics), uncompressed chunks
        self.schemas, self.channels, self.chunks = [], [], []
        self.chunk = PendingChunk(2**63 - 1, 0, io.BytesIO(), defaultdict(list))
        self.compression, self.compressor = "", (lambda x: x)
        self.message_start_time, self.message_end_time = 2**63 - 1, 0
        self.channel_stats: dict[int, int] = {}

    @property
    def size_bytes(self) -> int:
        """Bytes in the file plus the pending chunk."""
        return self.bio.tell() + self.chunk.bio.tell()

    def flush(self) -> None:
        """Close the pending chunk (if it holds messages) and hand everything to the OS."""
        if self.chunk.msgs:
            self.close_chunk()
        self.bio.flush()


def qos_profile(kind: str) -> dict:
    """rosbag2 v9 offered_qos_profiles entry for the QoS the recorder subscribed with (resolved TopicSpec.qos)."""
    return {"history": "keep_last", "depth": 1 if kind == "transient_local" else 10,
            "reliability": "best_effort" if kind == "best_effort" else "reliable",
            "durability": "transient_local" if kind == "transient_local" else "volatile",
            "deadline": _DURATION_ZERO, "lifespan": _DURATION_ZERO, "liveliness": "automatic",
            "liveliness_lease_duration": _DURATION_ZERO, "avoid_ros_namespace_conventions": False}


class _FileStats:
    def __init__(self, path: Path) -> None:
        self.path, self.count, self.start_ns, self.end_ns = path, 0, None, None

    def add(self, stamp_ns: int) -> None:
        self.count += 1
        self.start_ns = stamp_ns if self.start_ns is None else min(self.start_ns, stamp_ns)
        self.end_ns = stamp_ns if self.end_ns is None else max(self.end_ns, stamp_ns)

    def as_dict(self) -> dict:
        start = self.start_ns or 0
        return {"path": self.path.name, "starting_time": {"nanoseconds_since_epoch": start},
                "duration": {"nanoseconds": (self.end_ns or start) - start}, "message_count": self.count}


class EpisodeWriter:
    """Writes serialized messages of known topics into `bag_dir` (created; must not exist).

    max_file_size_bytes / max_file_duration_ns: start the next file beyond these (0 = never).
    custom_data: called when a file is finished by a split, for the rosbag2 custom_data stored in that file.
    """

    def __init__(self, bag_dir: Path, topics: Sequence[TopicSpec], store: Typestore,
                 max_file_size_bytes: int = 0, max_file_duration_ns: int = 0,
                 custom_data: Callable[[], dict[str, str]] = dict) -> None:
        if max_file_size_bytes < 0 or max_file_duration_ns < 0:
            raise ValueError(f"split limits must be >= 0, got size {max_file_size_bytes} B, "
                             f"duration {max_file_duration_ns} ns")
        self.bag_dir = Path(bag_dir)
        self.topics = {t.name: t for t in topics}
        self.store = store
        self.max_file_size_bytes = max_file_size_bytes
        self.max_file_duration_ns = max_file_duration_ns
        self.custom_data = custom_data
        self._defs = {t.msgtype: (store.generate_msgdef(t.msgtype, ros_version=2)[0], store.hash_rihs01(t.msgtype))
                      for t in topics}
        self.files: list[_FileStats] = []
        self.counts = {name: 0 for name in self.topics}
        self.bytes_written = 0
        self._file: McapFile | None = None
        self._connections: dict[str, Connection] = {}
        self._closed_bytes = 0

    # -- files -----------------------------------------------------------------------------------------
    def open(self) -> "EpisodeWriter":
        self.bag_dir.mkdir(parents=True, exist_ok=False)
        self._open_file()
        self.write_metadata({})
        return self

    def _open_file(self) -> None:
        path = self.bag_dir / f"{self.bag_dir.name}_{len(self.files)}.mcap"
        self._file = McapFile(path)
        self.files.append(_FileStats(path))
        self._connections = {}
        for name, spec in self.topics.items():
            msgdef, rihs01 = self._defs[spec.msgtype]
            conn = Connection(id=len(self._connections) + 1, topic=name, msgtype=spec.msgtype,
                              msgdef=MessageDefinition(MessageDefinitionFormat.MSG, msgdef), digest=rihs01,
                              msgcount=0, ext=ConnectionExtRosbag2("cdr", []), owner=self)
            if spec.msgtype not in {s.name for s in self._file.schemas}:
                self._file.add_msgtype(conn)
            self._file.add_connection(conn, dump_yaml([qos_profile(spec.resolved_qos)]).strip())
            self._connections[name] = conn

    def _close_file(self, custom_data: dict[str, str]) -> None:
        assert self._file is not None
        self._file.close(ROSBAG2_VERSION, dump_yaml(self._info(custom_data)).strip())
        self._closed_bytes += self._file.path.stat().st_size
        self._file = None

    @property
    def is_open(self) -> bool:
        return self._file is not None

    @property
    def size_bytes(self) -> int:
        """Bytes of every file of the bag so far (closed files plus the open one and its pending chunk)."""
        return self._closed_bytes + (self._file.size_bytes if self._file else 0)

    # -- writing ---------------------------------------------------------------------------------------
    def write(self, topic: str, stamp_ns: int, data: bytes | memoryview) -> None:
        """Write one serialized message; starts the next file first when the current one is over a limit."""
        if self._file is None:
            raise RuntimeError(f"bag {self.bag_dir} is not open")
        conn = self._connections.get(topic)
        if conn is None:
            raise ValueError(f"topic {topic!r} is not one of this bag's topics {sorted(self.topics)}")
        current = self.files[-1]
        if current.count and (
                (self.max_file_size_bytes and self._file.size_bytes >= self.max_file_size_bytes)
                or (self.max_file_duration_ns and stamp_ns - current.start_ns >= self.max_file_duration_ns)):
            self._close_file(self.custom_data())
            self._open_file()
            current = self.files[-1]
        self._file.write(conn, stamp_ns, data)
        current.add(stamp_ns)
        self.counts[topic] += 1
        self.bytes_written += len(data)

    def next_file(self) -> None:
        """Finish the current file and continue in the next one (a split on demand)."""
        if self._file is None:
            raise RuntimeError(f"bag {self.bag_dir} is not open")
        self._close_file(self.custom_data())
        self._open_file()

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()

    def close(self, custom_data: dict[str, str]) -> None:
        """Finish the open file (MCAP summary + rosbag2 metadata record) and write metadata.yaml."""
        if self._file is not None:
            self._close_file(custom_data)
        self.write_metadata(custom_data)

    def abort(self) -> None:
        """Close the file handle without a summary (after an I/O error); metadata.yaml keeps its last state."""
        if self._file is not None:
            try:
                self._file.bio.close()
            except OSError:
                pass
            self._file = None

    # -- metadata --------------------------------------------------------------------------------------
    def _info(self, custom_data: dict[str, str]) -> dict:
        starts = [f.start_ns for f in self.files if f.start_ns is not None]
        ends = [f.end_ns for f in self.files if f.end_ns is not None]
        start = min(starts) if starts else 0
        return {
            "version": ROSBAG2_VERSION,
            "storage_identifier": "mcap",
            "relative_file_paths": [f.path.name for f in self.files],
            "duration": {"nanoseconds": (max(ends) - start) if ends else 0},
            "starting_time": {"nanoseconds_since_epoch": start},
            "message_count": sum(self.counts.values()),
            "topics_with_message_count": [
                {"topic_metadata": {"name": name, "type": spec.msgtype, "serialization_format": "cdr",
                                    "offered_qos_profiles": [qos_profile(spec.resolved_qos)],
                                    "type_description_hash": self._defs[spec.msgtype][1]},
                 "message_count": self.counts[name]}
                for name, spec in self.topics.items()],
            "compression_format": "",
            "compression_mode": "",
            "files": [f.as_dict() for f in self.files],
            "custom_data": dict(custom_data) or None,
            "ros_distro": ROS_DISTRO,
        }

    def write_metadata(self, custom_data: dict[str, str]) -> None:
        """(Re)write <bag>/metadata.yaml atomically with the counts so far."""
        write_text_atomic(self.bag_dir / "metadata.yaml",
                          dump_yaml({"rosbag2_bagfile_information": self._info(custom_data)}))


class _NoAliasDumper(yaml.SafeDumper):
    """rosbag2's metadata.yaml has no YAML anchors/aliases; shared sub-dicts are written out in full."""

    def ignore_aliases(self, data) -> bool:  # noqa: ARG002
        return True


def dump_yaml(data) -> str:
    return yaml.dump(data, Dumper=_NoAliasDumper, sort_keys=False, allow_unicode=True)


def write_text_atomic(path: Path, text: str) -> None:
    """Write through a temporary file and rename, so a reader (or a SIGKILL) never sees half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


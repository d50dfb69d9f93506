"""EpisodeWriter: one rosbag2 bag folder (version 9, MCAP storage) per episode, split into files by size/duration.

Each file is what rosbag2's MCAP storage plugin (`ros2 bag record -s mcap`) writes: profile `ros2`, one
`ros2msg` schema per type (full definition text, so readers need no ROS install), channels with
`offered_qos_profiles` and `topic_type_hash` metadata, chunks with message indexes, a `rosbag2` metadata record
(`serialized_metadata`), statistics, chunk/metadata indexes and summary offsets. Beyond rosbag2's defaults
(no chunk CRCs, no compression) every chunk carries the CRC32 of its uncompressed records, the data section and
the summary carry theirs, and chunks are compressed (zstd by default, or lz4, or none).

Times follow rosbag2: log_time is when the recorder received the message on the wall clock, publish_time when
the publisher sent it (DDS source timestamp), sequence the publisher's sequence number. Under simulation the
ROS clock (sim time, also in the messages' headers) is kept as `/clock` messages (rosgraph_msgs/msg/Clock): one
is written before every message whose ROS receive time differs from the previous one, so the sim receive time
of any message is the last `/clock` value before it in file order (EpisodeReader.messages(ros_time=True)).

Recorder-specific additions:
- explicit file names, so a split bag is one folder `<bag>/<bag>_0.mcap, <bag>_1.mcap, ...` listed by a single
  metadata.yaml (what rosbag2 itself writes, so `ros2 bag info`/`play` and Foxglove see one bag);
- `flush()`: closes the pending chunk and flushes the file, so after a SIGKILL every message written before
  the last flush is in a complete chunk (see reader.repair_episode);
- `write_metadata()`: rewrites metadata.yaml atomically while recording, so a killed bag still has one.
"""
from __future__ import annotations

import dataclasses
import os
import struct
import zlib
from pathlib import Path
from typing import BinaryIO, Callable, Sequence

import yaml
from mcap.data_stream import RecordBuilder
from mcap.opcode import Opcode
from mcap.records import (Channel, Chunk, ChunkIndex, DataEnd, Footer, Header, Message, MessageIndex, Metadata,
                          MetadataIndex, Schema, Statistics, SummaryOffset)
from rosbags.typesys.store import Typestore

from .config import COMPRESSIONS, TopicSpec

ROSBAG2_VERSION = 9
ROS_DISTRO = "kilted"
MCAP_MAGIC = b"\x89MCAP\x30\r\n"
PROFILE = "ros2"
LIBRARY = "vla_jepa_ros recorder (mcap records, rosbag2 storage layout)"
CHUNK_SIZE_BYTES = 1 << 20  # a chunk is closed beyond this many uncompressed bytes (and at every flush)
CLOCK_TOPIC = "/clock"
CLOCK_TYPE = "rosgraph_msgs/msg/Clock"
DEFAULT_ZSTD_LEVEL = 1
_DURATION_ZERO = {"sec": 0, "nsec": 0}
_CDR_LE = b"\x00\x01\x00\x00"  # CDR encapsulation header: plain CDR, little endian


def clock_cdr(ros_time_ns: int) -> bytes:
    """rosgraph_msgs/msg/Clock serialized (CDR, little endian) for a ROS time in ns."""
    sec, nanosec = divmod(ros_time_ns, 1_000_000_000)
    return _CDR_LE + struct.pack("<iI", sec, nanosec)


def make_compressor(compression: str, level: int | None) -> Callable[[bytes], bytes]:
    """Chunk compressor for 'zstd' | 'lz4' | 'none' (level: zstd 1..19, lz4 0..16; None = the default)."""
    if compression == "zstd":
        import zstandard

        compressor = zstandard.ZstdCompressor(level=DEFAULT_ZSTD_LEVEL if level is None else level)
        return compressor.compress
    if compression == "lz4":
        import lz4.frame

        return lambda data: lz4.frame.compress(data, compression_level=level or 0)
    if compression == "none":
        return bytes
    raise ValueError(f"compression {compression!r} must be one of {', '.join(COMPRESSIONS)}")


@dataclasses.dataclass
class _PendingChunk:
    records: RecordBuilder = dataclasses.field(default_factory=RecordBuilder)
    start_ns: int = 0
    end_ns: int = 0
    count: int = 0
    index: dict[int, list[tuple[int, int]]] = dataclasses.field(default_factory=dict)  # channel -> (log ns, offset)


class McapFile:
    """One MCAP file in the rosbag2 layout, written record by record with CRCs (see the module docstring).

    Schemas and channels go into the data section before the first chunk that uses them, so a file cut short
    by a SIGKILL still describes every message in its complete chunks.
    """

    def __init__(self, path: Path, compression: str = "zstd", level: int | None = None,
                 chunk_size_bytes: int = CHUNK_SIZE_BYTES) -> None:
        self.path = Path(path)
        self.compression = "" if compression == "none" else compression  # MCAP's name for 'not compressed'
        self._compress = make_compressor(compression, level)
        self.chunk_size_bytes = chunk_size_bytes
        self.bio: BinaryIO = self.path.open("xb")
        self._offset = 0
        self._data_crc = 0
        self.schemas: dict[str, int] = {}  # msgtype -> schema id
        self._schema_records: list[Schema] = []
        self._channel_records: list[Channel] = []
        self._chunk = _PendingChunk()
        self._chunk_indexes: list[ChunkIndex] = []
        self._metadata_indexes: list[MetadataIndex] = []
        self._channel_counts: dict[int, int] = {}
        self.message_count = 0
        self.start_ns = self.end_ns = 0
        self._write(MCAP_MAGIC)
        self._write_record(Header(profile=PROFILE, library=LIBRARY))

    # -- low level ---------------------------------------------------------------------------------------
    def _write(self, data: bytes | memoryview) -> None:
        self.bio.write(data)
        self._data_crc = zlib.crc32(data, self._data_crc)
        self._offset += len(data)

    def _write_record(self, record) -> int:
        """Write one record into the data section; returns its length in bytes."""
        builder = RecordBuilder()
        record.write(builder)
        data = builder.end()
        self._write(data)
        return len(data)

    @property
    def size_bytes(self) -> int:
        """Bytes in the file plus the pending chunk's uncompressed records."""
        return self._offset + self._chunk.records.count

    # -- schemas, channels, messages -------------------------------------------------------------------
    def add_schema(self, msgtype: str, definition: str) -> int:
        if msgtype not in self.schemas:
            schema = Schema(id=len(self.schemas) + 1, name=msgtype, encoding="ros2msg", data=definition.encode())
            self._close_chunk()  # keep records in order: the schema precedes every chunk that uses it
            self._write_record(schema)
            self._schema_records.append(schema)
            self.schemas[msgtype] = schema.id
        return self.schemas[msgtype]

    def add_channel(self, topic: str, msgtype: str, metadata: dict[str, str]) -> int:
        channel = Channel(id=len(self._channel_records) + 1, topic=topic, message_encoding="cdr",
                          schema_id=self.schemas[msgtype], metadata=dict(metadata))
        self._close_chunk()
        self._write_record(channel)
        self._channel_records.append(channel)
        self._channel_counts[channel.id] = 0
        return channel.id

    def write(self, channel_id: int, log_time_ns: int, data: bytes | memoryview, publish_time_ns: int | None = None,
              sequence: int = 0) -> None:
        chunk = self._chunk
        if chunk.count == 0:
            chunk.start_ns = chunk.end_ns = log_time_ns
        chunk.start_ns, chunk.end_ns = min(chunk.start_ns, log_time_ns), max(chunk.end_ns, log_time_ns)
        chunk.index.setdefault(channel_id, []).append((log_time_ns, chunk.records.count))
        chunk.count += 1
        Message(channel_id=channel_id, sequence=sequence & 0xFFFFFFFF, log_time=log_time_ns,
                publish_time=log_time_ns if publish_time_ns is None else publish_time_ns,
                data=bytes(data)).write(chunk.records)
        if self.message_count == 0:
            self.start_ns = self.end_ns = log_time_ns
        self.start_ns, self.end_ns = min(self.start_ns, log_time_ns), max(self.end_ns, log_time_ns)
        self.message_count += 1
        self._channel_counts[channel_id] += 1
        if chunk.records.count >= self.chunk_size_bytes:
            self._close_chunk()

    def _close_chunk(self) -> None:
        chunk = self._chunk
        if chunk.count == 0:
            return
        self._chunk = _PendingChunk()
        records = chunk.records.end()
        compressed = self._compress(records)
        start = self._offset
        length = self._write_record(Chunk(compression=self.compression, data=compressed,
                                          message_start_time=chunk.start_ns, message_end_time=chunk.end_ns,
                                          uncompressed_crc=zlib.crc32(records), uncompressed_size=len(records)))
        index_start = self._offset
        offsets = {}
        for channel_id, entries in sorted(chunk.index.items()):
            offsets[channel_id] = self._offset
            self._write_record(MessageIndex(channel_id=channel_id, records=entries))
        self._chunk_indexes.append(ChunkIndex(
            message_start_time=chunk.start_ns, message_end_time=chunk.end_ns, chunk_start_offset=start,
            chunk_length=length, message_index_offsets=offsets, message_index_length=self._offset - index_start,
            compression=self.compression, compressed_size=len(compressed), uncompressed_size=len(records)))

    def flush(self) -> None:
        """Close the pending chunk (if it holds messages) and hand everything to the OS."""
        self._close_chunk()
        self.bio.flush()

    # -- closing -----------------------------------------------------------------------------------------
    def close(self, metadata: dict[str, dict[str, str]]) -> None:
        """Write the last chunk, the metadata records (name -> key/values), the summary and the footer."""
        self._close_chunk()
        for name, values in metadata.items():
            start = self._offset
            length = self._write_record(Metadata(name=name, metadata=dict(values)))
            self._metadata_indexes.append(MetadataIndex(offset=start, length=length, name=name))
        builder = RecordBuilder()
        DataEnd(data_section_crc=self._data_crc).write(builder)
        self._write(builder.end())
        summary_start = self._offset
        summary = RecordBuilder()
        groups = []
        for opcode, records in (
                (Opcode.SCHEMA, self._schema_records), (Opcode.CHANNEL, self._channel_records),
                (Opcode.STATISTICS, [Statistics(
                    message_count=self.message_count, schema_count=len(self._schema_records),
                    channel_count=len(self._channel_records), attachment_count=0,
                    metadata_count=len(self._metadata_indexes), chunk_count=len(self._chunk_indexes),
                    message_start_time=self.start_ns, message_end_time=self.end_ns,
                    channel_message_counts=dict(self._channel_counts))]),
                (Opcode.CHUNK_INDEX, self._chunk_indexes), (Opcode.METADATA_INDEX, self._metadata_indexes)):
            group_start = summary.count
            for record in records:
                record.write(summary)
            if summary.count > group_start:
                groups.append(SummaryOffset(group_opcode=opcode, group_start=summary_start + group_start,
                                            group_length=summary.count - group_start))
        summary_offset_start = summary_start + summary.count
        for offset in groups:
            offset.write(summary)
        summary_data = summary.end()
        summary_crc = zlib.crc32(struct.pack("<BQQQ", Opcode.FOOTER, 20, summary_start, summary_offset_start),
                                 zlib.crc32(summary_data))
        footer = RecordBuilder()
        Footer(summary_start=summary_start, summary_offset_start=summary_offset_start,
               summary_crc=summary_crc).write(footer)
        self.bio.write(summary_data + footer.end() + MCAP_MAGIC)
        self.bio.close()

    def abort(self) -> None:
        """Close the file handle without a summary (after an I/O error)."""
        try:
            self.bio.close()
        except OSError:
            pass


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

    max_file_size_bytes / max_file_duration_ns: start the next file beyond these (0 = never; the duration is
    measured in log time). custom_data: called when a file is finished by a split, for the rosbag2 custom_data
    stored in that file. compression / compression_level: chunk compression ('zstd' | 'lz4' | 'none').
    """

    def __init__(self, bag_dir: Path, topics: Sequence[TopicSpec], store: Typestore,
                 max_file_size_bytes: int = 0, max_file_duration_ns: int = 0,
                 custom_data: Callable[[], dict[str, str]] = dict, compression: str = "zstd",
                 compression_level: int | None = None) -> None:
        if max_file_size_bytes < 0 or max_file_duration_ns < 0:
            raise ValueError(f"split limits must be >= 0, got size {max_file_size_bytes} B, "
                             f"duration {max_file_duration_ns} ns")
        make_compressor(compression, compression_level)  # refuses an unknown compression before any file exists
        self.bag_dir = Path(bag_dir)
        self.topics = {t.name: t for t in topics}
        self.store = store
        self.max_file_size_bytes = max_file_size_bytes
        self.max_file_duration_ns = max_file_duration_ns
        self.custom_data = custom_data
        self.compression = compression
        self.compression_level = compression_level
        self._defs = {t.msgtype: self._definition(t.msgtype) for t in topics}
        self.files: list[_FileStats] = []
        self.counts = {name: 0 for name in self.topics}
        self.bytes_written = 0
        self._file: McapFile | None = None
        self._channels: dict[str, int] = {}
        self._closed_bytes = 0
        self._last_clock_ns: int | None = None

    def _definition(self, msgtype: str) -> tuple[str, str]:
        return self.store.generate_msgdef(msgtype, ros_version=2)[0], self.store.hash_rihs01(msgtype)

    # -- files -----------------------------------------------------------------------------------------
    def open(self) -> "EpisodeWriter":
        self.bag_dir.mkdir(parents=True, exist_ok=False)
        self._open_file()
        self.write_metadata({})
        return self

    def _open_file(self) -> None:
        path = self.bag_dir / f"{self.bag_dir.name}_{len(self.files)}.mcap"
        self._file = McapFile(path, self.compression, self.compression_level)
        self.files.append(_FileStats(path))
        self._channels = {}
        self._last_clock_ns = None  # every file starts with its own clock sample: it reads on its own
        for spec in self.topics.values():
            self._add_channel(spec)

    def _add_channel(self, spec: TopicSpec) -> None:
        msgdef, rihs01 = self._defs[spec.msgtype]
        self._file.add_schema(spec.msgtype, msgdef)
        self._channels[spec.name] = self._file.add_channel(
            spec.name, spec.msgtype, {"offered_qos_profiles": dump_yaml([qos_profile(spec.resolved_qos)]).strip(),
                                      "topic_type_hash": rihs01})

    def _close_file(self, custom_data: dict[str, str]) -> None:
        assert self._file is not None
        self._file.close({"rosbag2": {"serialized_metadata": dump_yaml(self._info(custom_data)).strip()}})
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
    def write(self, topic: str, stamp_ns: int, data: bytes | memoryview, publish_time_ns: int | None = None,
              sequence: int = 0, ros_time_ns: int | None = None) -> None:
        """Write one serialized message received at `stamp_ns` (log time: wall clock) and published at
        `publish_time_ns` (None: the log time); starts the next file first when the current one is over a limit.
        ros_time_ns: the ROS clock at reception when it is not the wall clock (sim time): kept as /clock samples.
        """
        if self._file is None:
            raise RuntimeError(f"bag {self.bag_dir} is not open")
        if topic not in self._channels:
            raise ValueError(f"topic {topic!r} is not one of this bag's topics {sorted(self.topics)}")
        current = self.files[-1]
        if current.count and (
                (self.max_file_size_bytes and self._file.size_bytes >= self.max_file_size_bytes)
                or (self.max_file_duration_ns and stamp_ns - current.start_ns >= self.max_file_duration_ns)):
            self._close_file(self.custom_data())
            self._open_file()
            current = self.files[-1]
        if ros_time_ns is not None and ros_time_ns != self._last_clock_ns and topic != CLOCK_TOPIC:
            self._write_clock(stamp_ns, ros_time_ns)
        self._file.write(self._channels[topic], stamp_ns, data, publish_time_ns, sequence)
        current.add(stamp_ns)
        self.counts[topic] += 1
        self.bytes_written += len(data)

    def _write_clock(self, stamp_ns: int, ros_time_ns: int) -> None:
        if CLOCK_TOPIC not in self.topics:  # first sim-time sample of the bag: the /clock topic joins it
            spec = TopicSpec(CLOCK_TOPIC, CLOCK_TYPE, "reliable")
            self.topics[CLOCK_TOPIC] = spec
            self._defs[CLOCK_TYPE] = self._definition(CLOCK_TYPE)
            self.counts[CLOCK_TOPIC] = 0
        if CLOCK_TOPIC not in self._channels:
            self._add_channel(self.topics[CLOCK_TOPIC])
        data = clock_cdr(ros_time_ns)
        self._file.write(self._channels[CLOCK_TOPIC], stamp_ns, data, stamp_ns)
        self.files[-1].add(stamp_ns)
        self.counts[CLOCK_TOPIC] += 1
        self.bytes_written += len(data)
        self._last_clock_ns = ros_time_ns

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
            self._file.abort()
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
            "compression_format": "",  # rosbag2's own (file/message) compression: none; MCAP chunks carry theirs
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


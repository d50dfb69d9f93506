"""Read an episode bag written by the recorder (or any rosbag2 MCAP bag folder, or a single .mcap file).

    with EpisodeReader("~/vla_jepa_bags/task-0003") as bag:
        bag.metadata["outcome"], bag.topics, bag.message_counts
        for topic, stamp_ns, msg in bag.messages(["/cameras/front/image_raw", "/vla/action_chunk"]):
            ...   # msg: rosbags message dataclass (field names as in ROS; arrays are numpy), stamp_ns: log time

Needs no ROS install: messages are decoded with the type definitions stored in the bag itself. Pass
`raw=True` to get the CDR bytes instead (e.g. for `rclpy.serialization.deserialize_message`).
A bag whose recorder was SIGKILLed has a last file without an MCAP summary: opening it raises BagReadError
unless `allow_truncated=True` (then every complete chunk is read: all messages older than the recorder's
flush period), and `repair_episode()` rewrites it into a clean bag. Damaged files raise BagReadError naming
the file and the byte offset.
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import os
import shutil
import struct
from pathlib import Path
from typing import Any, Iterable, Iterator

import yaml
from mcap.exceptions import McapError
from mcap.records import Channel, Footer, Message, Schema
from mcap.stream_reader import StreamReader
from rosbags.typesys import Stores, get_typestore, get_types_from_msg

from .writer import CLOCK_TOPIC, MCAP_MAGIC

EPISODE_FILE = "episode.yaml"
EPISODE_CUSTOM_DATA_KEY = "vla_jepa.episode"


class BagReadError(RuntimeError):
    """A bag that cannot be read (missing, truncated, corrupt); the message names the file."""


@dataclasses.dataclass
class _FileScan:
    channels: dict[int, tuple[str, str]]  # channel id -> (topic, msgtype)
    schemas: dict[str, str]  # msgtype -> ros2msg definition text


def _is_complete(path: Path) -> bool:
    """An MCAP file ends with the magic after its footer only when its writer closed it."""
    size = path.stat().st_size
    if size < 2 * len(MCAP_MAGIC):
        return False
    with open(path, "rb") as f:
        head = f.read(len(MCAP_MAGIC))
        f.seek(-len(MCAP_MAGIC), os.SEEK_END)
        tail = f.read()
    if head != MCAP_MAGIC:
        raise BagReadError(f"{path}: not an MCAP file (bad magic {head!r})")
    return tail == MCAP_MAGIC


def load_episode_metadata(bag_dir: Path) -> dict:
    """episode.yaml of a bag folder, else the episode entry of the rosbag2 custom_data, else {}."""
    path = bag_dir / EPISODE_FILE
    if path.exists():
        try:
            return yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise BagReadError(f"{path}: not valid YAML ({exc})") from None
    info = _load_rosbag2_info(bag_dir)
    text = ((info or {}).get("custom_data") or {}).get(EPISODE_CUSTOM_DATA_KEY)
    return json.loads(text) if text else {}


def _load_rosbag2_info(bag_dir: Path) -> dict | None:
    path = bag_dir / "metadata.yaml"
    if not path.exists():
        return None
    try:
        return yaml.safe_load(path.read_text())["rosbag2_bagfile_information"]
    except (yaml.YAMLError, KeyError, TypeError) as exc:
        raise BagReadError(f"{path}: not a rosbag2 metadata file ({exc!r})") from None


def _file_index(path: Path) -> tuple[int, str]:
    stem = path.stem
    tail = stem.rsplit("_", 1)[-1]
    return (int(tail), stem) if tail.isdigit() else (-1, stem)


class EpisodeReader:
    """An episode bag folder (or one .mcap file). Raises BagReadError naming the file when it cannot be read."""

    def __init__(self, path: str | Path, allow_truncated: bool = False) -> None:
        self.path = Path(path).expanduser()
        if not self.path.exists():
            raise BagReadError(f"{self.path}: no such bag")
        self.allow_truncated = allow_truncated
        if self.path.is_file():
            self.bag_dir, self.files = self.path.parent, [self.path]
            self.info = None
        else:
            self.bag_dir = self.path
            self.info = _load_rosbag2_info(self.path)
            listed = [self.path / p for p in self.info.get("relative_file_paths", [])] if self.info else []
            found = sorted(self.path.glob("*.mcap"), key=_file_index)
            # after a SIGKILL right at a split, the newest file may not be listed yet: read what exists
            self.files = [p for p in listed if p.exists()] + [p for p in found if p not in listed]
            if missing := [p for p in listed if not p.exists()]:
                raise BagReadError(f"{missing[0]}: listed in {self.path / 'metadata.yaml'} but missing")
            if not self.files:
                raise BagReadError(f"{self.path}: no .mcap files in this bag folder")
        self.metadata: dict = load_episode_metadata(self.bag_dir) if self.path.is_dir() else {}
        self.truncated_files = [p for p in self.files if not _is_complete(p)]
        if self.truncated_files and not allow_truncated:
            raise BagReadError(
                f"{self.truncated_files[0]}: truncated (no MCAP footer: the recorder was killed or the disk filled); "
                f"open with allow_truncated=True to read its complete chunks, or run repair_episode({str(self.bag_dir)!r})")
        self._scans: dict[Path, _FileScan] = {}
        self._store = None
        self._counts: dict[str, int] | None = None

    def __enter__(self) -> "EpisodeReader":
        return self

    def __exit__(self, *exc) -> None:
        pass

    @property
    def truncated(self) -> bool:
        return bool(self.truncated_files)

    # -- structure ------------------------------------------------------------------------------------
    def _records(self, path: Path, until_first_message: bool = False) -> Iterator[Any]:
        """Schema/Channel/Message records of one file in file order; stops cleanly at a truncated tail."""
        with open(path, "rb") as f:
            reader = StreamReader(f, record_size_limit=1 << 31, validate_crcs=True)
            try:
                for record in reader.records:
                    if isinstance(record, (Schema, Channel, Message)):
                        yield record
                        if until_first_message and isinstance(record, Message):
                            return
                    elif isinstance(record, Footer):
                        return
            except (McapError, struct.error, ValueError, UnicodeDecodeError, MemoryError) as exc:
                offset = f.tell()
                if path in self.truncated_files and offset >= os.fstat(f.fileno()).st_size:
                    return  # ran into the end of a killed recording's file: every complete chunk was read
                raise BagReadError(f"{path}: corrupt MCAP near byte {offset} ({type(exc).__name__}: {exc})") from None

    def _scan(self, path: Path) -> _FileScan:
        if path not in self._scans:
            schemas_by_id: dict[int, tuple[str, str]] = {}
            scan = _FileScan({}, {})
            for record in self._records(path, until_first_message=True):
                if isinstance(record, Schema):
                    schemas_by_id[record.id] = (record.name, record.data.decode())
                    scan.schemas[record.name] = record.data.decode()
                elif isinstance(record, Channel):
                    msgtype = schemas_by_id.get(record.schema_id, ("", ""))[0]
                    scan.channels[record.id] = (record.topic, msgtype)
            self._scans[path] = scan
        return self._scans[path]

    @property
    def topics(self) -> dict[str, str]:
        """topic -> message type, over every file of the bag."""
        out: dict[str, str] = {}
        for path in self.files:
            out.update({topic: msgtype for topic, msgtype in self._scan(path).channels.values()})
        return out

    @property
    def message_counts(self) -> dict[str, int]:
        """topic -> messages actually in the files (counted by reading them; cached)."""
        if self._counts is None:
            counts = dict.fromkeys(self.topics, 0)
            for topic, _, _ in self.messages(raw=True):
                counts[topic] += 1
            self._counts = counts
        return dict(self._counts)

    @property
    def typestore(self):
        """A rosbags typestore built from the definitions stored in the bag."""
        if self._store is None:
            store = get_typestore(Stores.EMPTY)
            for path in self.files:
                for msgtype, text in self._scan(path).schemas.items():
                    if msgtype not in store.fielddefs:
                        store.register(get_types_from_msg(text, msgtype))
            self._store = store
        return self._store

    # -- messages -------------------------------------------------------------------------------------
    def records(self, topics: Iterable[str] | None = None) -> Iterator[tuple[str, str, Message]]:
        """Yield (topic, msgtype, MCAP Message record: log_time, publish_time, sequence, data) in file order."""
        wanted = set(topics) if topics is not None else None
        if wanted and (unknown := wanted - set(self.topics)):
            raise ValueError(f"topics {sorted(unknown)} are not in {self.path} (it has {sorted(self.topics)})")
        for path in self.files:
            channels: dict[int, tuple[str, str]] = {}
            schema_names: dict[int, str] = {}
            for record in self._records(path):
                if isinstance(record, Schema):
                    schema_names[record.id] = record.name
                elif isinstance(record, Channel):
                    channels[record.id] = (record.topic, schema_names.get(record.schema_id, ""))
                else:
                    topic, msgtype = channels.get(record.channel_id, (None, None))
                    if topic is None:
                        raise BagReadError(f"{path}: message on unknown channel {record.channel_id}")
                    if wanted is None or topic in wanted:
                        yield topic, msgtype, record

    def messages(self, topics: Iterable[str] | None = None, raw: bool = False,
                 ros_time: bool = False) -> Iterator[tuple[str, int, Any]]:
        """Yield (topic, time ns, message) in recording order (file by file, as written).

        The time is the log time: when the recorder received the message, on the wall clock (bags recorded
        before the recorder kept the wall clock have the ROS clock there). ros_time=True yields the ROS clock at
        reception instead (sim time in simulation): the last /clock sample before the message (see writer.py),
        else its log time. The publishers' stamps stay in the messages' headers. raw=True yields the serialized
        CDR bytes instead of decoded messages.
        """
        wanted = set(topics) if topics is not None else None
        if wanted is not None and (unknown := wanted - set(self.topics)):
            raise ValueError(f"topics {sorted(unknown)} are not in {self.path} (it has {sorted(self.topics)})")
        clock = ros_time and CLOCK_TOPIC in self.topics
        store = None if raw else self.typestore
        clock_ns: int | None = None
        for topic, msgtype, record in self.records(wanted if wanted is None or not clock else wanted | {CLOCK_TOPIC}):
            if clock and topic == CLOCK_TOPIC:
                clock_ns = _clock_ns(record.data, record.log_time)
                if wanted is not None and CLOCK_TOPIC not in wanted:
                    continue
            stamp = clock_ns if (clock and clock_ns is not None) else record.log_time
            if raw:
                yield topic, stamp, record.data
                continue
            try:
                msg = store.deserialize_cdr(record.data, msgtype)
            except Exception as exc:  # noqa: BLE001  (rosbags raises several types)
                raise BagReadError(f"{self.path}: cannot decode a {msgtype} on {topic} at log time "
                                   f"{record.log_time} ({type(exc).__name__}: {exc})") from None
            yield topic, stamp, msg

    def __iter__(self) -> Iterator[tuple[str, int, Any]]:
        return self.messages()


def _clock_ns(data: bytes, log_ns: int) -> int:
    """A rosgraph_msgs/msg/Clock (CDR) -> ns; an odd payload keeps the log time."""
    if len(data) < 12:
        return log_ns
    sec, nanosec = struct.unpack("<iI" if data[1] == 1 else ">iI", data[4:12])
    return sec * 1_000_000_000 + nanosec


def repair_episode(bag_dir: str | Path) -> dict:
    """Rewrite a killed (or cut short) episode bag into a clean one (every file with an MCAP summary, exact
    metadata.yaml).

    Complete chunks are kept, the partial chunk a SIGKILL may leave is dropped. File boundaries, topics,
    types, log/publish times and sequence numbers are preserved; episode.yaml gets recording_status
    'recovered', `repaired: true` (what is missing is unknown: the episode is no longer a full demonstration,
    whatever its outcome says; bags-to-dataset skips it unless asked) and the real counts.
    Returns the repaired episode metadata. A bag that needs no repair is left alone.
    """
    from .config import TopicSpec
    from .writer import EpisodeWriter, dump_yaml, write_text_atomic

    bag_dir = Path(bag_dir).expanduser()
    reader = EpisodeReader(bag_dir, allow_truncated=True)
    if not reader.truncated and (bag_dir / "metadata.yaml").exists():
        return reader.metadata
    meta = dict(reader.metadata)
    qos = {t["topic_metadata"]["name"]: t["topic_metadata"]["offered_qos_profiles"]
           for t in (reader.info or {}).get("topics_with_message_count", [])}
    specs = [TopicSpec(topic, msgtype, _qos_kind(qos.get(topic))) for topic, msgtype in reader.topics.items()]
    work = bag_dir.parent / f".repair-{bag_dir.name}"
    if work.exists():
        shutil.rmtree(work)
    writer = EpisodeWriter(work / bag_dir.name, specs, reader.typestore).open()
    has_clock, last_ns = CLOCK_TOPIC in reader.topics, None  # last_ns: the last message's ROS clock time
    for index, path in enumerate(reader.files):
        if index:
            writer.next_file()
        for topic, _, record in EpisodeReader(path, allow_truncated=True).records():
            writer.write(topic, record.log_time, record.data, record.publish_time, record.sequence)
            if topic == CLOCK_TOPIC:
                last_ns = _clock_ns(record.data, record.log_time)
            elif not has_clock:
                last_ns = record.log_time
    meta.update(message_counts=dict(writer.counts), recording_status="recovered", repaired=True,
                repaired_at=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                status_message=(meta.get("status_message", "") + " | recovered by repair_episode: the bag was cut "
                                "short (recorder killed, disk full or copy truncated); not a full "
                                "demonstration").lstrip(" |"))
    if last_ns is not None and not meta.get("end_time_ns"):
        meta["end_time_ns"] = last_ns
    writer.close({EPISODE_CUSTOM_DATA_KEY: json.dumps(meta)})
    write_text_atomic(work / bag_dir.name / EPISODE_FILE, dump_yaml(meta))
    broken = bag_dir.parent / f".broken-{bag_dir.name}"
    os.replace(bag_dir, broken)
    os.replace(work / bag_dir.name, bag_dir)
    shutil.rmtree(broken)
    work.rmdir()
    return meta


def _qos_kind(profiles: list | None) -> str:
    if not profiles:
        return "auto"
    p = profiles[0]
    if p.get("durability") == "transient_local":
        return "transient_local"
    return "best_effort" if p.get("reliability") == "best_effort" else "reliable"


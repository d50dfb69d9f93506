"""Recorder core: a bounded queue between subscription callbacks and one writer thread that turns task
status changes into episode bags. No rclpy: the node feeds it (topic, receive times, CDR bytes).

Episode lifecycle (driven by /vla/task_status, decoded here in the writer thread, so status and data are
handled in arrival order):
- a task that becomes RUNNING with record: true (or any task with record_all_tasks) opens a bag
  `<output_dir>/<task_id>/` and the status message that started it is its first message;
- the terminal status (SUCCEEDED/FAILED/CANCELED/ABORTED) is written and closes the bag with the outcome;
- a RUNNING status of another task closes the open bag as 'superseded'; `close()` (SIGINT/SIGTERM) closes it
  as 'interrupted'; the disk guard closes it as 'stopped_disk_guard' (the outcome is still filled in when
  the task ends).
Drops: a full queue drops data messages and counts them per topic (status messages are never dropped).
"""
from __future__ import annotations

import collections
import dataclasses
import datetime
import json
import re
import shutil
import threading
import time
from pathlib import Path
from typing import Callable

import numpy as np
import yaml

from ..core.types import TaskState
from .config import ACTION_CHUNK_TYPE, CAMERA_TYPES, STATUS_TOPIC, STATUS_TYPE, RecorderConfig
from .reader import EPISODE_CUSTOM_DATA_KEY, EPISODE_FILE, BagReadError, repair_episode
from .typestore import check_known, make_typestore
from .writer import CLOCK_TOPIC, EpisodeWriter, dump_yaml, write_text_atomic

EPISODE_FORMAT = "vla_jepa_episode/1"
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")
Log = Callable[[str, str], None]  # (level: "info" | "warning" | "error", message)


def free_disk_mb(path: Path) -> float:
    """Free space (MB) on the file system holding `path` (or its nearest existing parent)."""
    while not path.exists():
        path = path.parent
    return shutil.disk_usage(path).free / 1e6


def _iso(wall_s: float) -> str:
    return datetime.datetime.fromtimestamp(wall_s, datetime.timezone.utc).isoformat(timespec="milliseconds")


@dataclasses.dataclass
class Episode:
    task_id: str
    instruction: str
    bag_dir: Path
    start_time_ns: int
    start_wall_s: float
    drop_base: dict[str, int]
    lost_base: dict[str, int]
    writer: EpisodeWriter | None = None  # kept after the bag is closed: its counts go into the metadata
    instructions: list[str] = dataclasses.field(default_factory=list)
    model_ids: list[str] = dataclasses.field(default_factory=list)
    end_time_ns: int = 0
    last_time_ns: int = 0  # ROS clock of the last message written (the end while the task runs)
    sim_time: bool = False  # the ROS clock was not the wall clock (use_sim_time): /clock samples in the bag
    end_wall_s: float = 0.0
    outcome: str = ""
    outcome_message: str = ""
    recording_status: str = "recording"
    status_message: str = ""
    dropped: dict[str, int] = dataclasses.field(default_factory=dict)
    not_recorded: int = 0  # data messages that arrived after recording stopped (disk guard, write error)


class _Queue:
    """Deque bounded in data items and bytes; control items (status messages, stop) always go in."""

    def __init__(self, max_data: int, max_bytes: int) -> None:
        self._items: collections.deque = collections.deque()
        self._cond = threading.Condition()
        self._data = 0
        self._bytes = 0
        self.max_data = max_data
        self.max_bytes = max_bytes

    def put(self, item, bounded: bool, size: int = 0) -> bool:
        with self._cond:
            if bounded:
                if self._data >= self.max_data or self._bytes + size > self.max_bytes:
                    return False
                self._data += 1
                self._bytes += size
            self._items.append(item)
            self._cond.notify()
            return True

    def get_all(self, timeout_s: float) -> list:
        with self._cond:
            if not self._items:
                self._cond.wait(timeout=max(0.0, timeout_s))
            items = list(self._items)
            self._items.clear()
            self._data = self._bytes = 0
            return items

    def __len__(self) -> int:
        return len(self._items)


_STOP = object()


@dataclasses.dataclass(frozen=True)
class _Times:
    """When one message was received: wall clock (the log time), monotonic (latency), ROS clock when it is not
    the wall clock (sim time), and the publisher's send time and sequence number when known."""

    log_ns: int
    received_mono_ns: int
    ros_ns: int | None
    publish_ns: int | None
    sequence: int

    @property
    def ros_clock_ns(self) -> int:
        """Episode start/end times are on the ROS clock (sim time in simulation, like the headers)."""
        return self.log_ns if self.ros_ns is None else self.ros_ns


class Recorder:
    """Owns the queue, the writer thread and the open episode. Thread-safe `on_message` for callbacks."""

    def __init__(self, config: RecorderConfig, log: Log | None = None, repair_on_start: bool = True) -> None:
        self.config = config
        self.store = make_typestore()
        self.specs = config.topic_specs
        check_known(self.store, [s.msgtype for s in self.specs])
        self.output_dir = Path(config.output_dir).expanduser()
        self.recorded_topics = {s.name for s in self.specs}
        self.action_topics = {s.name for s in self.specs if s.msgtype == ACTION_CHUNK_TYPE}
        self._keep_clock = CLOCK_TOPIC not in self.recorded_topics  # a recorded /clock is kept as it arrives
        self._log = log or (lambda level, msg: None)
        self._queue = _Queue(config.queue_size, int(config.queue_max_mb * 1e6))
        self._lock = threading.Lock()
        self.dropped: dict[str, int] = dict.fromkeys(self.recorded_topics, 0)  # recorder queue full
        self.lost: dict[str, int] = dict.fromkeys(self.recorded_topics, 0)  # reported lost by the middleware
        self.received = 0
        # camera topics, counted for /diagnostics: received by the callback, written into a bag
        self.camera_topics = sorted(s.name for s in self.specs if s.msgtype in CAMERA_TYPES)
        self.received_counts: dict[str, int] = dict.fromkeys(self.camera_topics, 0)
        self.written_counts: dict[str, int] = dict.fromkeys(self.camera_topics, 0)
        self.written = 0
        self.bytes_written = 0
        self.episodes_recorded = 0
        self.latencies_ns: collections.deque = collections.deque(maxlen=50_000)  # receive -> in the file
        self.episode: Episode | None = None
        self.last_episode: dict | None = None
        self.disk_guard_message = ""
        self.error_message = ""
        self._finished_task_ids: collections.deque = collections.deque(maxlen=64)
        self._thread = threading.Thread(target=self._run, name="recorder_writer", daemon=True)
        self._repair_on_start = repair_on_start

    # -- callbacks side ----------------------------------------------------------------------------------
    def on_message(self, topic: str, stamp_ns: int, data: bytes, ros_time_ns: int | None = None,
                   publish_time_ns: int | None = None, sequence: int = 0) -> bool:
        """Queue one serialized message received at `stamp_ns` (wall clock: the bag's log time). False when it
        was dropped. ros_time_ns: the ROS clock at reception when it is not the wall clock (sim time; episode
        start/end times and the bag's /clock samples use it); publish_time_ns / sequence: from the publisher."""
        is_status = topic == STATUS_TOPIC
        if topic in self.received_counts:
            with self._lock:
                self.received_counts[topic] += 1
        item = (topic, stamp_ns, time.monotonic_ns(), data,
                ros_time_ns if self._keep_clock else None, publish_time_ns, sequence)
        if self._queue.put(item, bounded=not is_status, size=len(data)):
            return True
        with self._lock:
            self.dropped[topic] = self.dropped.get(topic, 0) + 1
        return False

    def on_lost(self, topic: str, count: int) -> None:
        """Messages the middleware reports lost before they reached the callback (DDS 'sample lost')."""
        with self._lock:
            self.lost[topic] = self.lost.get(topic, 0) + count

    # -- lifecycle --------------------------------------------------------------------------------------
    def start(self) -> "Recorder":
        try:
            self.output_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ValueError(f"output_dir {str(self.output_dir)!r} cannot be created: {exc}") from None
        free_mb = free_disk_mb(self.output_dir)
        if free_mb < self.config.min_free_disk_mb:
            self._log("warning", f"only {free_mb:.0f} MB free under {self.output_dir} < min_free_disk_mb="
                                 f"{self.config.min_free_disk_mb:.0f}: tasks will not be recorded until space is freed")
        if self._repair_on_start:
            self.repair_leftovers()
        self._thread.start()
        return self

    def close(self, timeout_s: float = 10.0) -> None:
        """Write what is queued, close the open episode as 'interrupted', stop the writer thread."""
        if self._thread.is_alive():
            self._queue.put(_STOP, bounded=False)
            self._thread.join(timeout=timeout_s)

    def repair_leftovers(self) -> list[Path]:
        """Repair bags left open by a killed recorder (episode.yaml still says 'recording')."""
        repaired = []
        for meta_path in sorted(self.output_dir.glob(f"*/{EPISODE_FILE}")):
            try:
                if (yaml.safe_load(meta_path.read_text()) or {}).get("recording_status") != "recording":
                    continue
                t0 = time.monotonic()
                meta = repair_episode(meta_path.parent)
                repaired.append(meta_path.parent)
                self._log("warning", f"repaired episode bag {meta_path.parent} left open by a killed recorder: "
                                     f"{sum(meta['message_counts'].values())} messages kept "
                                     f"({time.monotonic() - t0:.1f} s)")
            except (BagReadError, OSError, yaml.YAMLError, KeyError) as exc:
                self._log("error", f"could not repair {meta_path.parent}: {exc}")
        return repaired

    # -- writer thread ----------------------------------------------------------------------------------
    def _run(self) -> None:
        period_s = self.config.flush_period_s
        next_flush = time.monotonic() + period_s
        next_meta = time.monotonic() + self.config.metadata_period_s
        stop = False
        while not stop:
            for item in self._queue.get_all(next_flush - time.monotonic()):
                if item is _STOP:
                    stop = True
                    continue
                try:
                    self._handle(*item)
                except Exception as exc:  # noqa: BLE001  (never let one bad message kill the recorder)
                    self._fail(f"{type(exc).__name__}: {exc}")
            now = time.monotonic()
            if now >= next_flush or stop:
                next_flush = now + period_s
                write_meta = now >= next_meta
                if write_meta:
                    next_meta = now + self.config.metadata_period_s
                try:
                    self._periodic(write_meta)
                except Exception as exc:  # noqa: BLE001
                    self._fail(f"{type(exc).__name__}: {exc}")
        if self.episode is not None:
            self._finish("interrupted", "the recorder stopped (SIGINT/SIGTERM) before the task ended")

    def _handle(self, topic: str, stamp_ns: int, received_mono_ns: int, data: bytes, ros_time_ns: int | None,
                publish_time_ns: int | None, sequence: int) -> None:
        self.received += 1
        times = _Times(stamp_ns, received_mono_ns, ros_time_ns, publish_time_ns, sequence)
        if topic == STATUS_TOPIC:
            self._on_status(self.store.deserialize_cdr(data, STATUS_TYPE), times, data)
            return
        episode = self.episode
        if episode is None:
            return
        if topic in self.action_topics:
            model_id = self.store.deserialize_cdr(data, ACTION_CHUNK_TYPE).model_id
            if model_id and model_id not in episode.model_ids:
                episode.model_ids.append(model_id)
        self._write(episode, topic, times, data)

    def _write(self, episode: Episode, topic: str, times: "_Times", data: bytes) -> None:
        if episode.writer is None or not episode.writer.is_open:
            episode.not_recorded += 1
            return
        try:
            episode.writer.write(topic, times.log_ns, data, times.publish_ns, times.sequence, times.ros_ns)
        except OSError as exc:
            self._stop_writing(episode, "write_error", f"writing {episode.bag_dir} failed: {exc}")
            return
        self.latencies_ns.append(time.monotonic_ns() - times.received_mono_ns)
        episode.last_time_ns = max(episode.last_time_ns, times.ros_clock_ns)
        episode.sim_time = episode.sim_time or times.ros_ns is not None
        if topic in self.written_counts:
            self.written_counts[topic] += 1
        self.written += 1
        self.bytes_written += len(data)

    def _on_status(self, status, times: "_Times", data: bytes) -> None:
        state = TaskState(status.state)
        episode = self.episode
        if episode is not None and status.task_id != episode.task_id:
            self._finish("superseded", f"a status of task {status.task_id!r} ({TaskState(status.state).name}) arrived "
                                       f"before task {episode.task_id!r} ended (task_manager restarted?)")
            episode = None
        if (episode is None and state == TaskState.RUNNING and status.task_id not in self._finished_task_ids
                and (status.record or self.config.record_all_tasks)):
            episode = self._open(status, times.ros_clock_ns)
        if episode is None:
            return
        if status.instruction and status.instruction not in episode.instructions:
            episode.instructions.append(status.instruction)
        if STATUS_TOPIC in self.recorded_topics:
            self._write(episode, STATUS_TOPIC, times, data)
        if state.is_terminal:
            episode.outcome, episode.outcome_message = state.name, status.message
            episode.end_time_ns = times.ros_clock_ns
            self._finish("complete", "")

    def _open(self, status, stamp_ns: int) -> Episode | None:
        free_mb = free_disk_mb(self.output_dir)
        if free_mb < self.config.min_free_disk_mb:
            self.disk_guard_message = (f"disk guard: task {status.task_id!r} not recorded: {free_mb:.0f} MB free under "
                                       f"{self.output_dir} < min_free_disk_mb={self.config.min_free_disk_mb:.0f}")
            self._log("error", self.disk_guard_message)
            self._finished_task_ids.append(status.task_id)
            return None
        self.disk_guard_message = ""
        with self._lock:
            drop_base = dict(self.dropped)
            lost_base = dict(self.lost)
        episode = Episode(task_id=status.task_id, instruction=status.instruction, bag_dir=self._bag_dir(status.task_id),
                          start_time_ns=stamp_ns, start_wall_s=time.time(), drop_base=drop_base,
                          lost_base=lost_base)
        writer = EpisodeWriter(episode.bag_dir, self.specs, self.store,
                               max_file_size_bytes=int(self.config.max_bag_size_mb * 1e6),
                               max_file_duration_ns=int(self.config.max_bag_duration_s * 1e9),
                               custom_data=lambda: self._custom_data(episode),
                               compression=self.config.compression,
                               compression_level=self.config.resolved_compression_level)
        try:
            episode.writer = writer.open()
        except OSError as exc:
            self._fail(f"cannot open a bag for task {status.task_id!r} in {episode.bag_dir}: {exc}")
            self._finished_task_ids.append(status.task_id)
            return None
        self.episode = episode
        self.error_message = ""  # a new bag is open and writing: earlier errors are in the logs and old metadata
        self._write_episode_yaml(episode)
        self._log("info", f"recording task {status.task_id!r} ({status.instruction!r}) into {episode.bag_dir}")
        return episode

    def _bag_dir(self, task_id: str) -> Path:
        base = _SAFE_NAME.sub("_", task_id).strip("._") or "task"
        path, n = self.output_dir / base, 1
        while path.exists():  # a task id seen before (recorder restarted mid-task, ids reused): never overwrite
            path, n = self.output_dir / f"{base}_r{n}", n + 1
        return path

    def _periodic(self, write_meta: bool) -> None:
        episode = self.episode
        if episode is None or episode.writer is None or not episode.writer.is_open:
            return
        try:
            episode.writer.flush()
        except OSError as exc:
            self._stop_writing(episode, "write_error", f"flushing {episode.bag_dir} failed: {exc}")
            return
        free_mb = free_disk_mb(self.output_dir)
        if free_mb < self.config.min_free_disk_mb:
            self.disk_guard_message = (f"disk guard: recording of task {episode.task_id!r} stopped: {free_mb:.0f} MB "
                                       f"free under {self.output_dir} < min_free_disk_mb="
                                       f"{self.config.min_free_disk_mb:.0f}; the bag is closed and readable")
            self._log("error", self.disk_guard_message)
            self._stop_writing(episode, "stopped_disk_guard", self.disk_guard_message)
        elif write_meta:
            episode.writer.write_metadata(self._custom_data(episode))
            self._write_episode_yaml(episode)

    def _stop_writing(self, episode: Episode, recording_status: str, message: str) -> None:
        """Close the bag but keep the episode until the task ends (so its outcome is still recorded)."""
        episode.recording_status, episode.status_message = recording_status, message
        self._close_bag(episode)
        self._write_episode_yaml(episode)

    def _finish(self, recording_status: str, message: str) -> None:
        episode, self.episode = self.episode, None
        if episode.recording_status == "recording":
            episode.recording_status, episode.status_message = recording_status, message
        episode.end_wall_s = time.time()
        self._close_bag(episode)
        self.last_episode = self._write_episode_yaml(episode)
        self._finished_task_ids.append(episode.task_id)
        self.episodes_recorded += 1
        dropped = sum(self.last_episode["dropped_counts"].values())
        self._log("warning" if dropped or episode.recording_status != "complete" else "info",
                  f"episode {episode.task_id!r} closed: outcome {episode.outcome or 'unknown'}, recording "
                  f"{episode.recording_status}, {sum(self.last_episode['message_counts'].values())} messages, "
                  f"{dropped} dropped, in {episode.bag_dir}")

    def _close_bag(self, episode: Episode) -> None:
        writer = episode.writer
        if writer is None or not writer.is_open:
            return
        try:
            writer.close(self._custom_data(episode))
        except OSError as exc:
            writer.abort()
            episode.recording_status, episode.status_message = "write_error", f"closing the bag failed: {exc}"
            self._fail(f"closing {episode.bag_dir} failed: {exc}")

    def _fail(self, message: str) -> None:
        self.error_message = message
        self._log("error", message)

    # -- metadata -----------------------------------------------------------------------------------------
    def _episode_meta(self, episode: Episode) -> dict:
        writer = episode.writer
        with self._lock:
            dropped = {t: self.dropped.get(t, 0) - episode.drop_base.get(t, 0) for t in self.recorded_topics}
            lost = {t: self.lost.get(t, 0) - episode.lost_base.get(t, 0) for t in self.recorded_topics}
        files = [f.as_dict() for f in writer.files] if writer else []
        end_ns = episode.end_time_ns or episode.last_time_ns or episode.start_time_ns
        return {
            "format": EPISODE_FORMAT,
            "task_id": episode.task_id,
            "instruction": episode.instruction,
            "instructions": list(episode.instructions),
            "outcome": episode.outcome,
            "outcome_message": episode.outcome_message,
            "recording_status": episode.recording_status,
            "status_message": episode.status_message,
            "model_id": episode.model_ids[0] if episode.model_ids else "",
            "model_ids": list(episode.model_ids),
            "camera_names": list(self.config.camera_names),
            "topics": {s.name: s.msgtype for s in self.specs},
            "clock": "sim" if episode.sim_time else "system",  # of start/end_time_ns; the bag's log times: wall
            "start_time_ns": episode.start_time_ns,
            "end_time_ns": end_ns,
            "duration_s": max(0, end_ns - episode.start_time_ns) / 1e9,
            "start_wall_time": _iso(episode.start_wall_s),
            "end_wall_time": _iso(episode.end_wall_s) if episode.end_wall_s else "",
            "message_counts": dict(writer.counts) if writer else {},
            "dropped_counts": dropped,
            "dropped_total": sum(dropped.values()),
            "lost_in_transport_counts": lost,  # DDS 'message lost' events (not seen by the recorder at all)
            "lost_in_transport_total": sum(lost.values()),
            "not_recorded_after_stop": episode.not_recorded,
            "bytes": writer.size_bytes if writer else 0,
            "files": [f["path"] for f in files],
            "config": dataclasses.asdict(self.config) | {"topics": list(self.config.topics)},
        }

    def _custom_data(self, episode: Episode) -> dict[str, str]:
        return {EPISODE_CUSTOM_DATA_KEY: json.dumps(self._episode_meta(episode))}

    def _write_episode_yaml(self, episode: Episode) -> dict:
        meta = self._episode_meta(episode)
        try:
            write_text_atomic(episode.bag_dir / EPISODE_FILE, dump_yaml(meta))
        except OSError as exc:
            self._fail(f"writing {episode.bag_dir / EPISODE_FILE} failed: {exc}")
        return meta

    # -- status ---------------------------------------------------------------------------------------------
    def latency_ms(self) -> tuple[float, float]:
        """(p50, p99) of receive -> written-into-the-file over the recent window, ms (0, 0 before any write)."""
        if not self.latencies_ns:
            return 0.0, 0.0
        p50, p99 = np.percentile(np.fromiter(self.latencies_ns, dtype=np.int64), [50, 99]) / 1e6
        return float(p50), float(p99)

    def diagnostics(self) -> tuple[str, str, dict[str, str]]:
        """(level 'OK' | 'WARN' | 'ERROR', one-line message, key/values) for /diagnostics."""
        episode = self.episode
        with self._lock:
            dropped_total = sum(self.dropped.values())
            lost_total = sum(self.lost.values())
            cameras = {f"frames.{t}.{k}": str(counts.get(t, 0)) for t in self.camera_topics for k, counts in (
                ("received", self.received_counts), ("written", self.written_counts),
                ("dropped_queue_full", self.dropped), ("lost_in_transport", self.lost))}
            dropped_now = (sum(self.dropped.get(t, 0) - episode.drop_base.get(t, 0) for t in self.recorded_topics)
                           if episode else 0)
        p50, p99 = self.latency_ms()
        values = {"state": (episode.recording_status if episode else "idle"),
                  "task_id": episode.task_id if episode else "",
                  "bag": str(episode.bag_dir) if episode else "",
                  "queue": f"{len(self._queue)}/{self.config.queue_size}",
                  "dropped_episode": str(dropped_now), "dropped_total": str(dropped_total),
                  "lost_in_transport_total": str(lost_total),
                  "messages_written": str(self.written), "bytes_written": str(self.bytes_written),
                  "episodes": str(self.episodes_recorded),
                  "free_disk_mb": f"{free_disk_mb(self.output_dir):.0f}",
                  "write_latency_p50_ms": f"{p50:.2f}", "write_latency_p99_ms": f"{p99:.2f}",
                  "disk_guard": self.disk_guard_message, "error": self.error_message, **cameras}
        if self.disk_guard_message or self.error_message:
            return "ERROR", self.disk_guard_message or self.error_message, values
        if dropped_now:
            return "WARN", f"recording {episode.task_id!r}: {dropped_now} messages dropped (queue full)", values
        if episode:
            return "OK", f"recording {episode.task_id!r} into {episode.bag_dir}", values
        return "OK", "idle (waiting for a task to record)", values

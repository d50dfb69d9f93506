"""Recorder core, writer and reader without ROS processes: episodes, splits, drops, disk guard, SIGKILL-like
truncation, corrupt files, parameters. Messages are serialized with rclpy's own serializer (real CDR)."""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import Image, JointState

from vla_jepa_interfaces.msg import ActionChunk, TaskStatus
from vla_jepa_ros.recording import BagReadError, EpisodeReader, Recorder, RecorderConfig, repair_episode
from vla_jepa_ros.recording import recorder as recorder_module
from vla_jepa_ros.recording.config import parse_topic
from vla_jepa_ros.recording.typestore import interface_msg_dir, make_typestore
from vla_jepa_ros.recording.writer import EpisodeWriter

FRONT, WRIST, JOINTS, CHUNK, STATUS = ("/cameras/front/image_raw", "/cameras/wrist/image_raw", "/franka/joint_states",
                                       "/vla/action_chunk", "/vla/task_status")
TOPICS = (f"{FRONT}:sensor_msgs/msg/Image", f"{WRIST}:sensor_msgs/msg/Image", f"{JOINTS}:sensor_msgs/msg/JointState",
          f"{CHUNK}:vla_jepa_interfaces/msg/ActionChunk", f"{STATUS}:vla_jepa_interfaces/msg/TaskStatus")
RNG = np.random.default_rng(0)
T0_NS = 5_000_000_000


def image_bytes(i: int, size: int = 224) -> bytes:
    img = Image(height=size, width=size, encoding="rgb8", step=size * 3,
                data=RNG.integers(0, 255, size * size * 3, dtype=np.uint8).tobytes())
    img.header.frame_id = f"frame{i}"
    return serialize_message(img)


def joints_bytes(i: int) -> bytes:
    return serialize_message(JointState(name=[f"j{k}" for k in range(7)], position=[0.1 * i] * 7))


def status_bytes(state: int, task_id: str = "task-1", record: bool = True, instruction: str = "pick the cube") -> bytes:
    return serialize_message(TaskStatus(task_id=task_id, instruction=instruction, state=state, record=record,
                                        message=f"state {state}"))


def make_recorder(tmp_path: Path, **overrides) -> tuple[Recorder, list]:
    logs: list = []
    config = RecorderConfig(**{"topics": TOPICS, "output_dir": str(tmp_path / "bags"), "min_free_disk_mb": 0.0,
                               **overrides})
    return Recorder(config, log=lambda level, msg: logs.append((level, msg))), logs


def wait_until(predicate, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_custom_type_hashes_match_rosidl():
    store = make_typestore()
    share = interface_msg_dir()
    for msg in sorted(share.glob("*.msg")):
        generated = share / f"{msg.stem}.json"
        if not generated.exists():
            pytest.skip(f"no rosidl type description next to {msg} (running from the sources)")
        expected = json.loads(generated.read_text())["type_hashes"][0]["hash_string"]
        assert store.hash_rihs01(f"vla_jepa_interfaces/msg/{msg.stem}") == expected, msg.stem


def test_episode_round_trip_bytes_counts_metadata(tmp_path):
    rec, logs = make_recorder(tmp_path)
    rec.start()
    sent: dict[str, list[bytes]] = {FRONT: [], WRIST: [], JOINTS: [], CHUNK: []}
    rec.on_message(STATUS, T0_NS, status_bytes(TaskStatus.RUNNING))
    for i in range(20):
        for topic in (FRONT, WRIST):
            sent[topic].append(image_bytes(i))
            rec.on_message(topic, T0_NS + i * 33_000_000, sent[topic][-1])
        for k in range(3):
            sent[JOINTS].append(joints_bytes(i * 3 + k))
            rec.on_message(JOINTS, T0_NS + i * 33_000_000 + k * 10_000_000, sent[JOINTS][-1])
        if i % 5 == 0:
            sent[CHUNK].append(serialize_message(ActionChunk(task_id="task-1", model_id="tiny-test@1", horizon=7)))
            rec.on_message(CHUNK, T0_NS + i * 33_000_000 + 1, sent[CHUNK][-1])
    rec.on_message(STATUS, T0_NS + 10**9, status_bytes(TaskStatus.RUNNING))  # republished: ignored as a trigger
    rec.on_message(STATUS, T0_NS + 2 * 10**9, status_bytes(TaskStatus.SUCCEEDED))
    rec.on_message(STATUS, T0_NS + 3 * 10**9, status_bytes(TaskStatus.SUCCEEDED))  # after the end: not recorded
    rec.on_message(FRONT, T0_NS + 3 * 10**9, image_bytes(99))  # between episodes: not recorded
    wait_until(lambda: rec.last_episode is not None)
    rec.close()

    bag = tmp_path / "bags" / "task-1"
    with EpisodeReader(bag) as reader:
        assert not reader.truncated
        got = {t: [bytes(d) for _, _, d in reader.messages([t], raw=True)] for t in sent}
        assert got == sent  # same count, same bytes, same order
        statuses = [(s, m.state) for _, s, m in reader.messages([STATUS])]
        assert statuses == [(T0_NS, 1), (T0_NS + 10**9, 1), (T0_NS + 2 * 10**9, 2)]
        # decoded with the definitions stored in the bag; and the raw bytes decode with rclpy too
        _, _, first = next(reader.messages([FRONT]))
        assert first.header.frame_id == "frame0" and first.data.shape == (224 * 224 * 3,)
        raw = next(reader.messages([JOINTS], raw=True))[2]
        assert list(deserialize_message(raw, JointState).position) == [0.0] * 7
        meta = reader.metadata
    assert meta["task_id"] == "task-1" and meta["instruction"] == "pick the cube"
    assert meta["outcome"] == "SUCCEEDED" and meta["recording_status"] == "complete"
    assert meta["model_id"] == "tiny-test@1" and meta["camera_names"] == ["front", "wrist"]
    assert meta["message_counts"] == {FRONT: 20, WRIST: 20, JOINTS: 60, CHUNK: 4, STATUS: 3}
    assert meta["dropped_total"] == 0 and meta["start_time_ns"] == T0_NS and meta["end_time_ns"] == T0_NS + 2 * 10**9
    assert meta["config"]["topics"] == list(TOPICS)
    # rosbag2 metadata.yaml (ros2 bag info, Foxglove) and the same episode metadata inside the MCAP file
    info = yaml.safe_load((bag / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert info["version"] == 9 and info["storage_identifier"] == "mcap" and info["message_count"] == 107
    assert info["relative_file_paths"] == ["task-1_0.mcap"] and "&id" not in (bag / "metadata.yaml").read_text()
    assert json.loads(info["custom_data"]["vla_jepa.episode"])["outcome"] == "SUCCEEDED"
    from mcap.reader import make_reader
    with open(bag / "task-1_0.mcap", "rb") as f:
        mcap = make_reader(f)
        record = next(mcap.iter_metadata())
        assert record.name == "rosbag2"
        embedded = yaml.safe_load(record.metadata["serialized_metadata"])
        assert json.loads(embedded["custom_data"]["vla_jepa.episode"])["model_id"] == "tiny-test@1"
    # rosbags' own reader agrees
    from rosbags.highlevel import AnyReader
    with AnyReader([bag]) as any_reader:
        assert any_reader.message_count == 107
    assert any("closed: outcome SUCCEEDED" in m for _, m in logs)


def test_split_by_size_and_duration(tmp_path):
    rec, _ = make_recorder(tmp_path, max_bag_size_mb=1.0, max_bag_duration_s=2.0, record_all_tasks=True)
    rec.start()
    rec.on_message(STATUS, T0_NS, status_bytes(TaskStatus.RUNNING, record=False))
    frames = [image_bytes(i) for i in range(30)]  # ~150 kB each: 1 MB files hold ~7
    for i, data in enumerate(frames):
        rec.on_message(FRONT, T0_NS + i * 1_000_000, data)
    for i in range(5):  # 1 message/s: the duration limit splits every 2 s
        rec.on_message(JOINTS, T0_NS + 10**9 * (i + 1), joints_bytes(i))
    rec.on_message(STATUS, T0_NS + 10**10, status_bytes(TaskStatus.FAILED, record=False))
    wait_until(lambda: rec.last_episode is not None)
    rec.close()
    reader = EpisodeReader(tmp_path / "bags" / "task-1")
    assert len(reader.files) >= 6 and all(p.stat().st_size < 1.3e6 for p in reader.files)
    assert [bytes(d) for _, _, d in reader.messages([FRONT], raw=True)] == frames
    assert reader.message_counts[JOINTS] == 5 and reader.metadata["outcome"] == "FAILED"
    info = yaml.safe_load((reader.bag_dir / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert info["relative_file_paths"] == [p.name for p in reader.files]
    assert sum(f["message_count"] for f in info["files"]) == info["message_count"] == 37


def test_unrecorded_tasks_and_superseded_episode(tmp_path):
    rec, _ = make_recorder(tmp_path)
    rec.start()
    rec.on_message(STATUS, T0_NS, status_bytes(TaskStatus.RUNNING, "no-record", record=False))
    rec.on_message(STATUS, T0_NS + 1, status_bytes(TaskStatus.CANCELED, "no-record", record=False))
    rec.on_message(STATUS, T0_NS + 2, status_bytes(TaskStatus.RUNNING, "a"))
    rec.on_message(FRONT, T0_NS + 3, image_bytes(0))
    rec.on_message(STATUS, T0_NS + 4, status_bytes(TaskStatus.RUNNING, "b"))  # a's end was never seen
    rec.on_message(STATUS, T0_NS + 5, status_bytes(TaskStatus.RUNNING, "b"))
    rec.close()  # SIGINT while b runs
    bags = tmp_path / "bags"
    assert sorted(p.name for p in bags.iterdir()) == ["a", "b"]
    a, b = EpisodeReader(bags / "a"), EpisodeReader(bags / "b")
    assert a.metadata["recording_status"] == "superseded" and a.message_counts[FRONT] == 1
    assert b.metadata["recording_status"] == "interrupted" and b.metadata["outcome"] == ""
    assert b.message_counts[STATUS] == 2  # closed cleanly: not truncated


def test_drops_are_counted_never_silent(tmp_path):
    rec, logs = make_recorder(tmp_path, queue_size=5)
    rec.output_dir.mkdir(parents=True)
    # writer thread not started yet: the queue fills; status messages still get in
    assert rec.on_message(STATUS, T0_NS, status_bytes(TaskStatus.RUNNING))
    accepted = [rec.on_message(JOINTS, T0_NS + i, joints_bytes(i)) for i in range(12)]
    assert accepted == [True] * 5 + [False] * 7 and rec.dropped[JOINTS] == 7
    level, message, values = rec.diagnostics()
    assert values["dropped_total"] == "7"
    rec.start()
    wait_until(lambda: rec.episode is not None and rec.written >= 6)
    rec.on_message(STATUS, T0_NS + 100, status_bytes(TaskStatus.SUCCEEDED))
    wait_until(lambda: rec.last_episode is not None)
    rec.close()
    meta = rec.last_episode
    # the 7 drops happened before the episode opened (its status was queued first but processed later)
    assert meta["message_counts"][JOINTS] == 5
    rec2, logs = make_recorder(tmp_path / "second", queue_size=3)
    rec2.start()
    rec2.on_message(STATUS, T0_NS, status_bytes(TaskStatus.RUNNING))
    wait_until(lambda: rec2.episode is not None)
    with rec2._queue._cond:  # hold the writer thread off while a burst arrives
        results = [rec2.on_message(FRONT, T0_NS + i, image_bytes(i, 8)) for i in range(10)]
        rec2._queue._cond.notify()
    level, message, values = rec2.diagnostics()
    assert results.count(False) == 7 and level == "WARN" and "7 messages dropped" in message
    rec2.on_message(STATUS, T0_NS + 100, status_bytes(TaskStatus.SUCCEEDED))
    wait_until(lambda: rec2.last_episode is not None)
    rec2.close()
    assert rec2.last_episode["dropped_counts"][FRONT] == 7 and rec2.last_episode["dropped_total"] == 7
    assert logs[-1][0] == "warning" and "7 dropped" in logs[-1][1]
    assert rec2.last_episode["message_counts"][FRONT] == 3

    rec3, _ = make_recorder(tmp_path / "third", queue_size=100, queue_max_mb=1.0)  # the byte bound
    rec3.output_dir.mkdir(parents=True)
    frame = image_bytes(0)  # 150 kB: 6 fit into 1 MB
    assert [rec3.on_message(FRONT, T0_NS + i, frame) for i in range(8)] == [True] * 6 + [False] * 2
    assert rec3.dropped[FRONT] == 2


def test_disk_guard_refuses_and_stops_with_status(tmp_path, monkeypatch):
    rec, logs = make_recorder(tmp_path, min_free_disk_mb=1e12)  # more than any disk has free
    rec.start()
    rec.on_message(STATUS, T0_NS, status_bytes(TaskStatus.RUNNING, "big"))
    rec.on_message(FRONT, T0_NS + 1, image_bytes(0))
    wait_until(lambda: rec.disk_guard_message != "")
    level, message, _ = rec.diagnostics()
    assert level == "ERROR" and "task 'big' not recorded" in message and "min_free_disk_mb=1000000000000" in message
    assert not (tmp_path / "bags" / "big").exists() and any(lvl == "error" for lvl, _ in logs)
    rec.close()

    # mid-episode: the guard trips at a flush, closes a readable bag, and the outcome still arrives later
    free = {"mb": 1e9}
    monkeypatch.setattr(recorder_module, "free_disk_mb", lambda path: free["mb"])
    rec, logs = make_recorder(tmp_path / "b", min_free_disk_mb=500.0, flush_period_s=0.05, metadata_period_s=0.05)
    rec.start()
    rec.on_message(STATUS, T0_NS, status_bytes(TaskStatus.RUNNING, "t"))
    for i in range(5):
        rec.on_message(FRONT, T0_NS + i, image_bytes(i))
    wait_until(lambda: rec.written >= 6)
    free["mb"] = 400.0
    wait_until(lambda: rec.disk_guard_message != "")
    rec.on_message(FRONT, T0_NS + 10, image_bytes(10))
    rec.on_message(STATUS, T0_NS + 20, status_bytes(TaskStatus.SUCCEEDED, "t"))
    wait_until(lambda: rec.last_episode is not None)
    rec.close()
    reader = EpisodeReader(tmp_path / "b" / "bags" / "t")  # closed cleanly: not truncated
    meta = reader.metadata
    assert meta["recording_status"] == "stopped_disk_guard" and "400 MB free" in meta["status_message"]
    assert meta["outcome"] == "SUCCEEDED" and meta["not_recorded_after_stop"] == 2
    assert reader.message_counts[FRONT] == 5


def _write_unclosed_bag(tmp_path: Path, n_flushed: int, n_pending: int) -> Path:
    """A bag as a SIGKILL leaves it: metadata.yaml from the last periodic write, last file without summary."""
    specs = RecorderConfig(topics=TOPICS).topic_specs
    writer = EpisodeWriter(tmp_path / "killed", specs, make_typestore()).open()
    for i in range(n_flushed):
        writer.write(FRONT, T0_NS + i, image_bytes(i, 16))
    writer.flush()
    writer.write_metadata({})
    for i in range(n_pending):  # still in the pending chunk when "killed"
        writer.write(FRONT, T0_NS + 1000 + i, image_bytes(i, 16))
    writer._file.bio.flush()
    (tmp_path / "killed" / "episode.yaml").write_text(yaml.safe_dump({"task_id": "killed",
                                                                      "recording_status": "recording"}))
    return tmp_path / "killed"


def test_killed_bag_reads_up_to_last_flush_and_repairs(tmp_path):
    bag = _write_unclosed_bag(tmp_path, n_flushed=10, n_pending=3)
    with pytest.raises(BagReadError, match=r"killed_0\.mcap: truncated"):
        EpisodeReader(bag)
    reader = EpisodeReader(bag, allow_truncated=True)
    assert reader.truncated and reader.message_counts[FRONT] == 10
    # a tail cut in the middle of a chunk is the same as a kill during a write
    data = (bag / "killed_0.mcap").read_bytes()
    (bag / "killed_0.mcap").write_bytes(data[: len(data) - 50])
    assert EpisodeReader(bag, allow_truncated=True).message_counts[FRONT] == 10
    meta = repair_episode(bag)
    assert meta["recording_status"] == "recovered" and meta["message_counts"][FRONT] == 10
    clean = EpisodeReader(bag)
    assert not clean.truncated and clean.message_counts[FRONT] == 10
    from rosbags.highlevel import AnyReader
    with AnyReader([bag]) as any_reader:
        assert any_reader.message_count == 10
    # the recorder repairs leftovers at start
    bag2 = _write_unclosed_bag(tmp_path / "x", n_flushed=4, n_pending=1)
    (tmp_path / "bags2").mkdir()
    shutil.move(bag2, tmp_path / "bags2" / "killed")
    rec, logs = make_recorder(tmp_path, output_dir=str(tmp_path / "bags2"))
    assert rec.repair_leftovers() == [tmp_path / "bags2" / "killed"]
    assert EpisodeReader(tmp_path / "bags2" / "killed").message_counts[FRONT] == 4


def test_bag_info_repair_marks_the_bag_and_skips_files_that_are_not_bags(tmp_path, capsys):
    """`vla-jepa bag-info bags/* --repair`: a cut-short bag is rewritten and marked repaired (not a full
    demonstration, whatever its outcome); collect_summary.json and other non-bags are skipped with a note."""
    from vla_jepa_ros.recording.__main__ import main as bag_info

    bag = _write_unclosed_bag(tmp_path / "bags", n_flushed=6, n_pending=2)
    meta = yaml.safe_load((bag / "episode.yaml").read_text())
    (bag / "episode.yaml").write_text(yaml.safe_dump({**meta, "outcome": "SUCCEEDED"}))
    (tmp_path / "bags" / "collect_summary.json").write_text("{}")
    (tmp_path / "bags" / "notes").mkdir()
    paths = sorted(str(p) for p in (tmp_path / "bags").iterdir())
    assert bag_info([*paths, "--repair"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert f"{tmp_path / 'bags' / 'collect_summary.json'}: not an episode bag, skipped" in out
    assert f"{tmp_path / 'bags' / 'notes'}: not an episode bag, skipped" in out
    line = next(o for o in out if o.startswith(f"{bag}:"))
    assert "outcome SUCCEEDED recording recovered REPAIRED (cut short: not a full demonstration)" in line
    meta = EpisodeReader(bag).metadata
    assert meta["repaired"] is True and meta["message_counts"][FRONT] == 6 and meta["repaired_at"]
    assert bag_info([str(tmp_path / "nope")]) == 1  # a missing path is still an error


def test_corrupt_and_missing_bags_name_the_file(tmp_path):
    rec, _ = make_recorder(tmp_path)
    rec.start()
    rec.on_message(STATUS, T0_NS, status_bytes(TaskStatus.RUNNING))
    for i in range(10):
        rec.on_message(JOINTS, T0_NS + i, joints_bytes(i))
    rec.on_message(STATUS, T0_NS + 99, status_bytes(TaskStatus.SUCCEEDED))
    wait_until(lambda: rec.last_episode is not None)
    rec.close()
    bag = tmp_path / "bags" / "task-1"
    path = bag / "task-1_0.mcap"
    data = bytearray(path.read_bytes())
    data[40:400] = b"\xff" * 360  # garbage over the first records
    path.write_bytes(bytes(data))
    with pytest.raises(BagReadError, match=r"task-1_0\.mcap: corrupt MCAP near byte"):
        list(EpisodeReader(bag).messages())
    path.write_bytes(b"not an mcap file at all")
    with pytest.raises(BagReadError, match=r"task-1_0\.mcap: not an MCAP file"):
        EpisodeReader(bag)
    with pytest.raises(BagReadError, match=r"nope: no such bag"):
        EpisodeReader(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BagReadError, match=r"empty: no \.mcap files"):
        EpisodeReader(tmp_path / "empty")


@pytest.mark.parametrize("overrides, message", [
    ({"topics": ("/cameras/front/image_raw",)}, "'/cameras/front/image_raw' must be 'NAME:TYPE'"),
    ({"topics": ("cameras/front:sensor_msgs/msg/Image",)}, "'cameras/front' is not an absolute ROS topic name"),
    ({"topics": ("/a:sensor_msgs/Image",)}, "type 'sensor_msgs/Image' must look like 'pkg/msg/Type'"),
    ({"topics": ("/a:sensor_msgs/msg/Image:fast",)}, "qos 'fast' must be one of"),
    ({"topics": ("/a:std_msgs/msg/String", "/a:std_msgs/msg/String")}, r"lists \['/a'\] more than once"),
    ({"topics": ()}, "topics is empty"),
    ({"max_bag_size_mb": -1.0}, "max_bag_size_mb=-1.0 must be >= 0"),
    ({"max_bag_size_mb": 0.5}, "max_bag_size_mb=0.5 must be 0"),
    ({"max_bag_duration_s": 0.2}, "max_bag_duration_s=0.2 must be 0"),
    ({"queue_size": 0}, r"queue_size=0 must be in \[1, 1000000\]"),
    ({"queue_max_mb": 0.5}, r"queue_max_mb=0.5 must be in \[1, 65536\]"),
    ({"flush_period_s": 30.0}, r"flush_period_s=30.0 must be in \[0.01, 10\]"),
    ({"metadata_period_s": 0.1}, "metadata_period_s=0.1 must be in"),
    ({"min_free_disk_mb": -5.0}, "min_free_disk_mb=-5.0 must be >= 0"),
    ({"compression": "gzip"}, "compression='gzip' must be one of zstd, lz4, none"),
    ({"compression_level": 25}, r"compression_level=25 must be 0 \(the default\) or in \[1, 19\] for zstd"),
    ({"compression": "none", "compression_level": 3}, r"compression_level=3 must be 0 \(the default\) or in"),
])
def test_bad_config_refused_naming_the_value(overrides, message):
    with pytest.raises(ValueError, match=message):
        RecorderConfig(**overrides)


def test_unknown_message_type_refused(tmp_path):
    with pytest.raises(ValueError, match=r"unknown message type\(s\) \['my_pkg/msg/Thing'\]"):
        make_recorder(tmp_path, topics=("/x:my_pkg/msg/Thing",))


def test_topic_spec_qos_and_cameras():
    assert parse_topic(f"{FRONT}:sensor_msgs/msg/Image").resolved_qos == "best_effort"
    assert parse_topic(f"{STATUS}:vla_jepa_interfaces/msg/TaskStatus").resolved_qos == "transient_local"
    assert parse_topic(f"{JOINTS}:sensor_msgs/msg/JointState").resolved_qos == "reliable"
    assert parse_topic(f"{JOINTS}:sensor_msgs/msg/JointState:best_effort").resolved_qos == "best_effort"
    assert RecorderConfig().camera_names == ("front", "wrist")

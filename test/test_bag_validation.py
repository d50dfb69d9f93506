"""Recorded bags checked by readers that did not write them: Foxglove's TypeScript MCAP stack (@mcap/core +
@foxglove/rosmsg2-serialization through node, tools/mcap_check) verifies every chunk, data-section and summary
CRC (present and correct), decompresses the chunks and decodes every message from the schemas stored in the
file; rosbags' AnyReader reads the same bags. Log times are the wall clock of the recording, sim time stays in
the headers and in the /clock samples."""
from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from rclpy.serialization import serialize_message
from rosgraph_msgs.msg import Clock
from geometry_msgs.msg import PoseStamped
from sensor_msgs.msg import Image

from vla_jepa_ros.recording import EpisodeReader, RecorderConfig
from vla_jepa_ros.recording.typestore import make_typestore
from vla_jepa_ros.recording.writer import EpisodeWriter

ROOT = Path(__file__).resolve().parents[1]
CHECK = ROOT / "tools" / "mcap_check" / "check_mcap.mjs"
FRONT, WRIST, POSE = "/cameras/front/image_raw", "/cameras/wrist/image_raw", "/franka/ee_pose"
SIM_T0_S = 500  # the test's /clock starts here


def foxglove_check(files: list[Path]) -> list[dict]:
    """Run tools/mcap_check on `files`; one summary per file. Fails the test with the checker's message."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: the independent (TypeScript) MCAP check cannot run")
    if not (CHECK.parent / "node_modules" / "@mcap" / "core").is_dir():
        pytest.fail(f"{CHECK.parent}/node_modules is missing: run `make install` (npm ci of the pinned packages)")
    done = subprocess.run([node, str(CHECK), *map(str, files)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"Foxglove MCAP check failed: {done.stderr.strip()}"
    return [json.loads(line) for line in done.stdout.splitlines()]


def cdr(msg) -> bytes:
    """rclpy's serialization padded to 4 bytes, as DDS delivers it (and rosbags expects)."""
    data = serialize_message(msg)
    return data + bytes(-len(data) % 4)


def pose(i: int, stamp_s: float) -> PoseStamped:
    msg = PoseStamped()
    msg.pose.position.x = float(i)
    msg.header.stamp.sec, msg.header.stamp.nanosec = int(stamp_s), int(round((stamp_s % 1) * 1e9))
    return msg


def image(i: int, stamp_s: float, size: int = 224) -> Image:
    msg = Image(height=size, width=size, encoding="rgb8", step=size * 3)
    rng = np.random.default_rng(i)  # a gradient with noise: compresses like a picture, not like zeros
    base = np.add.outer(np.arange(size), np.arange(size)).astype(np.uint8)[..., None].repeat(3, axis=2)
    msg.data = (base + rng.integers(0, 8, base.shape, dtype=np.uint8)).tobytes()
    msg.header.stamp.sec, msg.header.stamp.nanosec = int(stamp_s), int(round((stamp_s % 1) * 1e9))
    msg.header.frame_id = f"frame{i}"
    return msg


@pytest.mark.parametrize("compression", ["zstd", "lz4", "none"])
def test_every_compression_writes_checked_crcs(tmp_path, compression):
    specs = RecorderConfig(topics=(f"{FRONT}:sensor_msgs/msg/Image", f"{POSE}:geometry_msgs/msg/PoseStamped"),
                           compression=compression).topic_specs
    writer = EpisodeWriter(tmp_path / "bag", specs, make_typestore(), compression=compression).open()
    t0 = time.time_ns()
    for i in range(40):  # ~150 kB frames: several chunks
        writer.write(FRONT, t0 + i, cdr(image(i, SIM_T0_S + i / 30)), t0 + i - 5, i, ros_time_ns=i)
        writer.write(POSE, t0 + i, cdr(pose(i, SIM_T0_S + i / 30)), ros_time_ns=i)
    writer.flush()  # a flushed chunk, then more records: several chunks, CRCs over each
    writer.write(POSE, t0 + 99, cdr(pose(99, SIM_T0_S + 3)))
    writer.close({})
    files = sorted((tmp_path / "bag").glob("*.mcap"))
    from mcap.stream_reader import StreamReader

    with open(files[0], "rb") as f:
        chunks = [r for r in StreamReader(f, emit_chunks=True).records if type(r).__name__ == "Chunk"]
    with open(files[0], "rb") as f:  # mcap's Python reader validates the CRCs too (lz4 included)
        assert len(list(StreamReader(f, validate_crcs=True).records)) > 120
    assert len(chunks) >= 3 and all(c.uncompressed_crc != 0 for c in chunks)
    assert {c.compression for c in chunks} == {"" if compression == "none" else compression}
    (summary,) = foxglove_check(files)
    assert summary["profile"] == "ros2" and summary["compressions"] == [compression]
    assert summary["topics"][FRONT]["count"] == 40 and summary["topics"]["/clock"]["count"] == 40
    assert summary["first_stamp_ns"][FRONT] == str(SIM_T0_S * 10**9)
    assert summary["first_stamp_ns"]["/clock"] == "0"
    assert summary["log_time_ns"] == [str(t0), str(t0 + 99)]
    assert summary["publish_time_ns"] == [str(t0 - 5), str(t0 + 99)]
    from rosbags.highlevel import AnyReader

    with AnyReader([tmp_path / "bag"]) as reader:
        decoded = [reader.deserialize(raw, conn.msgtype) for conn, _, raw in reader.messages()]
    assert len(decoded) == 40 + 41 + 40  # frames, poses, clock samples (one per new sim time)


@pytest.mark.slow
def test_recorded_episode_passes_foxglove_checks_with_wall_clock_log_times(tmp_path):
    from .test_recorder_graph import BEST_EFFORT, Graph

    with Graph(tmp_path, graph="sim", max_bag_size_mb=2.0, flush_period_s=0.1) as g:
        clock_pub = g.client.node.create_publisher(Clock, "/clock", 10)
        stop_clock = threading.Event()
        sim_t0 = time.monotonic()

        def sim_now() -> float:  # sim time runs at wall speed from SIM_T0_S
            return SIM_T0_S + time.monotonic() - sim_t0

        def tick():
            while not stop_clock.is_set():
                t = sim_now()
                clock_pub.publish(Clock(clock=Time(sec=int(t), nanosec=int((t % 1) * 1e9))))
                time.sleep(0.005)
        threading.Thread(target=tick, daemon=True).start()
        try:
            pubs = {FRONT: g.publisher(Image, FRONT, BEST_EFFORT), WRIST: g.publisher(Image, WRIST, BEST_EFFORT),
                    POSE: g.publisher(PoseStamped, POSE)}
            wall_start_ns = time.time_ns()
            task_id = g.start_task()
            g.wait_episode(task_id, "recording")
            for i in range(45):  # 1.5 s of two 224x224 cameras at 30 Hz and poses at 90 Hz
                for topic in (FRONT, WRIST):
                    pubs[topic].publish(image(i, sim_now()))
                for k in range(3):
                    pubs[POSE].publish(pose(3 * i + k, sim_now()))
                time.sleep(1 / 30)
            time.sleep(0.3)
            from std_srvs.srv import SetBool

            assert g.client.call(SetBool, "/vla/finish_task", SetBool.Request(data=True)).success
            meta = g.wait_episode(task_id, "complete")
            wall_end_ns = time.time_ns()
        finally:
            stop_clock.set()

    bag = g.out / task_id
    files = EpisodeReader(bag).files
    assert len(files) >= 2, "90 frames of 150 kB with max_bag_size_mb=2 must split"
    summaries = foxglove_check(files)
    counts: dict[str, int] = {}
    for s in summaries:
        assert s["profile"] == "ros2" and s["compressions"] == ["zstd"] and s["chunks"] == s["chunk_indexes"]
        assert "serialized_metadata" in s["metadata"]["rosbag2"]
        assert all(h.startswith("RIHS01_") for h in s["topic_type_hashes"].values())
        log_lo, log_hi = map(int, s["log_time_ns"])
        pub_lo, pub_hi = map(int, s["publish_time_ns"])
        assert wall_start_ns <= log_lo <= log_hi <= wall_end_ns, "log times are not the wall clock of the recording"
        assert wall_start_ns - 10**9 <= pub_lo <= pub_hi <= wall_end_ns, "publish times are not the send times"
        assert int(s["first_stamp_ns"]["/clock"]) >= SIM_T0_S * 10**9  # each file carries its own sim clock
        for topic, entry in s["topics"].items():
            counts[topic] = counts.get(topic, 0) + entry["count"]
    assert counts == {t: n for t, n in meta["message_counts"].items() if n}  # topics with messages
    assert counts[FRONT] >= 40 and counts[POSE] >= 120

    from rosbags.highlevel import AnyReader

    with AnyReader([bag]) as reader:
        assert reader.message_count == sum(counts.values())
        for conn, log_ns, raw in reader.messages():
            reader.deserialize(raw, conn.msgtype)
            assert wall_start_ns <= log_ns <= wall_end_ns
    # the ROS clock at reception (sim time) comes back from the /clock samples; headers keep their sim stamps
    reader = EpisodeReader(bag)
    lags_s = [(ros_ns - (m.header.stamp.sec * 10**9 + m.header.stamp.nanosec)) / 1e9
              for _, ros_ns, m in reader.messages([FRONT, WRIST], ros_time=True)]
    # (the recorder's sim clock is the last /clock it got: up to a tick behind the publisher's stamp)
    assert len(lags_s) == counts[FRONT] + counts[WRIST] and -0.05 < min(lags_s) and max(lags_s) < 1.0, lags_s
    assert SIM_T0_S * 10**9 <= meta["start_time_ns"] < meta["end_time_ns"] < (SIM_T0_S + 60) * 10**9
    assert meta["clock"] == "sim"


def test_repaired_bag_passes_the_same_checks_with_times_kept(tmp_path):
    """A bag cut short (no summary, a partial chunk) repaired by repair_episode: CRCs present and correct again,
    log and publish times, sequence numbers and the /clock samples of the kept chunks unchanged."""
    import yaml

    from vla_jepa_ros.recording import repair_episode

    specs = RecorderConfig(topics=(f"{FRONT}:sensor_msgs/msg/Image",)).topic_specs
    writer = EpisodeWriter(tmp_path / "bag", specs, make_typestore()).open()
    t0 = time.time_ns()
    for i in range(25):
        if i == 20:
            writer.flush()  # frames 20.. stay in the pending chunk: lost with the "kill"
        writer.write(FRONT, t0 + i, cdr(image(i, SIM_T0_S + i)), t0 + i - 7, 100 + i, ros_time_ns=i * 10**9)
    writer._file.bio.flush()  # SIGKILL: the file ends after the last complete chunk and part of the next
    (tmp_path / "bag" / "episode.yaml").write_text(yaml.safe_dump({"outcome": "SUCCEEDED",
                                                                   "recording_status": "recording"}))
    meta = repair_episode(tmp_path / "bag")
    assert meta["repaired"] is True
    (summary,) = foxglove_check(sorted((tmp_path / "bag").glob("*.mcap")))
    assert summary["topics"][FRONT]["count"] == 20 and summary["topics"]["/clock"]["count"] == 20
    assert summary["log_time_ns"] == [str(t0), str(t0 + 19)]
    assert summary["publish_time_ns"] == [str(t0 - 7), str(t0 + 19)]
    records = list(EpisodeReader(tmp_path / "bag").records([FRONT]))
    assert [r.sequence for _, _, r in records] == list(range(100, 120))
    assert [ns for _, ns, _ in EpisodeReader(tmp_path / "bag").messages([FRONT], ros_time=True)] == [
        i * 10**9 for i in range(20)]

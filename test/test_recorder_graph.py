"""recorder in its own process (Bringup, real DDS), fed from this test process: bytes and counts read back,
wall-clock log times with sim receive times from /clock samples, splits, SIGKILL leaves a readable bag, disk guard, drops under load, bad parameters."""
from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rclpy.serialization import serialize_message
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Image, JointState
from std_srvs.srv import SetBool, Trigger

from vla_jepa_interfaces.msg import ActionChunk, TaskStatus
from vla_jepa_interfaces.srv import ExecuteTask
from vla_jepa_ros.bringup import Bringup
from vla_jepa_ros.recording import EpisodeReader, repair_episode

from .rosutil import RosClient

pytestmark = pytest.mark.slow
FRONT, WRIST, JOINTS, CHUNK, STATUS = ("/cameras/front/image_raw", "/cameras/wrist/image_raw", "/franka/joint_states",
                                       "/vla/action_chunk", "/vla/task_status")
SIM_T0_S = 1000  # the test's /clock starts here: ROS receive times must be sim time, log times wall time
SIGKILL_MAX_LAG_S = 1.0  # everything published earlier than this before a SIGKILL must be readable
BEST_EFFORT = QoSProfile(depth=10, reliability=ReliabilityPolicy.BEST_EFFORT)


def image(i: int) -> Image:
    msg = Image(height=224, width=224, encoding="rgb8", step=224 * 3)
    msg.data = np.random.default_rng(i).integers(0, 255, 224 * 224 * 3, dtype=np.uint8).tobytes()
    msg.header.frame_id = f"frame{i}"
    return msg


def joints(i: int, stamp_s: float = 0.0) -> JointState:
    msg = JointState(name=[f"fr3_joint{k}" for k in range(1, 8)], position=[float(i)] * 7)
    msg.header.stamp.sec, msg.header.stamp.nanosec = int(stamp_s), int((stamp_s % 1) * 1e9)
    return msg


def unpadded(received: bytes, published_len: int) -> bytes:
    """DDS carries a serialized payload padded with zeros to a multiple of 4 bytes (rosbag2 records it the
    same way); strip exactly that padding, nothing else."""
    pad = received[published_len:]
    assert len(received) % 4 == 0 and len(pad) < 4 and pad == bytes(len(pad)), (len(received), published_len)
    return received[:published_len]


class Graph:
    """task_manager + recorder in their own processes, a RosClient here."""

    def __init__(self, tmp_path: Path, graph: str = "franka", **recorder_params) -> None:
        self.out = tmp_path / "bags"
        params = {"output_dir": str(self.out), "min_free_disk_mb": 0.0, **recorder_params}
        self.bringup = Bringup(graph, nodes=["task_manager", "recorder"], log_dir=tmp_path / "logs",
                               extra_params={"recorder": params, "task_manager": {"status_rate_hz": 10.0}})

    def __enter__(self) -> "Graph":
        self.bringup.start()
        self.client = RosClient()
        self.client.call(Trigger, "/vla/stop", Trigger.Request(), timeout_s=20)  # task_manager is up
        return self

    def __exit__(self, *exc) -> None:
        self.client.close()
        self.bringup.stop()
        log = (self.bringup.log_dir / "recorder.log").read_text()
        assert "Traceback" not in log, self.bringup.log_tail("recorder", 40)

    def publisher(self, msg_type, topic: str, qos=10):
        pub = self.client.node.create_publisher(msg_type, topic, qos)
        self.client.wait_for(lambda: pub.get_subscription_count() > 0, 20, f"the recorder subscribing {topic}")
        return pub

    def start_task(self, record: bool = True) -> str:
        res = self.client.call(ExecuteTask, "/vla/execute_task",
                               ExecuteTask.Request(instruction="pick up the red cube", record=record))
        assert res.accepted, res.message
        return res.task_id

    def wait_episode(self, task_id: str, status: str, timeout_s: float = 10.0) -> dict:
        path = self.out / task_id / "episode.yaml"

        def done():
            return path.exists() and (yaml.safe_load(path.read_text()) or {}).get("recording_status") == status
        self.client.wait_for(done, timeout_s, f"{path} with recording_status {status}")
        return yaml.safe_load(path.read_text())


def test_episode_reads_back_same_bytes_counts_sim_time_splits_and_sigint(tmp_path):
    with Graph(tmp_path, graph="sim", max_bag_size_mb=1.0, flush_period_s=0.1) as g:
        clock_pub = g.client.node.create_publisher(Clock, "/clock", 10)
        stop_clock = threading.Event()

        def tick():  # sim time runs at wall speed from SIM_T0_S
            t0 = time.monotonic()
            while not stop_clock.is_set():
                t = SIM_T0_S + time.monotonic() - t0
                clock_pub.publish(Clock(clock=Time(sec=int(t), nanosec=int((t % 1) * 1e9))))
                time.sleep(0.005)
        threading.Thread(target=tick, daemon=True).start()
        try:
            pubs = {FRONT: g.publisher(Image, FRONT, BEST_EFFORT), WRIST: g.publisher(Image, WRIST, BEST_EFFORT),
                    JOINTS: g.publisher(JointState, JOINTS), CHUNK: g.publisher(ActionChunk, CHUNK)}
            for topic in (FRONT, WRIST):  # best effort: the first large sample after matching can be lost
                for _ in range(3):          # in transport; prime the path before anything is recorded
                    pubs[topic].publish(serialize_message(image(99)))
                    time.sleep(0.05)
            wall_start_s = time.time()
            task_id = g.start_task()
            g.wait_episode(task_id, "recording")
            sent: dict[str, list[bytes]] = {t: [] for t in pubs}
            # published as serialized bytes, so "the bytes published" are exactly known (a typed publish
            # serializes again, and CDR alignment padding is not guaranteed to be zeroed)
            for i in range(30):
                for topic in (FRONT, WRIST):
                    sent[topic].append(serialize_message(image(i)))
                    pubs[topic].publish(sent[topic][-1])
                for k in range(3):
                    sent[JOINTS].append(serialize_message(joints(3 * i + k)))
                    pubs[JOINTS].publish(sent[JOINTS][-1])
                if i % 10 == 0:
                    sent[CHUNK].append(serialize_message(
                        ActionChunk(task_id=task_id, model_id="tiny-sim@7", horizon=7, action_dim=7)))
                    pubs[CHUNK].publish(sent[CHUNK][-1])
                time.sleep(0.03)
            time.sleep(0.5)
            assert g.client.call(SetBool, "/vla/finish_task", SetBool.Request(data=True)).success
            meta = g.wait_episode(task_id, "complete")
            g.bringup.check()
            # a second episode still running when the graph gets SIGINT: closed cleanly, not truncated
            second = g.start_task()
            g.wait_episode(second, "recording")
            for i in range(5):
                pubs[JOINTS].publish(sent[JOINTS][i])
            time.sleep(0.3)
        finally:
            stop_clock.set()
    assert g.bringup.procs["recorder"].returncode == 0
    interrupted = EpisodeReader(g.out / second)
    assert not interrupted.truncated and interrupted.metadata["recording_status"] == "interrupted"
    assert interrupted.message_counts[JOINTS] == interrupted.metadata["message_counts"][JOINTS] == 5

    reader = EpisodeReader(g.out / task_id)
    for topic, payloads in sent.items():
        got = [bytes(d) for _, _, d in reader.messages([topic], raw=True)]
        assert len(got) == len(payloads), f"{topic}: {len(got)} recorded, {len(payloads)} published"
        assert [unpadded(g, len(p)) for g, p in zip(got, payloads)] == payloads, topic
    assert len(reader.files) >= 6, "60 images of 150 kB with max_bag_size_mb=1 must split"
    assert all(p.stat().st_size < 1.4e6 for p in reader.files[:-1]), "files beyond the size limit"
    stamps = [s for _, s, _ in reader.messages(raw=True, ros_time=True)]
    assert all(SIM_T0_S * 1e9 <= s < (SIM_T0_S + 60) * 1e9 for s in stamps), "ROS receive times are not sim time"
    wall_s = [s / 1e9 for _, s, _ in reader.messages(raw=True)]
    assert all(wall_start_s <= s <= time.time() for s in wall_s), "log times are not the wall clock"
    states = [m.state for _, _, m in reader.messages([STATUS])]
    assert states[0] == TaskStatus.RUNNING and states[-1] == TaskStatus.SUCCEEDED
    assert meta["outcome"] == "SUCCEEDED" and meta["model_id"] == "tiny-sim@7" and meta["dropped_total"] == 0
    assert meta["message_counts"][FRONT] == 30 and meta["camera_names"] == ["front", "wrist"]
    assert meta["instruction"] == "pick up the red cube" and meta["task_id"] == task_id


def test_sigkill_mid_episode_leaves_a_readable_bag(tmp_path):
    with Graph(tmp_path) as g:
        pub_joints, pub_front = g.publisher(JointState, JOINTS), g.publisher(Image, FRONT, BEST_EFFORT)
        task_id = g.start_task()
        g.wait_episode(task_id, "recording")
        published_at: list[float] = []
        t_end = time.monotonic() + 2.5
        i = 0
        while time.monotonic() < t_end:  # 100 Hz joint states (+ a 30 Hz-ish camera)
            published_at.append(time.time())
            pub_joints.publish(joints(i, published_at[-1]))
            if i % 3 == 0:
                pub_front.publish(image(i))
            i += 1
            time.sleep(0.01)
        t_kill = time.time()
        os.kill(g.bringup.procs["recorder"].pid, signal.SIGKILL)
        g.bringup.procs["recorder"].wait(timeout=5)
        for k in range(10):  # still publishing after the kill: nothing of this can be in the bag
            pub_joints.publish(joints(i + k, time.time()))

    bag = g.out / task_id
    assert (bag / "metadata.yaml").exists() and (bag / "episode.yaml").exists()
    reader = EpisodeReader(bag, allow_truncated=True)
    recorded = [int(m.position[0]) for _, _, m in reader.messages([JOINTS])]
    assert recorded == list(range(recorded[0], recorded[-1] + 1)), "gap in the recorded joint states"
    lag_s = t_kill - published_at[recorded[-1]]
    print(f"\nSIGKILL: {len(recorded)} of {len(published_at)} joint states readable, newest published "
          f"{lag_s * 1000:.0f} ms before the kill")
    assert lag_s < SIGKILL_MAX_LAG_S
    meta = repair_episode(bag)
    clean = EpisodeReader(bag)
    assert not clean.truncated and meta["recording_status"] == "recovered"
    assert clean.message_counts[JOINTS] == len(recorded) and clean.message_counts[FRONT] > 0


def test_disk_guard_refuses_with_clear_status(tmp_path):
    with Graph(tmp_path, min_free_disk_mb=1e12, diagnostics_period_s=0.2) as g:
        diags = g.client.subscribe("/diagnostics", DiagnosticArray)
        g.publisher(JointState, JOINTS)
        task_id = g.start_task()

        def guard_reported():
            return any(s.level == DiagnosticStatus.ERROR and "disk guard" in s.message and task_id in s.message
                       for d in list(diags) for s in d.status)
        g.client.wait_for(guard_reported, 10, "a disk-guard ERROR on /diagnostics")
        g.bringup.check()
    assert not (g.out / task_id).exists()
    log = (tmp_path / "logs" / "recorder.log").read_text()
    assert f"task '{task_id}' not recorded" in log and "min_free_disk_mb=1000000000000" in log


def test_drops_under_load_are_counted(tmp_path):
    with Graph(tmp_path, queue_size=1, diagnostics_period_s=0.2) as g:
        diags = g.client.subscribe("/diagnostics", DiagnosticArray)
        pub = g.publisher(JointState, JOINTS, QoSProfile(depth=1000))
        pub_front = g.publisher(Image, FRONT, BEST_EFFORT)
        frame = serialize_message(image(0))
        task_id = g.start_task()
        g.wait_episode(task_id, "recording")
        n = 1500
        for i in range(n):  # ~1.5 kHz, paced so DDS delivers them all; the recorder's 1-slot queue overflows
            pub.publish(joints(i))
            if i % 3 == 0:
                pub_front.publish(frame)  # 150 kB writes keep the writer thread busy
                time.sleep(0.002)
        time.sleep(1.0)
        g.client.call(Trigger, "/vla/stop", Trigger.Request())
        meta = g.wait_episode(task_id, "complete")
        g.client.wait_for(lambda: any(kv.key == "dropped_total" and int(kv.value) >= meta["dropped_total"]
                                      for d in list(diags) for s in d.status for kv in s.values),
                          5, "/diagnostics reporting the episode's drops")
        assert any(s.level == DiagnosticStatus.WARN and "dropped" in s.message for d in list(diags) for s in d.status)
    recorded = [int(m.position[0]) for _, _, m in EpisodeReader(g.out / task_id).messages([JOINTS])]
    dropped, lost = meta["dropped_counts"][JOINTS], meta["lost_in_transport_counts"][JOINTS]
    print(f"\ndrops under load: {n} published, {len(recorded)} recorded, {dropped} dropped (queue full), "
          f"{lost} reported lost by DDS")
    assert dropped > 0 and meta["outcome"] == "CANCELED"
    assert len(recorded) + dropped + lost <= n and recorded == sorted(recorded)
    # not asserted: recorded + dropped == n. On a loaded 2-core machine the recorder's executor can fall behind
    # a 1.5 kHz burst and DDS overwrites samples in the subscription's history before any callback sees them;
    # Fast DDS does not raise 'message lost' for that (see the report).


def test_bad_parameter_refused_naming_the_value(tmp_path):
    bringup = Bringup("franka", nodes=["recorder"], log_dir=tmp_path,
                      extra_params={"recorder": {"output_dir": str(tmp_path), "max_bag_size_mb": -3.0,
                                                 "topics": ["/cameras/front/image_raw:sensor_msgs/msg/Image"]}})
    with bringup:
        assert bringup.procs["recorder"].wait(timeout=30) == 2
    assert "max_bag_size_mb=-3.0 must be >= 0" in bringup.log_tail("recorder")


def test_node_refuses_unknown_type_in_process(ros_context):
    from rclpy.parameter import Parameter

    from vla_jepa_ros.nodes.recorder_node import RecorderNode

    with pytest.raises(ValueError, match=r"'sensor_msgs/msg/Imag': sensor_msgs has no message 'Imag' "
                                         r"\(did you mean sensor_msgs/msg/Image\?\)"):
        RecorderNode(context=ros_context, parameter_overrides=[
            Parameter("topics", value=["/x:sensor_msgs/msg/Imag"])])

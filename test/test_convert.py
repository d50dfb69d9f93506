"""bags-to-dataset on synthetic bags with known timestamps: exact samples, no input from the future,
failed and corrupt episodes handled, LeRobot v3 written."""
import numpy as np
import pytest
import yaml
from rclpy.serialization import serialize_message
from sensor_msgs.msg import Image

from geometry_msgs.msg import Pose
from vla_jepa_interfaces.msg import ActionChunk, ObjectPoses, RobotState
from vla_jepa_ros.core.types import ActionChunk as CoreChunk
from vla_jepa_ros.dataset.convert import ConvertConfig, bags_to_dataset, find_episode_bags
from vla_jepa_ros.recording.config import TopicSpec
from vla_jepa_ros.recording.typestore import make_typestore
from vla_jepa_ros.recording.writer import EpisodeWriter
from vla_jepa_ros.ros.conversions import chunk_to_msg, rgb_to_image, s_to_stamp

CAM_PERIOD_S, STATE_PERIOD_S, STEP_S = 0.1, 0.05, 0.1
CHUNK_RECEIVED_S = (0.12, 0.52, 0.92)  # log times at which the controller got each chunk
END_S = 1.5


def _ns(t_s):
    return int(round(t_s * 1e9))


POSES_PERIOD_S, POSES_T0_S = 0.05, 0.03


def write_bag(bag_dir, outcome="SUCCEEDED", instruction="pick up the red cube", object_poses=False,
              other_cubes: dict | None = None, close_at_s: float | None = None, wall_t0_s: float | None = None):
    """other_cubes: name -> fixed (x, y) of more cubes in /sim/object_poses; close_at_s: the state reports the
    gripper commanded closed from then on; wall_t0_s: log times on a wall clock from there (running slower than
    sim time, as under load) and the sim receive times as /clock samples, as the recorder writes them."""
    topics = [*([TopicSpec("/sim/object_poses", "vla_jepa_interfaces/msg/ObjectPoses")] if object_poses else []),
              TopicSpec("/cameras/front/image_raw", "sensor_msgs/msg/Image"),
              TopicSpec("/cameras/wrist/image_raw", "sensor_msgs/msg/Image"),
              TopicSpec("/franka/state", "vla_jepa_interfaces/msg/RobotState"),
              TopicSpec("/vla/action_chunk", "vla_jepa_interfaces/msg/ActionChunk")]
    writer = EpisodeWriter(bag_dir, topics, make_typestore()).open()
    events = []
    for k in range(int(END_S / CAM_PERIOD_S) + 1):  # frame k captured at k*0.1, value = k (front) / 100+k
        t = k * CAM_PERIOD_S
        for cam, base in (("front", 0), ("wrist", 100)):
            img = rgb_to_image(np.full((8, 8, 3), base + k, np.uint8), t, cam)
            events.append((t + 0.01, f"/cameras/{cam}/image_raw", img))  # arrives 10 ms after capture
    for k in range(int(END_S / STATE_PERIOD_S) + 1):
        t = 0.025 + k * STATE_PERIOD_S
        st = RobotState(gripper_width_m=0.08, gripper_open_commanded=close_at_s is None or t < close_at_s)
        st.header.stamp = s_to_stamp(t)
        st.ee_position_m = [t, 0.0, 0.3]  # x encodes the state's own stamp
        events.append((t, "/franka/state", st))
    for k in range(int(END_S / POSES_PERIOD_S) + 1) if object_poses else ():
        t = POSES_T0_S + k * POSES_PERIOD_S
        others = other_cubes or {}
        msg = ObjectPoses(names=["red_cube", "bowl", *others], poses=[Pose() for _ in range(2 + len(others))])
        msg.header.stamp = s_to_stamp(t)
        msg.poses[0].position.x, msg.poses[1].position.y = t, -t  # positions encode the message's own stamp
        for pose, (x, y) in zip(msg.poses[2:], others.values()):
            pose.position.x, pose.position.y = x, y
        events.append((t + 0.002, "/sim/object_poses", msg))
    for c, received in enumerate(CHUNK_RECEIVED_S):
        actions = np.zeros((7, 7), np.float32)
        actions[:, 0] = 10 * (c + 1) + np.arange(7)  # dx encodes (chunk, row)
        actions[:, 6] = 1.0 if c < 2 else 0.0
        msg = chunk_to_msg(CoreChunk(actions, STEP_S, stamp_s=received - 0.05, task_id="t", sequence=c))
        events.append((received, "/vla/action_chunk", msg))
    for t, topic, msg in sorted(events, key=lambda e: e[0]):
        if wall_t0_s is None:
            writer.write(topic, _ns(t), serialize_message(msg))
        else:
            writer.write(topic, _ns(wall_t0_s + 1.7 * t), serialize_message(msg), ros_time_ns=_ns(t))
    writer.close({})
    (bag_dir / "episode.yaml").write_text(yaml.safe_dump(
        {"task_id": bag_dir.name, "instruction": instruction, "outcome": outcome, "end_time_ns": _ns(END_S)}))
    return bag_dir


def test_synthetic_bag_gives_exactly_the_expected_samples(tmp_path):
    from vla_jepa.data import NativeEpisodeSource

    write_bag(tmp_path / "bags" / "task-0001")
    reports = bags_to_dataset([tmp_path / "bags"], tmp_path / "ds", ConvertConfig(min_steps=2), progress=False)
    assert [r.kept for r in reports] == [True]
    source = NativeEpisodeSource(tmp_path / "ds")
    ep = source.load(0)
    # grid starts when every input exists: frames at 0.0, first state at 0.025 -> t0 = 0.025; ends at 1.5
    times = 0.025 + STEP_S * np.arange(ep.actions.shape[0])
    assert times[-1] <= END_S + 1e-9 < times[-1] + STEP_S
    for k, t in enumerate(times):
        frame_k = int(np.floor(t / CAM_PERIOD_S + 1e-9))  # latest frame captured at or before t
        assert ep.frames[k, 0, 0, 0, 0] == frame_k and ep.frames[k, 1, 0, 0, 0] == 100 + frame_k
        state_stamp = ep.states[k, 0]
        assert state_stamp <= t + 1e-6 and t - state_stamp < STATE_PERIOD_S  # latest state, never future
        # command executed at t: latest chunk received at or before t, row by elapsed steps, else hold
        started = [r for r in CHUNK_RECEIVED_S if r <= t + 1e-9]
        if not started:
            assert ep.actions[k, 0] == 0 and ep.actions[k, 6] == 1.0
        else:
            c, r = len(started) - 1, int(np.floor((t - started[-1]) / STEP_S + 1e-9))
            assert r < 7 or c == 2
            expected = 10 * (c + 1) + r if r < 7 else 0.0
            assert ep.actions[k, 0] == pytest.approx(expected)
    assert ep.instruction == "pick up the red cube"
    assert (tmp_path / "ds" / "lerobot_v3" / "meta" / "info.json").exists()
    assert (tmp_path / "ds" / "dataset_statistics.json").exists()


def test_recorded_object_poses_become_per_step_positions_never_from_the_future(tmp_path):
    """Simulation ground truth (/sim/object_poses) is kept for the auxiliary object loss: the latest pose at or
    before each step, names sorted; a bag without the topic gives no objects."""
    from vla_jepa.data import NativeEpisodeSource

    write_bag(tmp_path / "bags" / "task-0001", object_poses=True)
    bags_to_dataset([tmp_path / "bags"], tmp_path / "ds", ConvertConfig(min_steps=2, lerobot=False), progress=False)
    source = NativeEpisodeSource(tmp_path / "ds")
    ep = source.load(0)
    assert ep.object_names == ("bowl", "red_cube") and ep.objects.shape == (len(ep.actions), 2, 3)
    times = 0.025 + STEP_S * np.arange(len(ep.actions))
    for k, t in enumerate(times):
        stamp = ep.objects[k, 1, 0]  # red_cube x = its message's stamp
        assert ep.objects[k, 0, 1] == pytest.approx(-stamp)
        if t < POSES_T0_S:  # before the first message: the first message
            assert stamp == pytest.approx(POSES_T0_S)
        else:
            assert stamp <= t + 1e-6 and t - stamp < POSES_PERIOD_S
    assert source.meta["objects"]["names"] == ["bowl", "red_cube"]
    assert np.allclose(source.meta["objects"]["mean_m"], ep.objects.mean(0), atol=1e-6)
    write_bag(tmp_path / "plain" / "task-0001")
    bags_to_dataset([tmp_path / "plain"], tmp_path / "ds2", ConvertConfig(min_steps=2, lerobot=False), progress=False)
    plain = NativeEpisodeSource(tmp_path / "ds2")
    assert plain.load(0).objects is None and "objects" not in plain.meta


def test_relabel_expert_gives_each_step_the_experts_action_from_that_steps_state_and_poses(tmp_path):
    """DAgger: with relabel_expert the targets are what the scripted expert plans from the state and object poses
    recorded at or before each step (not the executed chunks); failed episodes are kept; a bag without
    /sim/object_poses is reported, not guessed."""
    from vla_jepa.data import NativeEpisodeSource
    from vla_jepa_ros.core.types import Observation
    from vla_jepa_ros.sim.expert import ScriptedExpertPolicy

    write_bag(tmp_path / "bags" / "task-0001", outcome="FAILED", object_poses=True)
    write_bag(tmp_path / "bags" / "task-0002", outcome="FAILED")  # no poses
    reports = bags_to_dataset([tmp_path / "bags"], tmp_path / "ds",
                              ConvertConfig(min_steps=2, lerobot=False, relabel_expert=True), progress=False)
    assert [r.kept for r in reports] == [True, False] and "/sim/object_poses" in reports[1].reason
    ep = NativeEpisodeSource(tmp_path / "ds").load(0)
    expert = ScriptedExpertPolicy()
    identity = np.array([0.0, 0.0, 0.0, 1.0])
    for k in range(len(ep.actions)):
        poses = {name: (ep.objects[k, i].astype(float), identity) for i, name in enumerate(ep.object_names)}
        planned, _ = expert.plan(Observation({}, {}, ep.states[k], "pick up the red cube", extras={"object_poses": poses}))
        np.testing.assert_allclose(ep.actions[k], planned[0], atol=1e-6)
    assert np.abs(ep.actions[:, 0]).max() <= 0.02 + 1e-6  # the expert's steps, not the chunks' encoded 10..37
    assert np.linalg.norm(ep.actions[:, :3], axis=1).min() > 0.01  # and it moves: the cube is far from the TCP


def test_failed_and_corrupt_bags_are_reported_and_skipped(tmp_path):
    bags = tmp_path / "bags"
    write_bag(bags / "task-0001")
    write_bag(bags / "task-0002", outcome="FAILED")
    corrupt = bags / "task-0003"
    corrupt.mkdir()
    (corrupt / "task-0003_0.mcap").write_bytes(b"\x89MCAP0\r\n" + b"\x00garbage" * 50)
    assert len(find_episode_bags([bags])) == 3
    reports = {r.bag.rsplit("/", 1)[1]: r for r in
               bags_to_dataset([bags], tmp_path / "ds", ConvertConfig(min_steps=2, lerobot=False), progress=False)}
    assert reports["task-0001"].kept
    assert not reports["task-0002"].kept and "FAILED" in reports["task-0002"].reason
    assert not reports["task-0003"].kept and "task-0003_0.mcap" in reports["task-0003"].reason
    reports = bags_to_dataset([bags], tmp_path / "ds2", ConvertConfig(min_steps=2, keep_failed=True, lerobot=False),
                              progress=False)
    assert sum(r.kept for r in reports) == 2


def test_nothing_kept_is_an_error_naming_each_bag(tmp_path):
    write_bag(tmp_path / "bags" / "task-0009", outcome="CANCELED")
    with pytest.raises(ValueError, match="task-0009: outcome CANCELED"):
        bags_to_dataset([tmp_path / "bags"], tmp_path / "ds", progress=False)


def test_policy_state_roll_is_continuous_where_the_tool_points_down():
    """RobotState keeps roll in (-pi, pi]; with the tool down it flips sign on noise. The policy state must not."""
    from vla_jepa_ros.core.types import robot_state_vector

    eps = 1e-3
    above = robot_state_vector([0.4, 0.0, 0.3], [np.pi - eps, 0.0, 0.2], 0.08, True)
    below = robot_state_vector([0.4, 0.0, 0.3], [-np.pi + eps, 0.0, 0.2], 0.08, True)
    assert abs(float(above[3]) - float(below[3])) == pytest.approx(2 * eps, abs=1e-5)
    assert 0.0 <= below[3] < 2 * np.pi and above[[4, 5]].tolist() == pytest.approx([0.0, 0.2])
    # the wrapped roll describes the same rotation as the message's
    from vla_jepa_ros.core.geometry import rpy_to_matrix

    np.testing.assert_allclose(rpy_to_matrix(below[3:6]), rpy_to_matrix([-np.pi + eps, 0.0, 0.2]), atol=1e-6)


def test_counterfactual_colours_repeat_the_reach_phase_naming_each_other_cube_with_the_experts_labels(tmp_path):
    """Same frames and states up to the first gripper close, another cube named, the expert's labels for that
    instruction: the pictures alone no longer tell the model where to go."""
    from vla_jepa.data import NativeEpisodeSource
    from vla_jepa_ros.dataset.relabel import counterfactual_instructions, expert_actions

    with pytest.raises(ValueError, match="needs relabel_expert"):
        ConvertConfig(counterfactual_colours=True)
    assert counterfactual_instructions("put the red cube in the bowl", ["bowl", "red_cube", "green_cube", "blue_cube"]) \
        == ["put the blue cube in the bowl", "put the green cube in the bowl"]
    assert counterfactual_instructions("wave hello", ["red_cube", "blue_cube"]) == []
    write_bag(tmp_path / "bags" / "task-0001", object_poses=True, other_cubes={"blue_cube": (0.45, 0.2),
                                                                               "green_cube": (0.6, -0.2)},
              close_at_s=0.5)
    reports = bags_to_dataset([tmp_path / "bags"], tmp_path / "ds",
                              ConvertConfig(min_steps=2, lerobot=False, relabel_expert=True,
                                            counterfactual_colours=True), progress=False)
    assert reports[0].kept and reports[0].counterfactual == 2
    source = NativeEpisodeSource(tmp_path / "ds")
    original, *variants = [source.load(i) for i in range(len(source))]
    assert [v.instruction for v in variants] == ["pick up the blue cube", "pick up the green cube"]
    reach = int(np.nonzero(original.states[:, 7] < 0.5)[0][0])  # the first step with the gripper commanded closed
    assert 0 < reach < len(original.actions)
    identity = np.array([0.0, 0.0, 0.0, 1.0])
    for v in variants:
        assert len(v.actions) == reach
        np.testing.assert_array_equal(v.frames, original.frames[:reach])
        np.testing.assert_array_equal(v.states, original.states[:reach])
        poses = [{n: (v.objects[k, i].astype(float), identity) for i, n in enumerate(v.object_names)}
                 for k in range(reach)]
        np.testing.assert_allclose(v.actions, expert_actions(v.states, poses, v.instruction), atol=1e-6)
        assert np.abs(v.actions[:, 1] - original.actions[:reach, 1]).max() > 0.005  # it steers elsewhere in y


def test_named_object_tracks_the_cube_each_instruction_names_counterfactual_copies_included(tmp_path):
    """--named-object appends one more tracked object, at every step where the instruction's cube is: the original
    episode's red cube, each counterfactual copy's own cube."""
    from vla_jepa.data import NativeEpisodeSource
    from vla_jepa_ros.dataset.convert import NAMED_OBJECT

    write_bag(tmp_path / "bags" / "task-0001", object_poses=True, other_cubes={"blue_cube": (0.45, 0.2),
                                                                               "green_cube": (0.6, -0.2)},
              close_at_s=0.5)
    write_bag(tmp_path / "bags" / "task-0002")  # no object poses: nothing says where the named cube is
    reports = bags_to_dataset([tmp_path / "bags"], tmp_path / "ds",
                              ConvertConfig(min_steps=2, lerobot=False, named_object=True), progress=False)
    assert reports[0].kept and not reports[1].kept and "named object" in reports[1].reason
    reports = bags_to_dataset([tmp_path / "bags" / "task-0001"], tmp_path / "ds",
                              ConvertConfig(min_steps=2, lerobot=False, relabel_expert=True, named_object=True,
                                            counterfactual_colours=True), progress=False, overwrite=True)
    assert reports[0].kept and reports[0].counterfactual == 2
    source = NativeEpisodeSource(tmp_path / "ds")
    episodes = [source.load(i) for i in range(len(source))]
    assert source.meta["objects"]["names"][-1] == NAMED_OBJECT and len(source.meta["objects"]["names"]) == 5
    named = {}
    for ep in episodes:
        assert ep.object_names[-1] == NAMED_OBJECT and ep.objects.shape[1] == len(ep.object_names)
        cube = ep.instruction.split()[-2] + "_cube"  # 'pick up the blue cube' -> blue_cube
        np.testing.assert_array_equal(ep.objects[:, -1], ep.objects[:, ep.object_names.index(cube)])
        named[cube] = ep.objects[0, -1]
    assert sorted(named) == ["blue_cube", "green_cube", "red_cube"]
    assert len({tuple(np.round(p, 3)) for p in named.values()}) == 3  # three different places


def test_wall_clock_log_times_give_the_same_samples_as_sim_time(tmp_path):
    """Bags log on the wall clock; chunks are placed on the step grid by their sim receive time (/clock samples),
    so a bag recorded while sim time ran slower than the wall clock converts to exactly the same dataset."""
    from vla_jepa.data import NativeEpisodeSource

    write_bag(tmp_path / "sim" / "task-0001")
    write_bag(tmp_path / "wall" / "task-0001", wall_t0_s=1.8e9)
    for name in ("sim", "wall"):
        bags_to_dataset([tmp_path / name], tmp_path / f"ds-{name}", ConvertConfig(min_steps=2, lerobot=False),
                        progress=False)
    sim, wall = NativeEpisodeSource(tmp_path / "ds-sim").load(0), NativeEpisodeSource(tmp_path / "ds-wall").load(0)
    assert len(wall.actions) == len(sim.actions) > 10
    np.testing.assert_array_equal(wall.actions, sim.actions)
    np.testing.assert_array_equal(wall.states, sim.states)
    np.testing.assert_array_equal(wall.frames, sim.frames)


def test_cut_short_bags_are_skipped_unless_asked(tmp_path):
    """A bag cut short (recorder killed, disk full, copy truncated) is not a full demonstration whatever its
    outcome: repaired or still truncated, it is skipped with a note; --include-repaired uses it."""
    from vla_jepa_ros.recording import repair_episode

    bags = tmp_path / "bags"
    write_bag(bags / "task-0001")
    for name in ("task-0002", "task-0003"):
        mcap = write_bag(bags / name) / f"{name}_0.mcap"
        data = mcap.read_bytes()
        mcap.write_bytes(data[: len(data) // 2])  # the tail is gone: no summary, the last chunks lost
    meta = repair_episode(bags / "task-0002")
    assert meta["repaired"] is True and meta["outcome"] == "SUCCEEDED"
    assert yaml.safe_load((bags / "task-0002" / "episode.yaml").read_text())["repaired"] is True
    reports = {r.bag.rsplit("/", 1)[1]: r for r in
               bags_to_dataset([bags], tmp_path / "ds", ConvertConfig(min_steps=2, lerobot=False), progress=False)}
    assert reports["task-0001"].kept and not reports["task-0002"].kept and not reports["task-0003"].kept
    assert reports["task-0002"].reason.startswith("repaired: cut short, not a full demonstration")
    assert reports["task-0003"].reason.startswith("truncated")
    assert reports["task-0002"].outcome == "SUCCEEDED"  # reported as it was, not used
    assert "--include-repaired" in reports["task-0002"].reason
    reports = bags_to_dataset([bags], tmp_path / "ds2", ConvertConfig(min_steps=2, lerobot=False,
                                                                      include_repaired=True), progress=False)
    assert [r.kept for r in reports] == [True, True, True]

"""render-layouts: rendered random layouts with their object positions, for localisation pretraining."""
import numpy as np
import pytest

from vla_jepa_ros.flywheel.layouts import HOME_POSE, ArmPose, render_layouts
from vla_jepa_ros.sim.tasks import parse_instruction
from vla_jepa_ros.sim.world import SimWorldConfig, random_layout
from .hosts import loopback

pytestmark = pytest.mark.slow


def test_layouts_dataset_has_the_drawn_positions_and_distinct_images(tmp_path):
    from vla_jepa.data import NativeEpisodeSource

    world = SimWorldConfig(robot_host=loopback(58))
    reach = ArmPose((0.0, 0.4, 0.0, -1.9, 0.0, 2.3, 0.785), HOME_POSE.gripper_width_m)  # hand out, lower
    for name, pose in (("home", HOME_POSE), ("reach", reach)):
        render_layouts(tmp_path / name, num_layouts=3, seed=77, arm_poses=[pose], poses_per_layout=2,
                       image_size_px=64, world=world, progress=False)
    home, reached = NativeEpisodeSource(tmp_path / "home"), NativeEpisodeSource(tmp_path / "reach")
    assert len(home) == 3 and home.meta["objects"]["names"] == ["blue_cube", "bowl", "green_cube", "red_cube"]
    firsts = []
    for k in range(3):
        ep = home.load(k)
        assert ep.frames.shape == (2, 2, 64, 64, 3) and not ep.actions.any()
        placements = random_layout(world, 77 + k).placements
        for i, name in enumerate(ep.object_names):
            assert ep.objects[0, i, :2] == pytest.approx(placements[name][:2], abs=1e-6)
        assert parse_instruction(ep.instruction) is not None
        assert np.array_equal(ep.frames[0], ep.frames[1])  # one pose, one layout: the same picture
        firsts.append(ep.frames[0, 0].astype(int))
        # the same layout with the arm elsewhere: another picture (the pose is applied)
        assert np.abs(reached.load(k).frames[0, 0].astype(int) - firsts[-1]).mean() > 0.5
    # the arm fixed, another layout is another image (the objects moved)
    assert np.abs(firsts[0] - firsts[1]).mean() > 0.5 and np.abs(firsts[1] - firsts[2]).mean() > 0.5


def test_no_arm_pose_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="arm_poses is empty"):
        render_layouts(tmp_path / "x", 1, 0, arm_poses=[])

"""render-layouts: rendered random layouts with their object positions, for localisation pretraining."""
import numpy as np
import pytest

from vla_jepa_ros.flywheel.layouts import HOME_POSE, ArmPose, render_layouts
from vla_jepa_ros.sim.tasks import parse_instruction
from vla_jepa_ros.sim.world import SimWorldConfig, random_layout

pytestmark = pytest.mark.slow


def test_layouts_dataset_has_the_drawn_positions_and_distinct_images(tmp_path):
    from vla_jepa.data import NativeEpisodeSource

    world = SimWorldConfig(robot_host="127.0.0.58")
    reach = ArmPose((0.0, 0.4, 0.0, -1.9, 0.0, 2.3, 0.785), 0.02)  # the hand further out and lower than home
    render_layouts(tmp_path / "lay", num_layouts=3, seed=77, arm_poses=[HOME_POSE, reach], poses_per_layout=2,
                   image_size_px=64, world=world, progress=False)
    source = NativeEpisodeSource(tmp_path / "lay")
    assert len(source) == 3 and source.meta["objects"]["names"] == ["blue_cube", "bowl", "green_cube", "red_cube"]
    firsts = []
    for k in range(3):
        ep = source.load(k)
        assert ep.frames.shape == (2, 2, 64, 64, 3) and not ep.actions.any()
        placements = random_layout(world, 77 + k).placements
        for i, name in enumerate(ep.object_names):
            assert ep.objects[0, i, :2] == pytest.approx(placements[name][:2], abs=1e-6)
        assert parse_instruction(ep.instruction) is not None
        firsts.append(ep.frames[0, 0].astype(int))
    # another layout is another image (the objects moved)
    assert np.abs(firsts[0] - firsts[1]).mean() > 0.5 and np.abs(firsts[1] - firsts[2]).mean() > 0.5


def test_no_arm_pose_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="arm_poses is empty"):
        render_layouts(tmp_path / "x", 1, 0, arm_poses=[])

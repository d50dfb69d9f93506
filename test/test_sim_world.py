"""The tabletop world: layouts from seeds, task parsing and success checks (pure), and the running world:
cameras rendered from a physics snapshot while the 1 kHz loop keeps running, poses, layout resets."""
import time

import numpy as np
import pytest

from vla_jepa_ros.sim.tasks import PICK_UP, PUT_IN_BOWL, SuccessCheck, SuccessConfig, TaskSpec, parse_instruction
from vla_jepa_ros.sim.world import BOWL_NAME, SimWorldConfig, random_layout
from .hosts import loopback

HOST = loopback(21)
CFG = SimWorldConfig(robot_host=HOST)


def test_layouts_are_deterministic_valid_and_varied():
    a, b, c = random_layout(CFG, 7), random_layout(CFG, 7), random_layout(CFG, 8)
    assert a.placements == b.placements and a.placements != c.placements
    for seed in range(200):
        pl = random_layout(CFG, seed).placements
        assert set(pl) == {*CFG.cube_names, BOWL_NAME}
        bx, by, _ = pl[BOWL_NAME]
        cubes = [pl[n] for n in CFG.cube_names]
        for i, (x, y, yaw) in enumerate(cubes):
            assert CFG.layout_x_range_m[0] <= x <= CFG.layout_x_range_m[1]
            assert CFG.layout_y_range_m[0] <= y <= CFG.layout_y_range_m[1]
            assert np.hypot(x - bx, y - by) > CFG.bowl_inner_radius_m + CFG.cube_size_m
            for x2, y2, _ in cubes[i + 1:]:
                assert np.hypot(x - x2, y - y2) >= CFG.min_object_gap_m


@pytest.mark.parametrize("text, spec", [
    ("pick up the red cube", TaskSpec(PICK_UP, "red")),
    ("Pick up the BLUE block.", TaskSpec(PICK_UP, "blue")),
    ("put the green cube in the bowl", TaskSpec(PUT_IN_BOWL, "green")),
    ("place the red cube into the bowl", TaskSpec(PUT_IN_BOWL, "red")),
    ("pick up the purple cube", None),
    ("dance", None),
])
def test_parse_instruction(text, spec):
    assert parse_instruction(text) == spec


def _poses(cube_xyz, bowl_xy=(0.5, -0.2)):
    return {"red_cube": (np.array(cube_xyz, float), np.array([0, 0, 0, 1.0])),
            BOWL_NAME: (np.array([*bowl_xy, 0.0]), np.array([0, 0, 0, 1.0]))}


def test_pick_up_needs_height_for_the_hold_time():
    check = SuccessCheck(TaskSpec(PICK_UP, "red"), SuccessConfig(lift_height_m=0.08, hold_s=1.0))
    assert not check.update(_poses([0.5, 0, 0.02]), 0.0)
    assert not check.update(_poses([0.5, 0, 0.11]), 1.0)  # lifted: the clock starts
    assert not check.update(_poses([0.5, 0, 0.11]), 1.9)
    assert not check.update(_poses([0.5, 0, 0.05]), 2.0)  # dropped: reset
    assert not check.update(_poses([0.5, 0, 0.12]), 2.1)
    assert check.update(_poses([0.5, 0, 0.12]), 3.2)


def test_put_in_bowl_needs_the_cube_resting_inside():
    spec = TaskSpec(PUT_IN_BOWL, "red")
    cfg = SuccessConfig(hold_s=0.5)
    outside = SuccessCheck(spec, cfg)
    assert not any(outside.update(_poses([0.5, -0.1, 0.023]), t) for t in np.arange(0, 2, 0.05))
    hovering = SuccessCheck(spec, cfg)  # held above the bowl
    assert not any(hovering.update(_poses([0.5, -0.2, 0.12]), t) for t in np.arange(0, 2, 0.05))
    resting = SuccessCheck(spec, cfg)
    assert any(resting.update(_poses([0.51, -0.19, 0.023]), t) for t in np.arange(0, 2, 0.05))
    moving = SuccessCheck(spec, cfg)  # sliding through at 0.2 m/s
    assert not any(moving.update(_poses([0.45 + 0.2 * t, -0.2, 0.023]), t) for t in np.arange(0, 0.5, 0.05))


@pytest.fixture(scope="module")
def world():
    from vla_jepa_ros.sim.world import SimWorld

    with SimWorld(CFG) as w:
        yield w


@pytest.mark.slow
def test_cameras_render_the_scene(world):
    world.reset(layout=None)  # default layout: red cube at (0.45, 0.1)
    time.sleep(0.2)
    front, t_front = world.render("front")
    wrist, _ = world.render("wrist")
    for img in (front, wrist):
        assert img.shape == (224, 224, 3) and img.dtype == np.uint8
        assert img.std() > 10, "a blank image"
    red = (front[..., 0] > 150) & (front[..., 1] < 60) & (front[..., 2] < 60)
    assert red.sum() > 10, "the red cube is not visible from the front camera"
    assert abs(t_front - world.time_s) < 0.5


@pytest.mark.slow
def test_rendering_does_not_stall_the_physics_loop(world):
    """Render both cameras back to back for 1 s: the 1 kHz loop (another thread) must keep advancing."""
    base = world.real_time_factor(1.0)
    times = []
    t0, w0 = world.time_s, time.monotonic()
    n = 0
    while time.monotonic() - w0 < 1.0:
        t = time.perf_counter()
        world.render("front")
        world.render("wrist")
        times.append(time.perf_counter() - t)
        n += 1
    rtf = (world.time_s - t0) / (time.monotonic() - w0)
    print(f"\nRTF {base:.2f} idle, {rtf:.2f} while rendering 2 cameras continuously "
          f"({np.median(times) * 1e3 / 2:.1f} ms per camera)")
    assert rtf > 0.5 * base


@pytest.mark.slow
def test_reset_places_objects_from_the_seed(world):
    layout = world.reset(seed=3)
    time.sleep(0.3)
    poses = world.object_poses()
    for name, (x, y, _) in layout.placements.items():
        np.testing.assert_allclose(poses[name][0][:2], [x, y], atol=0.003)
    for name in CFG.cube_names:
        assert abs(poses[name][0][2] - CFG.cube_size_m / 2) < 0.003, f"{name} is not resting on the table"

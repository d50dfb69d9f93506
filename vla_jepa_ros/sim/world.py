"""The MuJoCo tabletop world around franky-sim's FR3: table, coloured cubes, a bowl, cameras.

`SimWorld` owns franky-sim's `MujocoSimulator` and `SimulationServer` (robot on port 1337 and gripper on
1338 of `robot_host`), runs the 1 kHz server loop in a background thread and renders cameras from a
*copy* of the physics state taken by a post-step callback, so rendering never stalls the server loop.
Layouts are randomised from a seed and applied inside the physics thread (pre-step callback).
No rclpy here: the sim node wraps this class.
"""
from __future__ import annotations

import dataclasses
import os
import threading
import time
import xml.etree.ElementTree as ET

import numpy as np

from ..core.geometry import quat_wxyz_to_xyzw

# Headless rendering unless the user chose a backend; MuJoCo reads this when it is first imported (below).
os.environ.setdefault("MUJOCO_GL", "egl")

CUBE_COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.85, 0.1, 0.1), "green": (0.1, 0.7, 0.15), "blue": (0.1, 0.25, 0.85), "yellow": (0.9, 0.8, 0.1)}
BOWL_NAME = "bowl"
TABLE_HEIGHT_M = 0.0  # the table top is the robot base plane (z = 0 of the base frame)


def _fmt(values) -> str:
    return " ".join(f"{float(v):.6g}" for v in values)


def look_at_xyaxes(eye: np.ndarray, target: np.ndarray, up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """MuJoCo camera `xyaxes` (6,) for a camera at `eye` looking at `target` (cameras look along -z)."""
    forward = np.asarray(target, float) - np.asarray(eye, float)
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, up)
    right /= np.linalg.norm(right)
    cam_up = np.cross(right, forward)
    return np.concatenate([right, cam_up])


@dataclasses.dataclass(frozen=True)
class SimWorldConfig:
    """The tabletop scene and how it is rendered. Lengths in metres, angles in radians."""

    robot_host: str = dataclasses.field(
        default="127.0.0.1", metadata={"help": "loopback address the franky-sim robot/gripper servers bind"})
    realtime_factor: float = dataclasses.field(
        default=1.0, metadata={"help": "1.0 = pace the 1 kHz loop at wall time; 0 = as fast as possible"})
    cube_colours: tuple[str, ...] = dataclasses.field(
        default=("red", "green", "blue"), metadata={"help": "colours of the cubes on the table"})
    cube_size_m: float = dataclasses.field(default=0.04, metadata={"help": "cube edge length (m)"})
    cube_mass_kg: float = dataclasses.field(default=0.05, metadata={"help": "mass of each cube (kg)"})
    bowl_inner_radius_m: float = dataclasses.field(default=0.075, metadata={"help": "bowl inner radius (m)"})
    bowl_height_m: float = dataclasses.field(default=0.04, metadata={"help": "bowl wall height (m)"})
    layout_x_range_m: tuple[float, ...] = dataclasses.field(
        default=(0.38, 0.62), metadata={"help": "x range (base frame) where objects are placed (m)"})
    layout_y_range_m: tuple[float, ...] = dataclasses.field(
        default=(-0.22, 0.22), metadata={"help": "y range (base frame) where objects are placed (m)"})
    min_object_gap_m: float = dataclasses.field(
        default=0.09, metadata={"help": "minimum centre distance between cubes in a random layout (m)"})
    cameras: tuple[str, ...] = dataclasses.field(
        default=("front", "wrist"), metadata={"help": "cameras to render: front (fixed), wrist (on the hand)"})
    image_width: int = dataclasses.field(default=224, metadata={"help": "rendered image width (px)"})
    image_height: int = dataclasses.field(default=224, metadata={"help": "rendered image height (px)"})
    front_camera_pos_m: tuple[float, ...] = dataclasses.field(
        default=(1.2, 0.0, 0.7), metadata={"help": "front camera position (base frame, m)"})
    front_camera_target_m: tuple[float, ...] = dataclasses.field(
        default=(0.4, 0.0, 0.12), metadata={"help": "point the front camera looks at (m)"})
    front_camera_fovy_deg: float = dataclasses.field(default=45.0, metadata={"help": "front camera fovy (deg)"})
    wrist_camera_fovy_deg: float = dataclasses.field(default=70.0, metadata={"help": "wrist camera fovy (deg)"})

    def __post_init__(self) -> None:
        for name in ("layout_x_range_m", "layout_y_range_m"):
            lo_hi = getattr(self, name)
            if len(lo_hi) != 2 or not lo_hi[0] < lo_hi[1]:
                raise ValueError(f"{name}={lo_hi} must be (low, high) with low < high")
        unknown = [c for c in self.cube_colours if c not in CUBE_COLOURS]
        if unknown or not self.cube_colours or len(set(self.cube_colours)) != len(self.cube_colours):
            raise ValueError(f"cube_colours={self.cube_colours} must be distinct, non-empty, from {sorted(CUBE_COLOURS)}")
        unknown_cams = [c for c in self.cameras if c not in ("front", "wrist")]
        if unknown_cams:
            raise ValueError(f"cameras={self.cameras}: unknown {unknown_cams}; known: front, wrist")
        if not 0.01 <= self.cube_size_m <= 0.07:
            raise ValueError(f"cube_size_m={self.cube_size_m} must be in [0.01, 0.07] (the gripper opens 0.08 m)")
        if not 16 <= self.image_width <= 2048 or not 16 <= self.image_height <= 2048:
            raise ValueError(f"image size {self.image_width}x{self.image_height} must be within [16, 2048]")
        if self.realtime_factor < 0:
            raise ValueError(f"realtime_factor={self.realtime_factor} must be >= 0")
        if len(self.front_camera_pos_m) != 3 or len(self.front_camera_target_m) != 3:
            raise ValueError("front_camera_pos_m and front_camera_target_m need 3 values each")
        if self.bowl_inner_radius_m <= self.cube_size_m:
            raise ValueError(f"bowl_inner_radius_m={self.bowl_inner_radius_m} must exceed cube_size_m={self.cube_size_m}")

    @property
    def cube_names(self) -> tuple[str, ...]:
        return tuple(f"{c}_cube" for c in self.cube_colours)


@dataclasses.dataclass(frozen=True)
class Layout:
    """Object placements on the table: name -> (x, y, yaw) in the base frame (m, m, rad)."""

    placements: dict[str, tuple[float, float, float]]
    seed: int | None = None


def random_layout(config: SimWorldConfig, seed: int) -> Layout:
    """Draw a layout from `seed`: the bowl and every cube inside the layout ranges, cubes apart and
    outside the bowl's rim by at least `min_object_gap_m`. Deterministic for a given seed and config."""
    rng = np.random.default_rng(seed)
    (x0, x1), (y0, y1) = config.layout_x_range_m, config.layout_y_range_m
    bowl_r = config.bowl_inner_radius_m + 0.01
    for _ in range(1000):
        placements: dict[str, tuple[float, float, float]] = {}
        bx, by = rng.uniform(x0 + bowl_r * 0.5, x1 - bowl_r * 0.5), rng.uniform(y0 + bowl_r, y1 - bowl_r)
        placements[BOWL_NAME] = (bx, by, 0.0)
        ok = True
        for name in config.cube_names:
            for _ in range(200):
                x, y = rng.uniform(x0, x1), rng.uniform(y0, y1)
                if np.hypot(x - bx, y - by) < bowl_r + config.cube_size_m + 0.02:
                    continue
                if any(np.hypot(x - px, y - py) < config.min_object_gap_m
                       for n, (px, py, _) in placements.items() if n != BOWL_NAME):
                    continue
                placements[name] = (x, y, rng.uniform(-np.pi / 4, np.pi / 4))
                break
            else:
                ok = False
                break
        if ok:
            return Layout(placements, seed)
    raise ValueError(f"no layout found for seed {seed} within x {config.layout_x_range_m}, y {config.layout_y_range_m}")


def default_layout(config: SimWorldConfig) -> Layout:
    """A fixed, readable layout: cubes in a row at x = 0.5 m, the bowl to the right of the robot."""
    placements = {n: (0.45 + 0.07 * i, 0.1 - 0.09 * i, 0.0) for i, n in enumerate(config.cube_names)}
    placements[BOWL_NAME] = (0.5, -0.2, 0.0)
    return Layout(placements, None)


@dataclasses.dataclass(frozen=True)
class PhysicsSnapshot:
    """A copy of the physics state at one instant (taken in the physics thread after a step)."""

    time_s: float
    qpos: np.ndarray
    mocap_pos: np.ndarray


class SimWorld:
    """franky-sim's FR3 on a table with cubes and a bowl, served over the libfranka protocol.

    Usage: `with SimWorld(config) as world: world.reset(seed=3); img, t = world.render("front")`.
    Object poses, rendering and success checks read the latest snapshot; nothing here touches the live
    MjData from outside the physics thread except through callbacks.
    """

    def __init__(self, config: SimWorldConfig = SimWorldConfig()) -> None:
        from franky_sim.mujoco_simulator import MujocoSimulator

        self.config = config
        self._sim = MujocoSimulator()
        self._build_scene()
        self._robot = self._sim.add_robot()
        self._server = None
        self._snapshot: PhysicsSnapshot | None = None
        self._pending_layout: Layout | None = None
        self._layout_applied = threading.Event()
        self._pending_arm_q: np.ndarray | None = None  # (7,) joint positions to put the arm at
        self._arm_reset = threading.Event()
        self._arm_settle_steps = 0
        self._renderer = None
        self._render_data = None
        self._render_thread: int | None = None
        self.layout: Layout | None = None
        self.step_count = 0
        self._hooks: list[list] = []  # [callback(time_s), period_s, next_due_s]

    # ---------------------------------------------------------------- scene
    def _build_scene(self) -> None:
        c = self.config
        scene, world = self._sim.scene, self._sim.worldbody
        for quality in scene.iter("quality"):  # shadows and MSAA off: 6x faster offscreen rendering on CPU
            quality.set("shadowsize", "0")
            quality.set("offsamples", "0")
        visual = scene.find("visual")
        ET.SubElement(visual, "global", offwidth=str(max(c.image_width, 640)), offheight=str(max(c.image_height, 480)))
        for light in world.iter("light"):
            light.set("castshadow", "false")
        for geom in world.iter("geom"):  # the floor sits below the table
            if geom.get("name") == "ground":
                geom.set("pos", "0 0 -0.75")
        asset = scene.find("asset")
        ET.SubElement(asset, "texture", name="table_tex", type="2d", builtin="flat", rgb1="0.62 0.5 0.36",
                      width="64", height="64")
        ET.SubElement(asset, "material", name="table_mat", texture="table_tex", rgba="1 1 1 1")
        ET.SubElement(world, "geom", name="table", type="box", pos="0.35 0 -0.375", size="0.75 0.75 0.375",
                      material="table_mat", friction="1 0.005 0.0001")
        half = c.cube_size_m / 2
        for colour, name in zip(c.cube_colours, c.cube_names):
            body = ET.SubElement(world, "body", name=name, pos=f"0.5 0 {half}")
            ET.SubElement(body, "freejoint", name=f"{name}_joint")
            ET.SubElement(body, "geom", name=f"{name}_geom", type="box", size=_fmt([half] * 3),
                          rgba=_fmt([*CUBE_COLOURS[colour], 1.0]), mass=f"{c.cube_mass_kg}",
                          friction="1.5 0.01 0.001", condim="4", solref="0.005 1")
        bowl = ET.SubElement(world, "body", name=BOWL_NAME, mocap="true", pos="0.5 -0.2 0")
        r, h, wall = c.bowl_inner_radius_m, c.bowl_height_m, 0.008
        bowl_rgba = "0.93 0.93 0.88 1"
        ET.SubElement(bowl, "geom", name="bowl_base", type="cylinder", size=_fmt([r + wall, 0.003]),
                      pos="0 0 0.003", rgba=bowl_rgba)
        n_walls = 16
        seg = 2 * (r + wall / 2) * np.tan(np.pi / n_walls) / 2 + 0.002
        for i in range(n_walls):
            a = 2 * np.pi * i / n_walls
            ET.SubElement(bowl, "geom", name=f"bowl_wall{i}", type="box", size=_fmt([wall / 2, seg, h / 2]),
                          pos=_fmt([(r + wall / 2) * np.cos(a), (r + wall / 2) * np.sin(a), h / 2]),
                          euler=_fmt([0, 0, a]), rgba=bowl_rgba)
        if "front" in c.cameras:
            ET.SubElement(world, "camera", name="front", pos=_fmt(c.front_camera_pos_m), fovy=f"{c.front_camera_fovy_deg}",
                          xyaxes=_fmt(look_at_xyaxes(np.array(c.front_camera_pos_m), np.array(c.front_camera_target_m))))

    def _add_wrist_camera(self) -> None:
        # The hand body exists only after add_robot(); mount the camera behind the fingers, looking along them.
        for body in self._sim.worldbody.iter("body"):
            if body.get("name") == "robot0_hand":
                ET.SubElement(body, "camera", name="wrist", pos="0.07 0 0.01", fovy=f"{self.config.wrist_camera_fovy_deg}",
                              xyaxes="0 1 0 0.96 0 0.28")
                return
        raise RuntimeError("franky-sim's FR3 has no body 'robot0_hand' to mount the wrist camera on")

    # ---------------------------------------------------------------- lifecycle
    def start(self) -> "SimWorld":
        """Compile the scene, bind the franky-sim servers on `robot_host` and start the 1 kHz loop."""
        import franky_sim

        if "wrist" in self.config.cameras:
            self._add_wrist_camera()
        self._sim.register_pre_step_callback(self._pre_step)
        self._sim.register_post_step_callback(self._post_step)
        self._sim.init()
        self._server = franky_sim.SimulationServer(self._sim, hostname_candidates=[self.config.robot_host])
        self._server.init()  # binds ports and builds the MuJoCo model
        self._resolve_addresses()
        self.reset(layout=default_layout(self.config), wait=False)
        self._apply_layout(self._pending_layout)
        self._pending_layout = None
        self._post_step(self._sim)
        realtime = self.config.realtime_factor if self.config.realtime_factor > 0 else False
        self._server.run_async(realtime=realtime)
        return self

    def close(self) -> None:
        if self._server is not None:
            self._server.cleanup()
            self._server = None
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None

    def __enter__(self) -> "SimWorld":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def model(self):
        return self._sim.model

    @property
    def robot_host(self) -> str:
        return self.config.robot_host

    def _resolve_addresses(self) -> None:
        import mujoco

        m = self._sim.model
        self._cube_qpos: dict[str, int] = {}
        self._cube_qvel: dict[str, int] = {}
        for name in self.config.cube_names:
            jid = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_JOINT, f"{name}_joint")
            self._cube_qpos[name] = int(m.jnt_qposadr[jid])
            self._cube_qvel[name] = int(m.jnt_dofadr[jid])
        self._bowl_mocap = int(m.body_mocapid[mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, BOWL_NAME)])

    # ---------------------------------------------------------------- physics-thread callbacks
    def _pre_step(self, _sim) -> None:
        layout = self._pending_layout
        if layout is not None:
            self._pending_layout = None
            self._apply_layout(layout)
            self._layout_applied.set()
        q = self._pending_arm_q
        if q is not None and self._robot.server is not None and self._robot.server.current_motion_id == 0:
            self._pending_arm_q = None
            d = self._sim.data
            d.qpos[self._robot._qpos_addrs] = q
            d.qvel[self._robot._dof_addrs] = 0.0
            self._robot.server._reset_state()  # franky-sim's idle hold now holds the new joint positions
            self._arm_settle_steps = 3
        if self._arm_settle_steps:
            # franky-sim reports desired velocities and accelerations as filtered finite differences of the desired
            # positions: the jump would read as rad/s for a second, and the next motion would start from it (the
            # arm swung 0.5 rad away from home). Forget the history until the new hold is in it on both sides.
            for component in self._robot._tracked_state_components.values():
                for observer in component.observers.values():
                    observer.clear()
            self._arm_settle_steps -= 1
            if not self._arm_settle_steps:
                self._arm_reset.set()

    def _apply_layout(self, layout: Layout) -> None:
        d, half = self._sim.data, self.config.cube_size_m / 2
        for name, (x, y, yaw) in layout.placements.items():
            if name == BOWL_NAME:
                d.mocap_pos[self._bowl_mocap] = (x, y, 0.0)
            elif name in self._cube_qpos:
                a, v = self._cube_qpos[name], self._cube_qvel[name]
                d.qpos[a:a + 7] = (x, y, half + 0.001, np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2))
                d.qvel[v:v + 6] = 0.0
        self.layout = layout

    def _post_step(self, _sim) -> None:
        d = self._sim.data
        self.step_count += 1
        # Attribute assignment is atomic under the GIL: readers always see a whole snapshot.
        self._snapshot = PhysicsSnapshot(float(d.time), d.qpos.copy(), d.mocap_pos.copy())
        for hook in self._hooks:
            if d.time >= hook[2]:
                hook[2] = d.time + hook[1]
                hook[0](float(d.time))

    def add_time_hook(self, callback, period_s: float) -> None:
        """Call `callback(sim_time_s)` from the physics thread every `period_s` of simulated time (keep it
        short: it runs inside the 1 kHz loop). The sim node publishes /clock this way."""
        if not period_s >= 0.001:
            raise ValueError(f"period_s={period_s} must be >= 0.001 (one physics step)")
        self._hooks.append([callback, float(period_s), 0.0])

    # ---------------------------------------------------------------- public API
    def reset(self, seed: int | None = None, layout: Layout | None = None, wait: bool = True,
              timeout_s: float = 5.0) -> Layout:
        """Place the objects from `layout`, or a random layout drawn from `seed`, or the default layout.

        Applied inside the physics thread before the next step; with `wait`, returns once applied.
        The arm is not moved (the controller homes it).
        """
        if layout is None:
            layout = random_layout(self.config, seed) if seed is not None else default_layout(self.config)
        self._layout_applied.clear()
        self._pending_layout = layout
        if wait and self._server is not None and self._server.running:
            if not self._layout_applied.wait(timeout_s):
                raise TimeoutError(f"the physics loop did not apply the layout within {timeout_s} s")
        return layout

    def reset_arm(self, q_rad, wait: bool = True, timeout_s: float = 5.0) -> bool:
        """Put the arm at joint positions `q_rad` (7,), at rest, at once (the simulator's state is set: no motion)
        as soon as no motion runs. For a simulated episode that must not inherit the last one's wreck (an arm stuck
        where homing cannot bring it back). Returns whether it was applied (without `wait`: see arm_reset_done;
        with it, False when no step applied it within timeout_s wall, and the request is dropped)."""
        q = np.asarray(q_rad, float)
        if q.shape != (7,) or not np.all(np.isfinite(q)):
            raise ValueError(f"q_rad={q_rad} needs 7 finite joint positions")
        self._arm_reset.clear()
        self._pending_arm_q = q
        if not wait:
            return False
        if self._arm_reset.wait(timeout_s):
            return True
        self._pending_arm_q = None
        return False

    @property
    def arm_reset_done(self) -> bool:
        """The last reset_arm request has been applied."""
        return self._arm_reset.is_set()

    def snapshot(self) -> PhysicsSnapshot:
        if self._snapshot is None:
            raise RuntimeError("the world has not been started")
        return self._snapshot

    @property
    def time_s(self) -> float:
        """Simulation time (s) of the latest snapshot."""
        return self._snapshot.time_s if self._snapshot is not None else 0.0

    def object_poses(self, snapshot: PhysicsSnapshot | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """name -> (position (3,) m, quaternion (x, y, z, w)) in the base frame, for every cube and the bowl."""
        s = snapshot or self.snapshot()
        poses = {}
        for name, a in self._cube_qpos.items():
            poses[name] = (s.qpos[a:a + 3].copy(), quat_wxyz_to_xyzw(s.qpos[a + 3:a + 7]))
        poses[BOWL_NAME] = (s.mocap_pos[self._bowl_mocap].copy(), np.array([0.0, 0.0, 0.0, 1.0]))
        return poses

    def render(self, camera: str, snapshot: PhysicsSnapshot | None = None) -> tuple[np.ndarray, float]:
        """Render `camera` from a snapshot: ((H, W, 3) uint8 RGB, simulation capture time s).

        Uses its own MjData; call from one thread only (the GL context belongs to the first caller).
        """
        import mujoco

        if camera not in self.config.cameras:
            raise ValueError(f"unknown camera {camera!r}; this world has {self.config.cameras}")
        if self._renderer is None:
            self._renderer = mujoco.Renderer(self._sim.model, self.config.image_height, self.config.image_width)
            self._render_data = mujoco.MjData(self._sim.model)
            self._render_thread = threading.get_ident()
        elif self._render_thread != threading.get_ident():
            raise RuntimeError("SimWorld.render must be called from the thread that first rendered")
        s = snapshot or self.snapshot()
        m, d = self._sim.model, self._render_data
        d.qpos[:] = s.qpos
        d.mocap_pos[:] = s.mocap_pos
        mujoco.mj_kinematics(m, d)
        mujoco.mj_comPos(m, d)
        mujoco.mj_camlight(m, d)  # without it camera-relative lights are wrong and the image is dark
        self._renderer.update_scene(d, camera=camera)
        return self._renderer.render(), s.time_s

    def real_time_factor(self, window_s: float = 1.0) -> float:
        """Simulated seconds per wall second, measured over `window_s` of wall time."""
        t0, w0 = self.time_s, time.monotonic()
        time.sleep(window_s)
        return (self.time_s - t0) / (time.monotonic() - w0)

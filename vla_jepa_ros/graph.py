"""The node graph, in one place: which nodes make up each graph and where their parameters live.

Read by `bringup.py` (one process per node, no `ros2 launch` needed) and by launch/*.launch.py.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

PACKAGE = "vla_jepa_ros"


@dataclasses.dataclass(frozen=True)
class NodeSpec:
    """One node: ROS package, executable (console script = `vla_jepa_ros.nodes.<executable>_node`), name, remaps."""

    name: str
    executable: str
    package: str = PACKAGE
    remaps: tuple[tuple[str, str], ...] = ()
    signs: bool = True  # signs or checks control messages: needs the deployment's key (auth_key_file)

    @property
    def module(self) -> str:
        return f"{self.package}.nodes.{self.executable}_node"


@dataclasses.dataclass(frozen=True)
class Graph:
    name: str
    params_file: str  # relative to the package share dir (config/...)
    nodes: tuple[NodeSpec, ...]
    description: str
    ephemeral_key: bool = False  # bringup makes a fresh key per run when none is configured (simulation only)


TASK_MANAGER = NodeSpec("task_manager", "task_manager")
POLICY = NodeSpec("policy", "policy")
CONTROLLER = NodeSpec("franka_controller", "franka_controller")
SIM = NodeSpec("sim", "sim")
RECORDER = NodeSpec("recorder", "recorder", signs=False)  # records every message, signed or not

GRAPHS: dict[str, Graph] = {
    g.name: g
    for g in (
        Graph("sim", "config/sim.yaml", (TASK_MANAGER, SIM, POLICY, CONTROLLER, RECORDER),
              "franky-sim FR3 in a MuJoCo tabletop, rendered cameras, policy, controller, task manager, recorder",
              ephemeral_key=True),
        Graph("franka", "config/franka.yaml", (TASK_MANAGER, POLICY, CONTROLLER, RECORDER),
              "a real FR3 through franky (dry_run by default), your camera drivers, policy, recorder"),
        Graph("task_manager_only", "config/franka.yaml", (TASK_MANAGER,), "just the task manager (tests, debugging)",
              ephemeral_key=True),
    )
}


def get_graph(name: str) -> Graph:
    if name not in GRAPHS:
        raise ValueError(f"unknown graph {name!r}; known graphs: {', '.join(sorted(GRAPHS))}")
    return GRAPHS[name]


def share_dir() -> Path:
    """The package's share directory: the colcon install when ROS knows the package, else this repository."""
    if os.environ.get("AMENT_PREFIX_PATH"):
        try:
            from ament_index_python.packages import PackageNotFoundError, get_package_share_directory

            try:
                return Path(get_package_share_directory(PACKAGE))
            except PackageNotFoundError:
                pass
        except ImportError:
            pass
    return Path(__file__).resolve().parents[1]


def share_file(relative: str) -> Path:
    path = Path(relative)
    if path.is_absolute():
        return path
    found = share_dir() / relative
    if not found.exists():
        raise FileNotFoundError(f"{relative} not found under {share_dir()}")
    return found

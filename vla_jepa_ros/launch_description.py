"""LaunchDescription for a graph of graph.py, shared by launch/sim.launch.py and launch/franka.launch.py.

Mirrors bringup.py: the same node list, parameter file and DDS profile (config/fastdds.xml through
FASTDDS_DEFAULT_PROFILES_FILE, unless already set); if any node exits, the whole launch shuts down.
"""
from __future__ import annotations

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, SetEnvironmentVariable, Shutdown
from launch.substitutions import EnvironmentVariable, LaunchConfiguration
from launch_ros.actions import Node

from .graph import get_graph, share_file
from .ros.dds import PROFILE_ENV, profile_path


def make_launch_description(graph_name: str) -> LaunchDescription:
    graph = get_graph(graph_name)
    params_file = LaunchConfiguration("params_file")
    actions = [
        DeclareLaunchArgument("params_file", default_value=str(share_file(graph.params_file)),
                              description=f"ROS parameter file for every node of the {graph.name} graph"),
        DeclareLaunchArgument("auth_key_file", default_value="",
                              description="the deployment's key file (vla-jepa keygen PATH); a key set in "
                                          "params_file wins"),
        # camera-size frames need a larger shared-memory segment than Fast DDS's default (docs/cameras.md)
        SetEnvironmentVariable(PROFILE_ENV, EnvironmentVariable(PROFILE_ENV, default_value=str(profile_path()))),
    ]
    key = {"auth_key_file": LaunchConfiguration("auth_key_file")}
    for spec in graph.nodes:
        actions.append(Node(package=spec.package, executable=spec.executable, name=spec.name,
                            parameters=[key, params_file] if spec.signs else [params_file],
                            remappings=list(spec.remaps), output="screen",
                            on_exit=Shutdown(reason=f"node {spec.name} exited")))
    return LaunchDescription(actions)

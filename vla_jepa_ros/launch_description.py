"""LaunchDescription for a graph of graph.py, shared by launch/sim.launch.py and launch/franka.launch.py.

Mirrors bringup.py: the same node list and parameter file; if any node exits, the whole launch shuts down.
"""
from __future__ import annotations

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, Shutdown
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from .graph import get_graph, share_file


def make_launch_description(graph_name: str) -> LaunchDescription:
    graph = get_graph(graph_name)
    params_file = LaunchConfiguration("params_file")
    actions = [
        DeclareLaunchArgument("params_file", default_value=str(share_file(graph.params_file)),
                              description=f"ROS parameter file for every node of the {graph.name} graph"),
        DeclareLaunchArgument("auth_key_file", default_value="",
                              description="the deployment's key file (vla-jepa keygen PATH); a key set in "
                                          "params_file wins"),
    ]
    key = {"auth_key_file": LaunchConfiguration("auth_key_file")}
    for spec in graph.nodes:
        actions.append(Node(package=spec.package, executable=spec.executable, name=spec.name,
                            parameters=[key, params_file] if spec.signs else [params_file],
                            remappings=list(spec.remaps), output="screen",
                            on_exit=Shutdown(reason=f"node {spec.name} exited")))
    return LaunchDescription(actions)

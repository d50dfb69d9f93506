"""The real-robot graph: policy, franky controller (dry_run by default), task manager, recorder.
Camera drivers are yours: publish /cameras/<name>/image_raw (or .../compressed) for each camera in the config.

    ros2 launch vla_jepa_ros franka.launch.py [params_file:=/path/to/franka.yaml]
"""
from vla_jepa_ros.launch_description import make_launch_description


def generate_launch_description():
    return make_launch_description("franka")

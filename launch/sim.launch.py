"""The simulated graph: franky-sim FR3 + MuJoCo cameras, policy, controller, task manager, recorder.

    ros2 launch vla_jepa_ros sim.launch.py [params_file:=/path/to/sim.yaml]
"""
from vla_jepa_ros.launch_description import make_launch_description


def generate_launch_description():
    return make_launch_description("sim")

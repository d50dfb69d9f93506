"""vla_jepa_ros: VLA-JEPA on a robot computer, driving a Franka arm through ROS 2."""

"""The stack's Fast DDS profile (config/fastdds.xml): selected for every node, the user's own wins, and Fast DDS
really builds the large shared-memory segment from it (a node process is asked which segments it maps)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from vla_jepa_ros.bringup import Bringup
from vla_jepa_ros.ros.dds import PROFILE_ENV, dds_environment, profile_path

TWO_HD_FRAMES_B = 2 * 1280 * 720 * 3

# a process with one node that prints the sizes of the Fast DDS segments it maps (its own is created at init)
PROBE = """
import re, rclpy
from vla_jepa_ros.ros.dds import use_stack_profile
use_stack_profile()
rclpy.init()
node = rclpy.create_node("dds_profile_probe")
names = set(re.findall(r"/dev/shm/(fastdds_[0-9a-f]{16})\\b", open("/proc/self/maps").read()))
import os
print(max(os.path.getsize("/dev/shm/" + n) for n in names))
node.destroy_node()
rclpy.try_shutdown()
"""


def test_bringup_gives_every_node_the_profile_and_a_users_own_wins(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != PROFILE_ENV}
    assert dds_environment(env) == {PROFILE_ENV: str(profile_path())}
    assert profile_path().is_file()
    assert Bringup("franka", nodes=["recorder"], env={}, log_dir=tmp_path).env[PROFILE_ENV] == str(profile_path())
    mine = tmp_path / "mine.xml"
    assert dds_environment({PROFILE_ENV: str(mine)}) == {}
    assert Bringup("franka", nodes=["recorder"], env={PROFILE_ENV: str(mine)}, log_dir=tmp_path).env[PROFILE_ENV] \
        == str(mine)


def test_fast_dds_builds_a_segment_for_two_hd_frames_from_the_profile():
    env = {k: v for k, v in os.environ.items() if k != PROFILE_ENV}
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "OFF"  # no peers: it maps no segment but its own
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=60,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.returncode == 0, out.stderr[-2000:]
    assert "XMLPARSER" not in out.stdout + out.stderr, out.stdout + out.stderr
    segment_b = int(out.stdout.strip().splitlines()[-1])
    assert segment_b >= 2 * TWO_HD_FRAMES_B, f"shared-memory segment {segment_b} B"

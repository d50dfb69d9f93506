"""The DDS configuration every process of the graph runs with (Fast DDS, the only RMW on PyPI).

Camera frames of real size (640x480 rgb8 = 0.9 MB, 1280x720 = 2.8 MB) do not fit Fast DDS's default shared-memory
segment (512 KiB per participant): see docs/cameras.md. The stack ships a profile, config/fastdds.xml, and
every process it starts (bringup, the launch files) gets it through FASTDDS_DEFAULT_PROFILES_FILE, the variable
Fast DDS 3 reads (2.x read FASTRTPS_DEFAULT_PROFILES_FILE, which 3.x ignores). A profile the user set already wins.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

PROFILE_ENV = "FASTDDS_DEFAULT_PROFILES_FILE"
PROFILE_FILE = "config/fastdds.xml"  # relative to the package share directory


def profile_path() -> Path:
    from ..graph import share_file

    return share_file(PROFILE_FILE)


def dds_environment(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The variables to add to `env` (default: this process's) so a node runs with the stack's DDS profile;
    empty when `env` already names a profile (the user's own)."""
    env = os.environ if env is None else env
    if env.get(PROFILE_ENV):
        return {}
    return {PROFILE_ENV: str(profile_path())}


def use_stack_profile() -> None:
    """Give this process the stack's profile unless it has one. Call before the first rclpy.init of the process:
    Fast DDS reads the variable once, when the process creates its first participant."""
    os.environ.update(dds_environment())

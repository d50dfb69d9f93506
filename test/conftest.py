"""Test-session isolation for ROS 2: a private DDS domain on localhost, logs in a temp dir, no leftovers.

Every process a test starts inherits these variables, so tests never see another session's nodes.
"""
from __future__ import annotations

import os
import random
import tempfile

import pytest

_SESSION_DOMAIN = str(random.SystemRandom().randint(1, 100))
_LOG_DIR = tempfile.mkdtemp(prefix="vla_jepa_ros_test_logs_")
os.environ.setdefault("ROS_DOMAIN_ID", _SESSION_DOMAIN)
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ["ROS_LOG_DIR"] = _LOG_DIR
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("RCUTILS_COLORIZED_OUTPUT", "0")


def pytest_sessionfinish(session, exitstatus):  # noqa: ARG001
    """Remove Fast DDS shared-memory files that no live process owns (e.g. from nodes a test SIGKILLed), and the
    nodes' log folder when every test passed (kept, and named, after a failure)."""
    import shutil

    from vla_jepa_ros.ros.shm import remove_stale_fastdds_files

    remove_stale_fastdds_files()
    if exitstatus == 0:
        shutil.rmtree(_LOG_DIR, ignore_errors=True)
    else:
        print(f"\nROS node logs of this session: {_LOG_DIR}")


@pytest.fixture
def ros_context():
    """An initialised rclpy context for in-process node tests; shut down afterwards."""
    import rclpy

    context = rclpy.Context()
    rclpy.init(context=context)
    yield context
    context.try_shutdown()

"""Loopback addresses for franky-sim in tests (it binds ports 1337/1338, so every module needs its own address).

`VLA_JEPA_TEST_NET` (default 0) moves them all to 127.0.<net>.<n>: two test sessions on one machine (with
different ROS_DOMAIN_IDs) then never share a franky-sim port.
"""
from __future__ import annotations

import os


def loopback(n: int) -> str:
    """127.0.<VLA_JEPA_TEST_NET>.<n>, an address of its own for the test module that asks with its own `n`."""
    net = int(os.environ.get("VLA_JEPA_TEST_NET", "0"))
    if not (0 <= net <= 255 and 2 <= n <= 254):
        raise ValueError(f"VLA_JEPA_TEST_NET={net} must be in [0, 255] and n={n} in [2, 254]")
    return f"127.0.{net}.{n}"

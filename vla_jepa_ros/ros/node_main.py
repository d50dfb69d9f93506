"""The one `main()` pattern every node uses: init, spin, exit cleanly on Ctrl-C or SIGTERM.

Every node spins a SingleThreadedExecutor; work that may take long (inference, bag writing, simulation) runs on
the node's own threads, never in a callback. rclpy's MultiThreadedExecutor busy-spins while a ready callback waits
for a worker, which starved the simulator's physics thread on a 2-core machine (CHANGELOG.md has the numbers).
"""
from __future__ import annotations

import os
import sys
from typing import Callable

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node

from .dds import use_stack_profile
from .heartbeat import Heartbeat
from .params import unknown_parameters


def run_node(make_node: Callable[[], Node], args: list[str] | None = None) -> int:
    """Create the node with `make_node()` and spin it until shutdown. Returns the process exit code.

    Every node beats on /vla/heartbeat (ros/heartbeat.py).

    A ValueError while constructing the node (bad parameters, a bundle that disagrees with its parameters)
    is logged as one clear line and exits with code 2 instead of a traceback.
    """
    if os.sched_getscheduler(0) != os.SCHED_OTHER:
        # never inherit a realtime policy from whoever started us (e.g. a process that connected franky):
        # a FIFO-99 executor thread spinning on a 2-core machine starves the simulator and every other node
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
    use_stack_profile()  # started without bringup/launch (ros2 run): still the stack's DDS profile
    rclpy.init(args=args if args is not None else sys.argv)
    node = None
    heartbeat = None
    code = 0
    try:
        try:
            node = make_node()
            unknown = unknown_parameters(node)
            if unknown:
                raise ValueError(f"unknown parameter{'s' if len(unknown) > 1 else ''} for node "
                                 f"{node.get_name()!r}: {', '.join(unknown)}")
        except ValueError as exc:
            rclpy.logging.get_logger("vla_jepa_ros").fatal(f"refusing to start: {exc}")
            return 2
        heartbeat = Heartbeat(node)  # /vla/heartbeat on the wall clock: the task manager notices a lost node
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if heartbeat is not None:
            heartbeat.stop()
        if node is not None:
            close = getattr(node, "close", None)
            if callable(close):
                close()
            node.destroy_node()
        rclpy.try_shutdown()
    return code

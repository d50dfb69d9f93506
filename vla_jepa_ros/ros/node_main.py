"""The one `main()` pattern every node uses: init, spin, exit cleanly on Ctrl-C or SIGTERM.

Every node spins a SingleThreadedExecutor; work that may take long (inference, bag writing, simulation) runs on
the node's own threads, never in a callback. Measured on the 2-core machine with the sim graph running a task
(rclpy 9.1.2): with MultiThreadedExecutors the idle task_manager used 40 % of a core and the policy node 40 %
(the executor spins while a ready entity's callback is still running on a worker, e.g. every 5 ms /clock
message), and a sim node on MultiThreadedExecutor(num_threads=1) starved its own physics thread of the GIL
(real-time factor 0.04 once the controller connected). Single-threaded: task_manager ~0 %, policy 10 %,
real-time factor 0.77."""
from __future__ import annotations

import os
import sys
from typing import Callable

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node

from .dds import use_stack_profile


def run_node(make_node: Callable[[], Node], args: list[str] | None = None) -> int:
    """Create the node with `make_node()` and spin it until shutdown. Returns the process exit code.

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
    code = 0
    try:
        try:
            node = make_node()
        except ValueError as exc:
            rclpy.logging.get_logger("vla_jepa_ros").fatal(f"refusing to start: {exc}")
            return 2
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            close = getattr(node, "close", None)
            if callable(close):
                close()
            node.destroy_node()
        rclpy.try_shutdown()
    return code

"""QoS profiles used across the graph, in one place so publishers and subscribers always match."""
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

# Task status: late joiners (recorder, a restarted policy) must see the current task at once.
STATUS_QOS = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE,
                        durability=DurabilityPolicy.TRANSIENT_LOCAL)
# Camera frames: only the newest matters; never block the publisher on a slow subscriber.
SENSOR_QOS = QoSProfile(depth=2, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.BEST_EFFORT,
                        durability=DurabilityPolicy.VOLATILE)
# Camera subscriptions: deeper than the publishers' history, so frames wait in DDS while the executor is starved
# for a moment (on a loaded 2-core machine 1280x720 frames were lost at depth 2 and not at depth 10, see
# benchmarks/results/camera_transport.md); a subscriber still uses only the newest frame.
CAMERA_SUB_QOS = QoSProfile(depth=10, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.BEST_EFFORT,
                            durability=DurabilityPolicy.VOLATILE)
# Action chunks and robot state: small, each one matters.
RELIABLE_QOS = QoSProfile(depth=10, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE,
                          durability=DurabilityPolicy.VOLATILE)
# Task services and the RunTask action, both sides: every request and every response kept until taken. (The
# default service profile keeps the last 10: of 20 simultaneous requests the task manager dropped 10, and as the
# DDS layer sends each response to every client of the service, a client keeping 10 lost its own among 20.)
SERVICE_QOS = QoSProfile(depth=1000, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.VOLATILE)

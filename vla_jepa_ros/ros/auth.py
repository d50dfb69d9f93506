"""Signing and verifying ROS messages with core.auth: the message's fields, its `auth` field, node parameters.

The tag covers every field of the message except `auth.tag`, walked generically in declaration order (a field
added to a message later is covered without touching this file); kind is "<package>/<Type>".
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node

from ..core.auth import AuthError, AuthFields, Signer, Verifier, load_key


@dataclasses.dataclass(frozen=True)
class AuthParams:
    auth_key_file: str = dataclasses.field(
        default="", metadata={"help": "REQUIRED: the deployment's key file (vla-jepa keygen PATH; mode 0600). "
                                      "Control messages are signed and checked with it (docs/security.md)"})
    auth_max_age_s: float = dataclasses.field(
        default=5.0, metadata={"help": "refuse signed messages stamped further than this from our wall clock (s); "
                                       "hosts need synchronised clocks (NTP/PTP) well within it"})


def kind_of(msg: Any) -> str:
    return f"{type(msg).__module__.split('.')[0]}/{type(msg).__name__}"


def _is_message(value: Any) -> bool:
    return hasattr(type(value), "get_fields_and_field_types")


def _content(value: Any, ros_type: str = "") -> Any:
    if _is_message(value):
        return {name: _content(getattr(value, name), t) for name, t in type(value).get_fields_and_field_types().items()}
    if isinstance(value, (list, tuple)):
        return [_content(v) for v in value]
    if ros_type == "float" and isinstance(value, float):
        # rclpy keeps a float32 field as the Python float it was given; the wire carries it rounded to float32
        return float(np.float32(value))
    return value


def message_content(msg: Any) -> dict[str, Any]:
    """Every field of `msg` but `auth`, as nested dicts/lists/arrays, in declaration order, with the values the
    receiver will see (float32 fields rounded to float32)."""
    return {name: _content(getattr(msg, name), t) for name, t in type(msg).get_fields_and_field_types().items()
            if name != "auth"}


def sign_message(signer: Signer, msg: Any) -> Any:
    """Fill msg.auth (in place) and return msg. Sign after the last change to the message."""
    fields = signer.sign(kind_of(msg), message_content(msg))
    a = msg.auth
    a.sender, a.session, a.counter, a.stamp_ns, a.tag = (fields.sender, fields.session, fields.counter,
                                                          fields.stamp_ns, fields.tag)
    return msg


def auth_fields(msg: Any) -> AuthFields:
    a = msg.auth
    return AuthFields(a.sender, int(a.session), int(a.counter), int(a.stamp_ns), bytes(a.tag))


def verify_message(verifier: Verifier, msg: Any) -> str | None:
    """None when authentic and new, else the reason it is refused (counted by the verifier)."""
    return verifier.verify(kind_of(msg), message_content(msg), auth_fields(msg))


def declare_auth(node: Node, sender: str | None = None) -> tuple[Signer, Verifier]:
    """Declare auth_key_file / auth_max_age_s on `node`, load the key and return (signer, verifier).

    Raises ValueError (the node refuses to start, one line) when no key file is set or the file is unsafe."""
    values = {}
    for field in dataclasses.fields(AuthParams):
        descriptor = ParameterDescriptor(description=field.metadata["help"], dynamic_typing=True)
        values[field.name] = node.declare_parameter(field.name, field.default, descriptor).value
    path = values["auth_key_file"]
    if not isinstance(path, str) or not path:
        raise ValueError("auth_key_file is not set: control messages must be signed. Write a key with "
                         "`vla-jepa keygen PATH` and set auth_key_file: PATH for every node (the sim graph's "
                         "bringup makes one per run)")
    age = values["auth_max_age_s"]
    if isinstance(age, bool) or not isinstance(age, (int, float)) or not age > 0:
        raise ValueError(f"auth_max_age_s={age!r} must be a number > 0")
    try:
        key = load_key(path)
    except AuthError as exc:
        raise ValueError(str(exc)) from None
    return Signer(key, sender or node.get_name()), Verifier(key, max_age_s=float(age))


def publish_estop_release(key: bytes, released_by: str, reason: str, wait_s: float = 5.0,
                          sender: str = "estop_release") -> bool:
    """Publish one signed EStopRelease from a short-lived node; False when no subscriber appeared in wait_s."""
    import time

    import rclpy

    from vla_jepa_interfaces.msg import EStopRelease

    from .qos import RELIABLE_QOS

    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        node = rclpy.create_node(f"{sender}_{int(time.time() * 1e3) % 100000}", context=context)
        pub = node.create_publisher(EStopRelease, "/franka/estop_release", RELIABLE_QOS)
        deadline = time.monotonic() + wait_s
        while pub.get_subscription_count() == 0:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        msg = EStopRelease(released_by=released_by, reason=reason)
        msg.header.stamp = node.get_clock().now().to_msg()
        pub.publish(sign_message(Signer(key, sender), msg))
        time.sleep(0.5)  # let reliable delivery finish before the node goes
        node.destroy_node()
        return True
    finally:
        context.try_shutdown()

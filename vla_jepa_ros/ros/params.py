"""Declare a node's parameters from a config dataclass (defaults, descriptions, units) and build it back.

Each dataclass field becomes one ROS parameter with the field's default, type and
`metadata["help"]` as its description. The dataclass validates itself in __post_init__, so a bad
value raises ValueError naming the value and the limit, and the node refuses to start.
"""
from __future__ import annotations

import dataclasses
import typing
from typing import Any, TypeVar

from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node

T = TypeVar("T")


def declare_params(node: Node, cls: type[T], prefix: str = "") -> T:
    """Declare every field of dataclass `cls` on `node` (under `prefix.`) and return the built config."""
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for field in dataclasses.fields(cls):
        if not field.init:
            continue
        name = f"{prefix}.{field.name}" if prefix else field.name
        default = _default_of(field)
        # dynamic typing: `timeout_s: 60` in YAML (an int) must not crash a float parameter; _coerce converts
        descriptor = ParameterDescriptor(description=field.metadata.get("help", ""), dynamic_typing=True)
        value = node.declare_parameter(name, default, descriptor).value
        values[field.name] = _coerce(value, hints[field.name], name)
    return cls(**values)


def _default_of(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        value = field.default
    elif field.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        value = field.default_factory()  # type: ignore[misc]
    else:
        raise ValueError(f"config field {field.name!r} needs a default to be a ROS parameter")
    return list(value) if isinstance(value, tuple) else value


def _coerce(value: Any, hint: Any, name: str) -> Any:
    """ROS gives ints for float params written without a dot, lists for tuples; turn them back."""
    origin = typing.get_origin(hint)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"parameter {name} must be a number, got {value!r}")
        return float(value)
    if hint is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ValueError(f"parameter {name} must be an integer, got {value!r}")
    if hint is str and not isinstance(value, str):
        raise ValueError(f"parameter {name} must be a string, got {value!r}")
    if origin is tuple:
        args = typing.get_args(hint)
        elem = args[0] if args else Any
        return tuple(float(v) if elem is float else v for v in value)
    if hint is bool and not isinstance(value, bool):
        raise ValueError(f"parameter {name} must be a bool, got {value!r}")
    return value


# Settings a graph gives every node at once (`/**` in a params file, `-p '*.NAME=...'`): a node that has no use for
# one ignores it instead of calling it unknown.
GRAPH_WIDE_PARAMETERS = ("use_sim_time", "auth_key_file")


def unknown_parameters(node: Node) -> list[str]:
    """Parameters given to `node` (params files, -p overrides) that it never declared: misspellings, or settings
    of another node. rclpy ignores them silently; `run_node` refuses to start instead. Each entry names the
    closest declared parameter when there is one."""
    import difflib

    declared = list(node._parameters)  # noqa: SLF001 (rclpy has no public list of declared names)
    given = node._parameter_overrides  # noqa: SLF001 (nor of the overrides it was started with)
    found = []
    for name in sorted(given):
        if node.has_parameter(name) or name in GRAPH_WIDE_PARAMETERS:
            continue
        close = difflib.get_close_matches(name, declared, n=1, cutoff=0.75)
        found.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    return found

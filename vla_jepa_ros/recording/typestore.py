"""The rosbags typestore the recorder writes with: ROS 2 Kilted types plus vla_jepa_interfaces.

Bags carry every type's full definition (MCAP schema) and RIHS01 hash, so readers need no ROS install. The
custom types are registered from the interface package's .msg sources; their hashes match what rosidl
generates (checked in test_recorder_core.py against the installed <type>.json).
"""
from __future__ import annotations

import functools
from pathlib import Path

from rosbags.typesys import Stores, get_typestore, get_types_from_msg
from rosbags.typesys.store import Typestore

INTERFACES_PACKAGE = "vla_jepa_interfaces"


def interface_msg_dir() -> Path:
    """Folder with the vla_jepa_interfaces .msg files: the installed share dir, else this repository's sources."""
    candidates = []
    try:
        import vla_jepa_interfaces  # installed into <prefix>/lib/pythonX.Y/site-packages

        prefix = Path(vla_jepa_interfaces.__file__).resolve().parents[4]
        candidates.append(prefix / "share" / INTERFACES_PACKAGE / "msg")
    except ImportError:
        pass
    candidates.append(Path(__file__).resolve().parents[2] / "interfaces" / INTERFACES_PACKAGE / "msg")
    for folder in candidates:
        if any(folder.glob("*.msg")):
            return folder
    raise FileNotFoundError(f"no {INTERFACES_PACKAGE} .msg files in any of {[str(c) for c in candidates]}")


@functools.lru_cache(maxsize=1)
def make_typestore() -> Typestore:
    """Kilted typestore with vla_jepa_interfaces registered (cached: building it takes ~0.1 s)."""
    store = get_typestore(Stores.ROS2_KILTED)
    types: dict = {}
    for path in sorted(interface_msg_dir().glob("*.msg")):
        types.update(get_types_from_msg(path.read_text(), f"{INTERFACES_PACKAGE}/msg/{path.stem}"))
    store.register(types)
    return store


def check_known(store: Typestore, msgtypes: list[str]) -> None:
    """Raise ValueError naming every type the typestore does not know."""
    unknown = sorted({t for t in msgtypes if t not in store.fielddefs})
    if unknown:
        raise ValueError(f"unknown message type(s) {unknown}: the recorder knows the ROS 2 Kilted standard "
                         f"messages and {INTERFACES_PACKAGE}")

"""Remove Fast DDS shared-memory files that no live process holds (left behind by SIGKILLed nodes).

Fast DDS keeps a lock file `<segment>_el` next to every segment and listening port in /dev/shm and holds
an flock on it while the owner lives. A lock we can take means the owner is gone, so the segment (and, for
ports, its semaphore) is garbage. A port file with no lock file at all has no listener left (writers only
map it); it is removed too. Segments whose owner lives are never touched.
"""
from __future__ import annotations

import fcntl
import os
from pathlib import Path

SHM_DIR = Path("/dev/shm")


def _owner_alive(lock_path: Path) -> bool:
    try:
        fd = os.open(lock_path, os.O_RDWR)
    except OSError:
        return True  # cannot tell: leave it alone
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def _unlink(shm_dir: Path, names: tuple[str, ...], removed: list[str]) -> None:
    for name in names:
        try:
            (shm_dir / name).unlink()
            removed.append(name)
        except FileNotFoundError:
            pass


def remove_stale_fastdds_files(shm_dir: Path = SHM_DIR) -> list[str]:
    """Delete unowned Fast DDS segments/ports in `shm_dir`; return the names removed."""
    removed: list[str] = []
    if not shm_dir.is_dir():
        return removed
    for lock in sorted(shm_dir.glob("fastdds_*_el")):
        if not _owner_alive(lock):
            base = lock.name[: -len("_el")]
            _unlink(shm_dir, (base, lock.name, f"sem.{base}_mutex"), removed)
    for port in sorted(shm_dir.glob("fastdds_port*")):
        if not port.name.endswith("_el") and not (shm_dir / f"{port.name}_el").exists():
            _unlink(shm_dir, (port.name, f"sem.{port.name}_mutex"), removed)
    return removed

"""Remove Fast DDS shared-memory files that no live process holds (left behind by SIGKILLed nodes).

Fast DDS keeps a lock file `<segment>_el` next to every segment and listening port in /dev/shm and holds
an flock on it while the owner lives. A lock we can take means the owner is gone, so the segment (and, for
ports, its semaphore) is garbage. A port file with no lock file at all has no listener left. Either is
removed only if no live process still maps it: Fast DDS caches a port's mapping for the life of a process,
so unlinking a port that a live process (this one, say, between two rclpy contexts) has mapped splits it
from every later peer: they create a fresh file at the same name, and messages to that process vanish
while discovery still works. (Found as graph tests that saw every publisher but received nothing.)
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


def _mapped_names(shm_dir: Path) -> set[str]:
    """Names of the files in `shm_dir` that some live process has mapped (from /proc/<pid>/maps)."""
    prefix = f"{shm_dir}/"
    names: set[str] = set()
    for maps in Path("/proc").glob("[0-9]*/maps"):
        try:
            text = maps.read_text()
        except OSError:  # the process ended, or belongs to another user (it cannot map our files anyway)
            continue
        for line in text.splitlines():
            i = line.find(prefix)
            if i >= 0:
                names.add(line[i + len(prefix):].split(" (deleted)")[0].strip())
    return names


def _unlink(shm_dir: Path, names: tuple[str, ...], removed: list[str], mapped: set[str]) -> None:
    if any(name in mapped for name in names):
        return
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
    mapped = _mapped_names(shm_dir)
    for lock in sorted(shm_dir.glob("fastdds_*_el")):
        if not _owner_alive(lock):
            base = lock.name[: -len("_el")]
            _unlink(shm_dir, (base, lock.name, f"sem.{base}_mutex"), removed, mapped)
    for port in sorted(shm_dir.glob("fastdds_port*")):
        if not port.name.endswith("_el") and not (shm_dir / f"{port.name}_el").exists():
            _unlink(shm_dir, (port.name, f"sem.{port.name}_mutex"), removed, mapped)
    return removed

"""Summarise (and repair) episode bags: `python -m vla_jepa_ros.recording BAG... [--repair]`."""
from __future__ import annotations

from pathlib import Path

from .reader import EPISODE_FILE, BagReadError, EpisodeReader, repair_episode


def is_bag(path: Path) -> bool:
    """A .mcap file, or a folder with .mcap files or bag metadata (a broken bag is still a bag)."""
    if path.is_file():
        return path.suffix == ".mcap"
    return path.is_dir() and (any(path.glob("*.mcap")) or (path / "metadata.yaml").exists()
                              or (path / EPISODE_FILE).exists())


def main(argv: list[str] | None = None) -> int:
    """`vla-jepa bag-info BAG... [--repair]`: episode summary per bag (repair first); other files are skipped."""
    import argparse

    parser = argparse.ArgumentParser(prog="vla-jepa bag-info", description=main.__doc__)
    parser.add_argument("bags", nargs="+", help="episode bag folders (or .mcap files); other paths are skipped")
    parser.add_argument("--repair", action="store_true",
                        help="rewrite bags that were cut short (recorder killed, disk full) into clean ones; they "
                             "are marked repaired: not a full demonstration, whatever their outcome")
    args = parser.parse_args(argv)
    code = 0
    for bag in args.bags:
        path = Path(bag).expanduser()
        if path.exists() and not is_bag(path):
            print(f"{bag}: not an episode bag, skipped")
            continue
        try:
            if args.repair:
                repair_episode(bag)
            reader = EpisodeReader(bag, allow_truncated=True)
            meta = reader.metadata
            flags = (" TRUNCATED (use --repair)" if reader.truncated else "") + (
                " REPAIRED (cut short: not a full demonstration)" if meta.get("repaired") else "")
            print(f"{bag}: task {meta.get('task_id', '?')} outcome {meta.get('outcome') or '?'} recording "
                  f"{meta.get('recording_status', '?')}{flags}; {len(reader.files)} file(s), "
                  f"dropped {meta.get('dropped_total', '?')}")
            for topic, count in reader.message_counts.items():  # reads every chunk: CRCs checked
                print(f"  {topic:<40} {reader.topics[topic]:<42} {count}")
        except BagReadError as exc:
            print(f"{bag}: {exc}")
            code = 1
    return code


if __name__ == "__main__":
    raise SystemExit(main())

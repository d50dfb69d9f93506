"""Summarise (and repair) episode bags: `python -m vla_jepa_ros.recording BAG... [--repair]`."""
from __future__ import annotations

from .reader import BagReadError, EpisodeReader, repair_episode


def main(argv: list[str] | None = None) -> int:
    """`python -m vla_jepa_ros.recording BAG... [--repair]`: episode summary per bag (repair first)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m vla_jepa_ros.recording", description=main.__doc__)
    parser.add_argument("bags", nargs="+", help="episode bag folders (or .mcap files)")
    parser.add_argument("--repair", action="store_true", help="rewrite bags a killed recorder left open")
    args = parser.parse_args(argv)
    code = 0
    for bag in args.bags:
        try:
            if args.repair:
                repair_episode(bag)
            reader = EpisodeReader(bag, allow_truncated=True)
            meta = reader.metadata
            print(f"{bag}: task {meta.get('task_id', '?')} outcome {meta.get('outcome') or '?'} recording "
                  f"{meta.get('recording_status', '?')}{' TRUNCATED (use --repair)' if reader.truncated else ''}; "
                  f"{len(reader.files)} file(s), dropped {meta.get('dropped_total', '?')}")
            for topic, count in reader.message_counts.items():
                print(f"  {topic:<40} {reader.topics[topic]:<42} {count}")
        except BagReadError as exc:
            print(f"{bag}: {exc}")
            code = 1
    return code


if __name__ == "__main__":
    raise SystemExit(main())

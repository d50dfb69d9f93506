"""Markdown table of gpu_paper_fast.py result files (one section per file), optionally written into a document
between the markers `<!-- gpu-fast-table:start -->` and `<!-- gpu-fast-table:end -->`.

    python3 benchmarks/gpu_fast_table.py benchmarks/results/gpu_fast/fast_paper.json
    python3 benchmarks/gpu_fast_table.py --write docs/gpu_inference.md benchmarks/results/gpu_fast/*.json
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

START, END = "<!-- gpu-fast-table:start -->", "<!-- gpu-fast-table:end -->"


def _ms(pair) -> str:
    return f"{pair[0]:.2f} / {pair[1]:.2f}"


def table(results: list[dict]) -> str:
    """results: the JSON objects gpu_paper_fast.py writes -> markdown."""
    out = []
    for r in results:
        out.append(f"{r['card']}, torch {r['torch']}, preset {r['preset']} ({r['params_m']:.0f} M params, "
                   f"{r['views']} x {r['image_px']} px, prompt {r['prompt_len']} tokens of which "
                   f"{r['prompt_tokens_unpadded']} unpadded ({r.get('tokenizer', 'byte-level')} tokenizer), "
                   f"{r['euler_steps']} Euler steps), batch 1, "
                   f"{r['iterations']} calls; ms as median / p99; FP8 rules `{r['fp8_rules']}`, "
                   f"{r['fp8_scaling']} scales")
        out.append("")
        out.append("| variant | prefix | head | total | vs base | cosine vs base | max abs err | first call s | "
                   "peak GiB |")
        out.append("|---|---|---|---|---|---|---|---|---|")
        for row in r["rows"]:
            if "total_ms" not in row:
                out.append(f"| {row['variant']} | {row.get('error') or row.get('skipped')} ||||||||")
                continue
            mem = f"{row['peak_mem_gib']:.1f}" if "peak_mem_gib" in row else "-"
            vs = f"{row['vs_base']:.2f}x" if "vs_base" in row else "-"
            out.append(f"| {row['variant']} | {_ms(row['prefix_ms'])} | {_ms(row['head_ms'])} | "
                       f"{_ms(row['total_ms'])} | {vs} | {row['cosine']:.5f} | {row['max_abs_error']:.2e} | "
                       f"{row['first_call_s']:.1f} | {mem} |")
        out.append("")
    return "\n".join(out)


def write_into(doc: Path, text: str) -> None:
    body = doc.read_text()
    if START not in body or END not in body:
        raise SystemExit(f"{doc}: no {START} ... {END} markers to write the table between")
    new = re.sub(re.escape(START) + ".*?" + re.escape(END), lambda _: f"{START}\n{text}\n{END}", body, flags=re.S)
    doc.write_text(new)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results", nargs="+", help="fast_<preset>.json files")
    p.add_argument("--write", default="", help="a markdown file with the table markers")
    args = p.parse_args()
    text = table([json.loads(Path(f).read_text()) for f in args.results])
    if args.write:
        write_into(Path(args.write), text)
    else:
        sys.stdout.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

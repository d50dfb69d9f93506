"""Episode results -> JSON (schema below), per-task / per-suite tables with 95 % Wilson intervals, and the
robustness table in the shape of the paper's LIBERO-Plus table. Pure Python (no LIBERO).

results.json (schema_version 1):
    {"schema_version": 1, "kind": "libero_eval", "model_id": str, "bundle": str, "created_utc": str,
     "protocol": {ProtocolConfig fields}, "episodes_per_task": int, "workers": int, "wall_s": float,
     "episodes_per_min": float,
     "episodes": [{"suite", "task_id", "task_name", "instruction", "episode", "init_state", "success": bool,
                   "steps", "wall_s", "attempts", "queries", "error": str | null, "video": str | null}],
     "tasks":  [{"suite", "task_id", "task_name", "n", "successes", "success_rate", "ci95": [lo, hi]}],
     "suites": [{"suite", "n", "successes", "success_rate", "ci95", "num_tasks"}],
     "average": {"success_rate": mean of suite rates, "n", "successes", "ci95" (pooled)},
     "crashed": [{"suite", "task_id", "episode", "error"}]}   episodes that crashed twice: reported, NOT counted
"""
from __future__ import annotations

import dataclasses
from collections import defaultdict

from .protocol import PLUS_COLUMNS, base_suite, perturbation

SCHEMA_VERSION = 1
from ..core.stats import Z95, wilson_interval  # noqa: E402,F401  (shared with vla-jepa eval)


@dataclasses.dataclass
class EpisodeResult:
    suite: str
    task_id: int
    task_name: str
    instruction: str
    episode: int
    init_state: int
    success: bool
    steps: int
    wall_s: float
    attempts: int = 1
    queries: int = 0  # policy calls (chunks) in the episode
    error: str | None = None  # set only when the episode crashed (then it is not counted)
    video: str | None = None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _rate(successes: int, n: int) -> dict:
    lo, hi = wilson_interval(successes, n)
    return {"n": n, "successes": successes, "success_rate": successes / n if n else 0.0, "ci95": [lo, hi]}


def summarize(episodes: list[EpisodeResult]) -> dict:
    """-> {"tasks": [...], "suites": [...], "average": {...}, "crashed": [...]}; crashed episodes are listed
    separately and excluded from every rate."""
    counted = [e for e in episodes if e.error is None]
    crashed = [{"suite": e.suite, "task_id": e.task_id, "episode": e.episode, "error": e.error}
               for e in episodes if e.error is not None]
    by_task: dict[tuple[str, int], list[EpisodeResult]] = defaultdict(list)
    for e in counted:
        by_task[(e.suite, e.task_id)].append(e)
    tasks = []
    for (suite, tid), eps in sorted(by_task.items()):
        tasks.append({"suite": suite, "task_id": tid, "task_name": eps[0].task_name,
                      **_rate(sum(e.success for e in eps), len(eps))})
    by_suite: dict[str, list[EpisodeResult]] = defaultdict(list)
    for e in counted:
        by_suite[e.suite].append(e)
    suites = [{"suite": s, "num_tasks": len({e.task_id for e in eps}), **_rate(sum(e.success for e in eps), len(eps))}
              for s, eps in sorted(by_suite.items())]
    total = _rate(sum(e.success for e in counted), len(counted))
    average = {**total, "success_rate": (sum(s["success_rate"] for s in suites) / len(suites)) if suites else 0.0,
               "pooled_success_rate": total["success_rate"]}
    return {"tasks": tasks, "suites": suites, "average": average, "crashed": crashed}


def validate_results(d: dict) -> None:
    """Raise ValueError naming the first key or value that breaks the schema above."""
    def need(obj: dict, key: str, types, where: str):
        if key not in obj:
            raise ValueError(f"{where}: missing key {key!r}")
        if not isinstance(obj[key], types) or (types is not bool and isinstance(obj[key], bool) and bool not in
                                               (types if isinstance(types, tuple) else (types,))):
            raise ValueError(f"{where}.{key}={obj[key]!r} has type {type(obj[key]).__name__}, expected {types}")
        return obj[key]

    if d.get("schema_version") != SCHEMA_VERSION:
        raise ValueError(f"schema_version={d.get('schema_version')!r}, expected {SCHEMA_VERSION}")
    for key, t in (("kind", str), ("model_id", str), ("protocol", dict), ("episodes", list), ("tasks", list),
                   ("suites", list), ("average", dict), ("crashed", list), ("wall_s", (int, float)),
                   ("episodes_per_min", (int, float)), ("workers", int), ("episodes_per_task", int)):
        need(d, key, t, "results")
    for i, e in enumerate(d["episodes"]):
        w = f"episodes[{i}]"
        for key, t in (("suite", str), ("task_id", int), ("episode", int), ("success", bool), ("steps", int),
                       ("attempts", int), ("wall_s", (int, float))):
            need(e, key, t, w)
        if e.get("error") is not None and e["success"]:
            raise ValueError(f"{w}: a crashed episode (error={e['error'][:60]!r}) cannot be a success")
    for group in ("tasks", "suites"):
        for i, r in enumerate(d[group]):
            w = f"{group}[{i}]"
            n, s = need(r, "n", int, w), need(r, "successes", int, w)
            rate = need(r, "success_rate", (int, float), w)
            lo, hi = need(r, "ci95", list, w)
            if not 0 <= s <= n or abs(rate - (s / n if n else 0.0)) > 1e-9:
                raise ValueError(f"{w}: successes={s}, n={n}, success_rate={rate} are inconsistent")
            if not 0 <= lo <= rate <= hi <= 1:
                raise ValueError(f"{w}: ci95=[{lo}, {hi}] does not bracket success_rate={rate} within [0, 1]")
    counted = [e for e in d["episodes"] if e.get("error") is None]
    if sum(t["n"] for t in d["tasks"]) != len(counted):
        raise ValueError(f"tasks count {sum(t['n'] for t in d['tasks'])} episodes but {len(counted)} were counted")
    if len(d["crashed"]) != len(d["episodes"]) - len(counted):
        raise ValueError(f"crashed lists {len(d['crashed'])} episodes but {len(d['episodes']) - len(counted)} "
                         "episodes carry an error")


def _pct(rate: float) -> str:
    return f"{100 * rate:5.1f}"


def _ci(ci: list[float]) -> str:
    return f"[{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"


def format_table(summary: dict) -> str:
    """Markdown tables: per task, per suite and the average, success % with 95 % Wilson intervals."""
    lines = ["| suite | task | name | success % | 95 % CI | n |", "|---|---|---|---|---|---|"]
    for t in summary["tasks"]:
        lines.append(f"| {t['suite']} | {t['task_id']} | {t['task_name'][:60]} | {_pct(t['success_rate'])} | "
                     f"{_ci(t['ci95'])} | {t['n']} |")
    lines += ["", "| suite | success % | 95 % CI | n | tasks |", "|---|---|---|---|---|"]
    for s in summary["suites"]:
        lines.append(f"| {s['suite']} | {_pct(s['success_rate'])} | {_ci(s['ci95'])} | {s['n']} | {s['num_tasks']} |")
    a = summary["average"]
    lines.append(f"| **average** (mean of suites) | {_pct(a['success_rate'])} | {_ci(a['ci95'])} (pooled) | "
                 f"{a['n']} | |")
    if summary["crashed"]:
        lines += ["", f"**{len(summary['crashed'])} episode(s) crashed twice and are NOT counted:**"]
        lines += [f"- {c['suite']} task {c['task_id']} episode {c['episode']}: {c['error'].splitlines()[-1][:160]}"
                  for c in summary["crashed"]]
    return "\n".join(lines)


def robustness_table(summary: dict, model_id: str) -> str:
    """The paper's LIBERO-Plus table shape: one row per base suite (and the mean), one column per perturbation
    category; LIBERO-PRO measures Language (_lan), Layout (_swap), Object (_object) and Task (_task) offline;
    the other LIBERO-Plus categories print as n/a. 'Original' is the unperturbed suite when it was run."""
    rates: dict[tuple[str, str], float] = {}
    for s in summary["suites"]:
        rates[(base_suite(s["suite"]), perturbation(s["suite"]))] = s["success_rate"]
    bases = sorted({b for b, _ in rates})
    cols = [("Original", "")] + list(PLUS_COLUMNS)
    head = "| model / suite | " + " | ".join(c for c, _ in cols) + " | Avg (perturbed) |"
    lines = [head, "|" + "---|" * (len(cols) + 2)]
    for base in bases + ["mean"]:
        cells = []
        measured = []
        for _, suffix in cols:
            if suffix is None:
                cells.append("n/a")
                continue
            vals = [rates[(b, suffix)] for b in bases if (b, suffix) in rates] if base == "mean" else \
                ([rates[(base, suffix)]] if (base, suffix) in rates else [])
            if not vals:
                cells.append("–")
                continue
            v = sum(vals) / len(vals)
            cells.append(_pct(v).strip())
            if suffix:
                measured.append(v)
        avg = _pct(sum(measured) / len(measured)).strip() if measured else "–"
        lines.append(f"| {model_id} / {base} | " + " | ".join(cells) + f" | {avg} |")
    return "\n".join(lines)

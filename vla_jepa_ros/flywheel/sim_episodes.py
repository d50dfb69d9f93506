"""Run many randomised task episodes through the full simulated ROS graph (collect and eval share this).

One graph (task_manager, sim, policy, franka_controller and, when recording, recorder) runs every episode;
episode k uses layout seed `seed + k` (the sim node places the next task's objects as soon as a task ends). Each episode is
a real task through /vla/execute_task, ended by the sim's success check or by its timeout.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np

from ..sim.tasks import FAMILIES, PICK_UP, TaskSpec, parse_instruction
from ..sim.world import SimWorldConfig, random_layout

OUTCOMES = {2: "SUCCEEDED", 3: "FAILED", 4: "CANCELED", 5: "ABORTED"}


def _check_families(families: tuple[str, ...]) -> None:
    unknown = set(families) - set(FAMILIES)
    if unknown:
        raise ValueError(f"unknown task families {sorted(unknown)} (known: {', '.join(FAMILIES)})")


TARGETS = ("random", "near")


def _check_target(target: str) -> None:
    if target not in TARGETS:
        raise ValueError(f"target {target!r} must be one of {TARGETS}")


def near_cube_colour(layout_seed: int, config: SimWorldConfig = SimWorldConfig()) -> str:
    """The colour of the cube nearest the robot along its x axis in the layout drawn from `layout_seed`: the one
    farthest from the front camera and most often under the arm."""
    placements = random_layout(config, layout_seed).placements
    return min(config.cube_colours, key=lambda c: placements[f"{c}_cube"][0])


def episode_instructions(episodes_per_family: int, families: tuple[str, ...] = FAMILIES,
                         colours: tuple[str, ...] = ("red", "green", "blue"), seed: int = 0,
                         target: str = "random") -> list[str]:
    """Interleaved instructions: for each episode index, one per family. target "random": colours drawn from
    `seed`; "near": episode k names the cube nearest the robot in its layout (seed + k, the default sim world),
    which the arm hides from the front camera (a hard case for a learned policy)."""
    _check_families(families)
    _check_target(target)
    if target == "near":
        families_k = [f for _ in range(episodes_per_family) for f in families]
        return [TaskSpec(f, near_cube_colour(seed + k)).instruction for k, f in enumerate(families_k)]
    rng = np.random.default_rng(seed)
    return [TaskSpec(f, str(rng.choice(colours))).instruction for _ in range(episodes_per_family) for f in families]


def same_layout_instructions(episodes: int, families: tuple[str, ...] = FAMILIES,
                             colours: tuple[str, ...] = ("red", "green", "blue"), seed: int = 0,
                             target: str = "random") -> dict[str, list[str]]:
    """Per family, `episodes` instructions that name the same cube: run each list with layout seeds seed.. and
    episode k of every family meets the same layout and the same cube (families compared on equal terms)."""
    _check_families(families)
    _check_target(target)
    rng = np.random.default_rng(seed)
    picked = [near_cube_colour(seed + k) if target == "near" else str(rng.choice(colours)) for k in range(episodes)]
    return {family: [TaskSpec(family, colour).instruction for colour in picked] for family in families}


def family_of(instruction: str) -> str:
    return PICK_UP if instruction.startswith("pick up") else "put_in_bowl"


@dataclasses.dataclass
class EpisodeResult:
    episode: int
    seed: int
    instruction: str
    task_id: str
    outcome: str
    elapsed_s: float
    wall_s: float
    chunks: int
    strip: str = ""
    video: str = ""
    message: str = ""  # the task manager's reason for the outcome (e.g. "timed out after 30 s", "robot fault: ...")

    @property
    def success(self) -> bool:
        return self.outcome == "SUCCEEDED"


def run_sim_episodes(instructions: list[str], seed: int = 0, policy_params: dict | None = None,
                     record_dir: str | Path | None = None, out_dir: str | Path | None = None,
                     task_timeout_s: float = 40.0, progress: bool = True, params_file: str | None = None,
                     log_dir: str | Path | None = None, robot_host: str | None = None) -> list[EpisodeResult]:
    """Run one task per instruction (layout seed `seed + k` for episode k). Returns one result per episode.

    policy_params: parameters of the policy node (default: the scripted expert).
    record_dir: when set, the recorder writes one MCAP episode bag per task there.
    out_dir: when set, a captioned front-camera strip and a video per episode are saved there.
    robot_host: loopback address for franky-sim's servers (another 127.x.y.z lets two sims run side by side).
    """
    from tqdm import tqdm

    from ..bringup import Bringup, ensure_no_running_graph
    from ..sim.demo import GraphProbe
    from .media import save_strip, write_video

    nodes = ["task_manager", "sim", "policy", "franka_controller"] + (["recorder"] if record_dir else [])
    extra = {"sim": {"layout_seed": int(seed)}, "policy": policy_params or {"policy": "expert"}}
    if robot_host:
        extra["sim"]["world.robot_host"] = robot_host
        extra["franka_controller"] = {"arm.robot_host": robot_host}
    if record_dir:
        extra["recorder"] = {"output_dir": str(Path(record_dir).resolve())}
    results: list[EpisodeResult] = []
    ensure_no_running_graph()
    with Bringup("sim", params_file=params_file, extra_params=extra, nodes=nodes, log_dir=log_dir) as graph:
        probe = GraphProbe()
        try:
            probe.wait_ready(check=graph.check)
            bar = tqdm(instructions, desc="episodes", unit="ep", disable=not progress)
            for k, instruction in enumerate(bar):
                with probe.lock:
                    probe.chunks.clear()
                    probe.frames.clear()
                probe.record = True
                wall0, sim0 = time.monotonic(), probe.sim_time_s
                reply = probe.start_task(instruction, task_timeout_s, record=bool(record_dir))
                if not reply.accepted:
                    raise RuntimeError(f"episode {k}: task refused: {reply.message}")
                bar.set_description(f"episode {k + 1}: {instruction}")
                final = probe.wait_outcome(
                    reply.task_id, wall_timeout_s=task_timeout_s * 10 + 60, check=graph.check, progress_period_s=1.0,
                    on_progress=lambda: bar.set_postfix_str(f"{done(results)}; {probe.progress(instruction, sim0)}"))
                time.sleep(0.3)  # let the recorder see the terminal status and close the bag
                probe.record = False
                with probe.lock:
                    chunks = len(probe.chunks)
                    times, frames = [t for t, _ in probe.frames], [f for _, f in probe.frames]
                outcome = OUTCOMES.get(final.state, str(final.state))
                strip = video = ""
                if out_dir and frames:
                    name = Path(out_dir) / f"episode_{k:03d}_seed_{seed + k}"
                    strip = str(save_strip(frames, times, name.with_suffix(".png"), title=f"{instruction!r}: "
                                           f"{outcome} in {final.elapsed_s:.1f} s (layout {seed + k})"))
                    video = write_video(name.with_suffix(".mp4"), frames, fps=round(1 / probe.frame_period_s))
                results.append(EpisodeResult(k, seed + k, instruction, reply.task_id, outcome, float(final.elapsed_s),
                                             time.monotonic() - wall0, chunks, strip, video, final.message))
                bar.set_postfix_str(done(results))
        finally:
            probe.close()
    return results


def done(results: list[EpisodeResult]) -> str:
    return f"{sum(r.success for r in results)}/{len(results)} succeeded"


def success_table(results: list[EpisodeResult]) -> str:
    """Per task family: successes / episodes, rate with a 95 % Wilson interval, mean duration."""
    from ..core.stats import wilson_interval

    rows = [("family", "success", "rate", "95% CI", "mean time s")]
    groups: dict[str, list[EpisodeResult]] = {}
    for r in results:
        groups.setdefault(family_of(r.instruction), []).append(r)
    for name, group in [*sorted(groups.items()), ("all", results)]:
        s, n = sum(r.success for r in group), len(group)
        lo, hi = wilson_interval(s, n)
        rows.append((name, f"{s}/{n}", f"{100 * s / max(n, 1):.0f} %", f"[{100 * lo:.0f}, {100 * hi:.0f}] %",
                     f"{np.mean([r.elapsed_s for r in group]):.1f}" if group else "-"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in rows)


def episode_table(results: list[EpisodeResult]) -> str:
    lines = [f"{'ep':>3} {'seed':>5}  {'outcome':10} {'sim s':>6} {'wall s':>6} {'chunks':>6}  instruction"]
    lines += [f"{r.episode:3d} {r.seed:5d}  {r.outcome:10} {r.elapsed_s:6.1f} {r.wall_s:6.1f} {r.chunks:6d}  "
              f"{r.instruction}" + (f"  ({r.message})" if r.outcome in ("ABORTED", "CANCELED") else "")
              for r in results]
    return "\n".join(lines)


def paired_table(results: list[EpisodeResult]) -> str:
    """Families on the same layouts: each layout's outcome per family (S/F), then, for two families, how often
    they agree. Only layouts every family ran are compared."""
    by_seed: dict[int, dict[str, EpisodeResult]] = {}
    for r in results:
        by_seed.setdefault(r.seed, {})[family_of(r.instruction)] = r
    families = sorted({family_of(r.instruction) for r in results})
    seeds = sorted(seed for seed, runs in by_seed.items() if len(runs) == len(families))
    lines = [f"{'layout':>6}  {'cube':6}  " + "  ".join(f"{f:>11}" for f in families)]
    for seed in seeds:
        runs = by_seed[seed]
        spec = parse_instruction(runs[families[0]].instruction)
        cube = spec.colour if spec else "?"
        lines.append(f"{seed:6d}  {cube:6}  " + "  ".join(f"{'S' if runs[f].success else 'F':>11}" for f in families))
    if len(families) == 2 and seeds:
        a, b = families
        ok = [(by_seed[s][a].success, by_seed[s][b].success) for s in seeds]
        lines.append(f"\n{len(seeds)} layouts: both {sum(x and y for x, y in ok)}, only {a} {sum(x and not y for x, y in ok)}, "
                     f"only {b} {sum(y and not x for x, y in ok)}, neither {sum(not x and not y for x, y in ok)}")
    return "\n".join(lines)

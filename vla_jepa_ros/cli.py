"""`vla-jepa`: the project's command line. Each command imports only what it needs.

    vla-jepa demo [--episodes N]          simulated Franka, one task end to end through the ROS graph
    vla-jepa <command> --help             details of one command
"""
from __future__ import annotations

import argparse
import sys
from typing import Callable

Command = Callable[[list[str]], int]
COMMANDS: dict[str, tuple[str, Command]] = {}


def command(name: str, summary: str) -> Callable[[Command], Command]:
    def register(fn: Command) -> Command:
        if name in COMMANDS:
            raise ValueError(f"command {name!r} registered twice")
        COMMANDS[name] = (summary, fn)
        return fn
    return register


def _parser(name: str, description: str) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(prog=f"vla-jepa {name}", description=description,
                                   formatter_class=argparse.ArgumentDefaultsHelpFormatter)


@command("demo", "run the simulated Franka: send a task through the ROS graph, print a summary, save images")
def _demo(argv: list[str]) -> int:
    p = _parser("demo", "Bring up the sim graph (franky-sim FR3 in MuJoCo, cameras, policy, controller, task "
                        "manager), send 'put the red cube in the bowl' through /vla/execute_task, wait for the "
                        "outcome and print a summary. With --episodes N: N randomised episodes and a success rate.")
    p.add_argument("--episodes", type=int, default=1, help="number of randomised episodes")
    p.add_argument("--seed", type=int, default=0, help="seed of the first episode's layout")
    p.add_argument("--out-dir", default="demo_out", help="where image strips and the summary go")
    p.add_argument("--policy", default="expert", choices=["expert", "bundle"],
                   help="scripted expert (ground truth) or a learned model bundle")
    p.add_argument("--bundle", default=None, help="model bundle folder (with --policy bundle)")
    args = p.parse_args(argv)
    from .sim.demo import run_demo

    result = run_demo(episodes=args.episodes, seed=args.seed, out_dir=args.out_dir, policy=args.policy,
                      bundle=args.bundle)
    return 0 if result.get("ok", True) else 1


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        width = max(map(len, COMMANDS))
        lines = [f"  {n.ljust(width)}  {summary}" for n, (summary, _) in COMMANDS.items()]
        print(f"usage: vla-jepa COMMAND [ARGS]   (vla-jepa COMMAND --help for details)\n\ncommands:\n"
              + "\n".join(lines))
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        import difflib

        close = difflib.get_close_matches(name, COMMANDS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        print(f"vla-jepa: unknown command {name!r}{hint} (known: {', '.join(COMMANDS)})", file=sys.stderr)
        return 2
    return COMMANDS[name][1](rest)


if __name__ == "__main__":
    raise SystemExit(main())

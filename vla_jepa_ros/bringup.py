"""Start a node graph without `ros2 launch`: one process per node, supervised.

    vla-jepa-bringup --graph sim                    # until Ctrl-C, or until a node dies
    vla-jepa-bringup --graph franka -p policy.backend=onnxruntime

Each node runs as `python -m vla_jepa_ros.nodes.<x>_node --ros-args -r __node:=<name> --params-file <yaml>`.
SIGINT/SIGTERM are forwarded to every node; if one node dies, the others are stopped and the reason
(which node, its exit code or signal, the tail of its log) is reported. Logs go to <log_dir>/<node>.log.

Control messages are signed with the key in auth_key_file (docs/security.md). The sim graph gets a fresh key
per run in a private temp folder when none is configured; the franka graph refuses to start without one
(vla-jepa keygen PATH, then -p '*.auth_key_file=PATH' or the parameter file).

No task is left without an ending: when a node dies while the task manager lives, the rest is stopped only
once the task manager has ended the running task (it notices the lost node by its heartbeat and ends the task
ABORTED naming it), so the terminal status and the RunTask result reach their callers first. The graph is
stopped, not patched up by restarting the dead node: the task has already ended with its reason, and an operator
(or the caller: demo, eval) decides what runs next. Stopping the controller stops the arm.
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Iterable

from .graph import Graph, NodeSpec, get_graph, share_file
from .ros.dds import dds_environment
from .ros.shm import remove_stale_fastdds_files


def _die_with_parent() -> None:
    """In the child before exec (Linux): get SIGINT when the process that started us dies, even by SIGKILL,
    so a killed `vla-jepa demo` or test never leaves nodes running (holding franky-sim's ports, say)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGINT)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the parent's own cleanup still stops the nodes
        pass


class NodeDied(RuntimeError):
    """A node of the graph exited while the graph was supposed to be running."""


class GraphAlreadyRunning(RuntimeError):
    """Nodes of another graph answer in this ROS domain: a second graph there would mix topics with it."""


GRAPH_NODE_NAMES = ("task_manager", "sim", "policy", "franka_controller", "recorder")


def running_graph_nodes(wait_s: float = 1.5, names: Iterable[str] = GRAPH_NODE_NAMES) -> list[str]:
    """Full names of nodes called `names` that DDS discovery finds in this ROS domain within wait_s (or sooner)."""
    import rclpy

    wanted = set(names)
    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        node = rclpy.create_node("vla_jepa_graph_check", context=context)
        deadline = time.monotonic() + wait_s
        while True:
            found = sorted(f"{ns.rstrip('/')}/{n}" for n, ns in node.get_node_names_and_namespaces() if n in wanted)
            if found or time.monotonic() > deadline:
                node.destroy_node()
                return found
            time.sleep(0.1)
    finally:
        context.try_shutdown()


def ensure_no_running_graph(wait_s: float = 3.0) -> None:
    """Raise GraphAlreadyRunning, saying what to do, when another graph's nodes are up in this ROS domain
    (e.g. a second `vla-jepa eval` started beside a first one: both task managers would take the same tasks)."""
    found = running_graph_nodes(wait_s)
    if found:
        domain = os.environ.get("ROS_DOMAIN_ID", "0")
        raise GraphAlreadyRunning(
            f"another graph is running in ROS domain {domain} (nodes {', '.join(found)}); a second one there would "
            f"mix its topics and tasks with it. Stop that one, or give this one a domain of its own: "
            f"ROS_DOMAIN_ID=<0-101, not {domain}> and --robot-host 127.0.0.<n> (franky-sim's ports)")


def _exit_reason(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"


def node_command(spec: NodeSpec, params_files: list[Path], python: str = sys.executable) -> list[str]:
    """The command line that runs one node of the graph; later parameter files win."""
    cmd = [python, "-m", spec.module, "--ros-args", "-r", f"__node:={spec.name}"]
    for params_file in params_files:
        cmd += ["--params-file", str(params_file)]
    for src, dst in spec.remaps:
        cmd += ["-r", f"{src}:={dst}"]
    return cmd


def write_overrides(path: Path, node_name: str, params: dict[str, Any]) -> Path:
    """A parameter file for one node. (`-p` on the command line would lose against the node's own section
    of the main file, because rcl ranks node-specific entries above `-p` wildcards.)"""
    import yaml

    path.write_text(yaml.safe_dump({node_name: {"ros__parameters": params}}))
    return path


def configured_key_file(params_file: Path, extra_params: dict[str, dict[str, Any]], node_names: Iterable[str]) -> str:
    """The auth_key_file the nodes would get ('' = none): -p overrides, then the parameter file."""
    import yaml

    names = list(node_names)
    for scope in [*names, "*"]:
        if extra_params.get(scope, {}).get("auth_key_file"):
            return str(extra_params[scope]["auth_key_file"])
    try:
        data = yaml.safe_load(Path(params_file).read_text()) or {}
    except (OSError, yaml.YAMLError):
        return ""
    for scope in [*names, "/**", "**"]:
        section = data.get(scope) if isinstance(data, dict) else None
        params = section.get("ros__parameters") if isinstance(section, dict) else None
        value = params.get("auth_key_file") if isinstance(params, dict) else None
        if value:
            return str(value)
    return ""


class Bringup:
    """Context manager that runs a graph: `with Bringup("sim") as b: ...; b.check()`.

    extra_params: {node_name: {param: value}} (a key "*" applies to every node).
    nodes: restrict to these node names (default: every node of the graph).
    ephemeral_key: when no auth_key_file is configured, write a fresh key for this run (default: the graph's
    choice, true for sim); false raises ValueError instead. The key's path is `auth_key_file`.
    """

    def __init__(self, graph: str | Graph = "sim", params_file: str | Path | None = None,
                 extra_params: dict[str, dict[str, Any]] | None = None, nodes: Iterable[str] | None = None,
                 env: dict[str, str] | None = None, log_dir: str | Path | None = None, echo: bool = False,
                 ephemeral_key: bool | None = None) -> None:
        self.graph = graph if isinstance(graph, Graph) else get_graph(graph)
        self.params_file = Path(params_file) if params_file else share_file(self.graph.params_file)
        wanted = set(nodes) if nodes is not None else None
        self.specs = [s for s in self.graph.nodes if wanted is None or s.name in wanted]
        if wanted is not None and (unknown := wanted - {s.name for s in self.graph.nodes}):
            raise ValueError(f"nodes {sorted(unknown)} are not in graph {self.graph.name!r} "
                             f"({', '.join(s.name for s in self.graph.nodes)})")
        self.extra_params = extra_params or {}
        if unknown := set(self.extra_params) - {"*"} - {s.name for s in self.graph.nodes}:
            raise ValueError(f"parameters for nodes {sorted(unknown)} that graph {self.graph.name!r} does not have "
                             f"({', '.join(s.name for s in self.graph.nodes)}; * means every node)")
        self.env = {**os.environ, **(env or {})}
        self.env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
        self.env.setdefault("PYTHONUNBUFFERED", "1")
        self.env.update(dds_environment(self.env))  # camera-size frames need it (docs/cameras.md)
        self.log_dir = Path(log_dir) if log_dir else Path(tempfile.mkdtemp(prefix=f"vla_jepa_{self.graph.name}_"))
        self.echo = echo
        self.auth_key_file: Path | None = None
        self._key_dir: Path | None = None
        signing = [s.name for s in self.specs if s.signs]
        configured = configured_key_file(self.params_file, self.extra_params, signing)
        if configured:
            self.auth_key_file = Path(configured)
        elif signing:
            if not (self.graph.ephemeral_key if ephemeral_key is None else ephemeral_key):
                raise ValueError(f"graph {self.graph.name!r} needs auth_key_file (nodes {', '.join(signing)} sign "
                                 f"and check control messages): write a key with `vla-jepa keygen PATH` and pass "
                                 f"-p '*.auth_key_file=PATH' or set it in {self.params_file.name}")
            from .core.auth import write_key

            self._key_dir = Path(tempfile.mkdtemp(prefix="vla_jepa_key_"))  # mode 0700
            self.auth_key_file = write_key(self._key_dir / "auth.key")
            self.extra_params = {**self.extra_params,
                                 "*": {**self.extra_params.get("*", {}), "auth_key_file": str(self.auth_key_file)}}
        self.procs: dict[str, subprocess.Popen] = {}
        self.last_task_status: Any = None  # the task manager's last status, when a dead node ended the graph
        self._logs: dict[str, Any] = {}
        self._stopping = False

    # -- lifecycle -------------------------------------------------------------------------------------
    def start(self) -> "Bringup":
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for spec in self.specs:
            params = {**self.extra_params.get("*", {}), **self.extra_params.get(spec.name, {})}
            files = [self.params_file]
            if params:
                files.append(write_overrides(self.log_dir / f"{spec.name}.overrides.yaml", spec.name, params))
            cmd = node_command(spec, files)
            proc = subprocess.Popen(cmd, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True,  # we forward signals ourselves
                                    preexec_fn=_die_with_parent)
            self.procs[spec.name] = proc
            pump = threading.Thread(target=self._pump, args=(spec.name, proc), daemon=True)
            pump.start()
            self._logs[spec.name] = pump
        return self

    def _pump(self, name: str, proc: subprocess.Popen) -> None:
        """Copy a node's output to <log_dir>/<name>.log (and to stderr, prefixed, when echoing)."""
        with open(self.log_dir / f"{name}.log", "wb") as log:
            for line in iter(proc.stdout.readline, b""):
                log.write(line)
                log.flush()
                if self.echo:
                    sys.stderr.write(f"[{name}] {line.decode(errors='replace')}")

    def check(self) -> None:
        """Raise NodeDied naming the first node that has exited (and why)."""
        for name, proc in self.procs.items():
            code = proc.poll()
            if code is not None and not self._stopping:
                raise NodeDied(f"node {name!r} {_exit_reason(code)}; last log lines:\n{self.log_tail(name)}")

    def log_tail(self, name: str, lines: int = 15) -> str:
        path = self.log_dir / f"{name}.log"
        if not path.exists():
            return "(no log)"
        text = path.read_text(errors="replace").splitlines()
        return "\n".join("    " + line for line in text[-lines:])

    def wait_task_ended(self, timeout_s: float = 5.0, result_grace_s: float = 0.5) -> Any:
        """After a node died: wait (up to timeout_s) until the live task manager reports no running task, then
        result_grace_s more for the RunTask result to reach its caller. Returns the last TaskStatus seen (None when
        the task manager is gone or nothing was heard)."""
        tm = self.procs.get("task_manager")
        if tm is None or tm.poll() is not None:
            return None
        import rclpy
        from rclpy.executors import SingleThreadedExecutor

        from vla_jepa_interfaces.msg import TaskStatus

        from .ros.qos import STATUS_QOS

        context = rclpy.Context()
        rclpy.init(context=context)
        latest: list[Any] = []
        try:
            node = rclpy.create_node("bringup_task_watch", context=context)
            node.create_subscription(TaskStatus, "/vla/task_status", latest.append, STATUS_QOS)
            executor = SingleThreadedExecutor(context=context)
            executor.add_node(node)
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline and tm.poll() is None:
                executor.spin_once(timeout_sec=0.05)
                if latest and latest[-1].state != TaskStatus.RUNNING:
                    end = time.monotonic() + result_grace_s
                    while time.monotonic() < end:
                        executor.spin_once(timeout_sec=0.05)
                    break
            executor.shutdown()
            node.destroy_node()
        finally:
            context.try_shutdown()
        return latest[-1] if latest else None

    def stop(self, timeout_s: float = 5.0) -> dict[str, int]:
        """SIGINT every node, wait up to timeout_s, SIGKILL what is left. Returns exit codes by node.

        When a node has died on its own, the running task is ended first (wait_task_ended)."""
        if not self._stopping and any(p.poll() is not None for p in self.procs.values()):
            self._stopping = True
            status = self.wait_task_ended()
            if status is not None and status.task_id:
                self.last_task_status = status
                state = {1: "RUNNING", 2: "SUCCEEDED", 3: "FAILED", 4: "CANCELED", 5: "ABORTED"}.get(
                    status.state, str(status.state))
                print(f"[bringup] task {status.task_id} {state}: {status.message}", file=sys.stderr)
        self._stopping = True
        for proc in self.procs.values():
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGINT)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + timeout_s
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait()
        for pump in self._logs.values():
            pump.join(timeout=1.0)
        remove_stale_fastdds_files()
        if self._key_dir is not None:  # this run's key goes with it
            shutil.rmtree(self._key_dir, ignore_errors=True)
        return {name: proc.returncode for name, proc in self.procs.items()}

    def __enter__(self) -> "Bringup":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def supervise(self, poll_s: float = 0.2, stop_event: threading.Event | None = None) -> None:
        """Block until a node dies (raises NodeDied) or `stop_event` is set."""
        while stop_event is None or not stop_event.is_set():
            self.check()
            time.sleep(poll_s)


def _parse_param(text: str) -> tuple[str, str, Any]:
    """'node.param=value' -> (node, param, value parsed as YAML)."""
    import yaml

    if "=" not in text or "." not in text.split("=", 1)[0]:
        raise argparse.ArgumentTypeError(f"expected NODE.PARAM=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    node, param = key.split(".", 1)
    return node, param, yaml.safe_load(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="vla-jepa-bringup", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--graph", default="sim", help="graph to start: sim, franka, task_manager_only")
    parser.add_argument("--params-file", help="ROS parameter YAML (default: the graph's config/<graph>.yaml)")
    parser.add_argument("--nodes", nargs="+", help="start only these nodes of the graph")
    parser.add_argument("-p", "--param", action="append", default=[], type=_parse_param, metavar="NODE.PARAM=VALUE",
                        help="override one parameter of one node (NODE may be * for all); repeatable")
    parser.add_argument("--log-dir", help="where each node's log goes (default: a new temp dir)")
    parser.add_argument("--quiet", action="store_true", help="do not echo node output (read the logs instead)")
    args = parser.parse_args(argv)

    extra: dict[str, dict[str, Any]] = {}
    for node, param, value in args.param:
        extra.setdefault(node, {})[param] = value
    try:
        bringup = Bringup(args.graph, args.params_file, extra, args.nodes, log_dir=args.log_dir, echo=not args.quiet)
    except ValueError as exc:
        parser.error(str(exc))
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    bringup.start()
    print(f"[bringup] graph {bringup.graph.name!r}: {', '.join(bringup.procs)}; logs in {bringup.log_dir}",
          file=sys.stderr)
    try:
        bringup.supervise(stop_event=stop)
        code = 0
    except NodeDied as exc:
        print(f"[bringup] {exc}\n[bringup] stopping the other nodes", file=sys.stderr)
        code = 1
    codes = bringup.stop()
    print(f"[bringup] stopped: {codes}", file=sys.stderr)
    return code


if __name__ == "__main__":
    raise SystemExit(main())

"""The ROS 2 workspace path of docs/robot.md: package.xml declares what the code imports, rosdep's crawl finds the
nested interfaces package when given its folder, and a copy of the repository in a fresh workspace builds with
colcon against the venv, runs its programs from the workspace (`ros2 run` looks in lib/<package>) and passes a
fast subset of its tests under `colcon test` (pytest, not unittest)."""
from __future__ import annotations

import ast
import importlib.util
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PREFIX = Path(sys.prefix)  # the venv: the ros-* wheels install their share/<pkg>/package.xml here
DEP_TAGS = ("depend", "exec_depend", "build_depend", "build_export_depend", "test_depend")
# The fast subset `colcon test` runs: pure-Python core and the custom interfaces through rclpy serialization
# (the latter imports vla_jepa_interfaces as built by colcon in the workspace).
COLCON_TEST_SUBSET = ["test/test_interfaces.py", "test/test_safety.py"]


def _declared(package_xml: Path) -> set[str]:
    root = ET.parse(package_xml).getroot()
    return {e.text.strip() for tag in DEP_TAGS for e in root.findall(tag)}


def _imported_top_level(package_dir: Path) -> set[str]:
    names: set[str] = set()
    for path in package_dir.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names


def test_package_xml_declares_every_ros_package_the_code_imports():
    ros_packages = {n for n in _imported_top_level(ROOT / "vla_jepa_ros")
                    if (PREFIX / "share" / n / "package.xml").exists() or n == "vla_jepa_interfaces"}
    assert {"rclpy", "rcl_interfaces", "builtin_interfaces"} <= ros_packages  # the scan sees the ROS imports
    missing = ros_packages - _declared(ROOT / "package.xml")
    assert not missing, f"package.xml lacks <exec_depend> for {sorted(missing)} (imported by vla_jepa_ros/)"


def test_pytest_plugins_of_pytest_ini_are_test_dependencies():
    """`colcon test` runs pytest with pytest.ini, whose addopts need pytest-timeout and pytest-rerunfailures."""
    import configparser

    ini = configparser.ConfigParser()
    ini.read(ROOT / "pytest.ini")
    addopts = ini["pytest"]["addopts"]
    needed = {"pytest"} | ({"pytest-timeout"} if "--timeout" in addopts else set()) \
        | ({"pytest-rerunfailures"} if "--reruns" in addopts else set())
    setup_py = ast.parse((ROOT / "setup.py").read_text())
    extras = next((kw.value for node in ast.walk(setup_py) if isinstance(node, ast.Call)
                   for kw in node.keywords if kw.arg == "extras_require"), None)
    assert extras is not None, "setup.py has no extras_require: colcon test would run unittest and find 0 tests"
    test_extra = set(ast.literal_eval(extras)["test"])
    assert needed <= test_extra, f"setup.py extras_require['test'] lacks {sorted(needed - test_extra)}"
    assert {"python3-pytest", "python3-pytest-timeout"} <= _declared(ROOT / "package.xml")


def test_rosdep_crawl_needs_the_interfaces_folder(tmp_path):
    """rosdep (and colcon) stop descending at a package folder: `--from-paths src` alone misses the nested
    vla_jepa_interfaces, which rosdep then tries to resolve as a system key and fails. docs/robot.md names both."""
    from catkin_pkg.packages import find_packages

    src = tmp_path / "src"
    src.mkdir()
    (src / "vla_jepa_ros").symlink_to(ROOT, target_is_directory=True)
    only_src = {p.name for p in find_packages(str(src)).values()}
    assert only_src == {"vla_jepa_ros"}
    both = {p.name for path in (src, src / "vla_jepa_ros" / "interfaces") for p in find_packages(str(path)).values()}
    assert both == {"vla_jepa_ros", "vla_jepa_interfaces"}
    assert "vla_jepa_interfaces" in _declared(ROOT / "package.xml")


def _requirement_names(path: Path) -> list[str]:
    lines = (ln.split("#")[0].strip() for ln in path.read_text().splitlines())
    return [ln.split("==")[0].split("[")[0].lower().replace("_", "-") for ln in lines if ln]


def test_workspace_requirements_are_pinned_and_leave_ros_and_torch_to_the_host():
    """requirements/workspace.txt goes into a venv that sees a ROS install: no ros-* wheel may shadow its rclpy and
    messages, torch is the host's choice (CUDA or CPU), and every package is pinned by constraints.txt."""
    wanted = _requirement_names(ROOT / "requirements" / "workspace.txt")
    pinned = set(_requirement_names(ROOT / "requirements" / "constraints.txt"))
    assert wanted and not [n for n in wanted if n.startswith("ros-") or n == "torch"]
    assert not set(wanted) - pinned, f"not pinned in constraints.txt: {sorted(set(wanted) - pinned)}"
    # the runtime packages without a rosdep key (and the two pip keys skipped in docs/robot.md) are listed
    assert {"franky-control", "franky-sim", "onnxruntime", "rosbags", "mcap", "av", "pyarrow"} <= set(wanted)


def _copy_repo(dest: Path) -> None:
    """The repository's tracked files (what a `git clone` gives) into dest."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for rel in filter(None, files.decode().split("\0")):
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)


def _run(cmd: list[str], cwd: Path, env: dict, timeout_s: float) -> subprocess.CompletedProcess:
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout_s)
    assert res.returncode == 0, f"{' '.join(cmd)} exited {res.returncode}\n{res.stdout[-4000:]}\n{res.stderr[-4000:]}"
    return res


@pytest.mark.slow
@pytest.mark.timeout(600)  # builds the interfaces (rosidl generators + C compiles) on a loaded machine
def test_colcon_build_run_and_test_in_a_workspace(tmp_path):
    if importlib.util.find_spec("colcon_core") is None:
        pytest.skip("colcon is not installed in this venv (requirements/main.txt pins colcon-common-extensions)")
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: the test copies the tracked files")
    ws = tmp_path / "ws"
    _copy_repo(ws / "src" / "vla_jepa_ros")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COLCON", "AMENT", "CMAKE_PREFIX"))}
    env.update(AMENT_PREFIX_PATH=str(PREFIX), CMAKE_PREFIX_PATH=str(PREFIX),
               PATH=f"{PREFIX / 'bin'}{os.pathsep}{env.get('PATH', '')}", PYTHONDONTWRITEBYTECODE="1")
    colcon = [sys.executable, "-m", "colcon", "--log-base", str(ws / "log")]

    _run([*colcon, "build", "--base-paths", "src", "src/vla_jepa_ros/interfaces", "--parallel-workers", "1",
          "--cmake-args", f"-DPython3_EXECUTABLE={sys.executable}", "-DBUILD_TESTING=OFF"], ws, env, 600)

    # `ros2 run vla_jepa_ros X` runs install/vla_jepa_ros/lib/vla_jepa_ros/X: every program is there
    lib = ws / "install" / "vla_jepa_ros" / "lib" / "vla_jepa_ros"
    for prog in ("vla-jepa", "vla-jepa-bringup", "task_manager", "policy", "franka_controller", "recorder", "sim"):
        assert (lib / prog).is_file(), f"{prog} not in {lib}: {sorted(p.name for p in lib.iterdir())}"
    probe = ("from ament_index_python.packages import get_package_share_directory as d; "
             "import vla_jepa_interfaces, vla_jepa_ros.graph as g; "
             "print(d('vla_jepa_ros')); print(d('vla_jepa_interfaces')); print(vla_jepa_interfaces.__file__); "
             "print(g.share_file('config/franka.yaml'))")
    sourced = _run(["bash", "-c", f"source install/setup.bash && python -c \"{probe}\" && "
                    f"{lib / 'vla-jepa-bringup'} --help"], ws, env, 120).stdout.splitlines()
    install = str(ws / "install")
    assert all(line.startswith(install) for line in sourced[:4]), sourced[:4]  # the workspace's, not the repo's
    assert any("--nodes" in line for line in sourced[4:])

    # colcon test runs pytest (declared test extra) with pytest.ini on the fast subset
    _run([*colcon, "test", "--packages-select", "vla_jepa_ros", "--event-handlers", "console_cohesion+",
          "--pytest-args", *COLCON_TEST_SUBSET], ws, env, 300)
    junit = ws / "build" / "vla_jepa_ros" / "pytest.xml"
    assert junit.exists(), "colcon test did not run pytest (no pytest.xml)"
    suite = ET.parse(junit).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    tests, failed = int(suite.get("tests")), int(suite.get("failures")) + int(suite.get("errors"))
    assert tests >= 10 and failed == 0, f"{tests} tests, {failed} failed"
    modules = {part for c in suite.iter("testcase") for part in c.get("classname", "").split(".")}
    assert {"test_interfaces", "test_safety"} <= modules, modules
    _run([*colcon, "test-result", "--test-result-base", "build/vla_jepa_ros"], ws, env, 60)

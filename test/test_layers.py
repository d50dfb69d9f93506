"""Who may import whom (docs/architecture.md): an AST scan of every module, fast. A new edge against the rules
fails here; the edges that break them today are listed by name in KNOWN and may only shrink."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ROS = {"rclpy", "vla_jepa_interfaces", "sensor_msgs", "std_msgs", "std_srvs", "geometry_msgs", "diagnostic_msgs",
       "rosgraph_msgs", "builtin_interfaces", "rcl_interfaces", "launch", "launch_ros", "ament_index_python"}
PROGRAMS = {"vla_jepa_ros.bringup", "vla_jepa_ros.cli", "vla_jepa_ros.flywheel", "vla_jepa_ros.launch_description"}
NODES = {"vla_jepa_ros.nodes", "vla_jepa_ros.ros"}
STDLIB_AND_ARRAYS = {"numpy", "cv2", "__future__"}

# layer -> (third-party roots it may not import, project packages it may not import)
RULES = {
    "vla_jepa_ros.core": (ROS | {"torch", "onnxruntime", "mujoco", "franky", "av", "yaml", "rosbags", "mcap"},
                          {"vla_jepa_ros.*"}),  # any package of ours but core
    "vla_jepa_ros.robot": (ROS | {"torch", "onnxruntime", "mujoco"}, NODES | PROGRAMS | {"vla_jepa_ros.sim",
                                                                                        "vla_jepa_ros.runtime"}),
    "vla_jepa_ros.runtime": (ROS, NODES | PROGRAMS | {"vla_jepa_ros.sim", "vla_jepa_ros.robot"}),
    "vla_jepa_ros.sim": (ROS, NODES | PROGRAMS | {"vla_jepa_ros.runtime"}),
    "vla_jepa_ros.recording": ({"rclpy"}, NODES | PROGRAMS),
    "vla_jepa_ros.dataset": ({"rclpy"}, NODES | PROGRAMS),
    "vla_jepa_ros.nodes": (set(), PROGRAMS),
    "vla_jepa_ros.ros": (set(), PROGRAMS | {"vla_jepa_ros.nodes"}),
    "vla_jepa": ({"rclpy", "vla_jepa_ros"}, set()),
}
# Edges that break the rules today (module -> imported name), to be removed as the layers are restored.
KNOWN = {
    ("vla_jepa_ros.runtime.bench", "rclpy"), ("vla_jepa_ros.runtime.bench", "sensor_msgs"),
    ("vla_jepa_ros.runtime.bench", "vla_jepa_interfaces"), ("vla_jepa_ros.runtime.bench", "vla_jepa_ros.bringup"),
    ("vla_jepa_ros.runtime.bench", "vla_jepa_ros.ros"),
    ("vla_jepa_ros.sim.demo", "rclpy"), ("vla_jepa_ros.sim.demo", "rosgraph_msgs"),
    ("vla_jepa_ros.sim.demo", "sensor_msgs"), ("vla_jepa_ros.sim.demo", "vla_jepa_interfaces"),
    ("vla_jepa_ros.sim.demo", "vla_jepa_ros.ros"), ("vla_jepa_ros.sim.demo", "vla_jepa_ros.bringup"),
    ("vla_jepa_ros.sim.demo", "vla_jepa_ros.flywheel"),
}


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT / "training" if path.is_relative_to(ROOT / "training") else ROOT).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every name `path` imports, module level and inside functions, relative imports resolved."""
    mod = module_name(path)
    package = mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                found.add(".".join(base + ([node.module] if node.module else [])))
            else:
                found.add(node.module)
    return found


def violations() -> set[tuple[str, str]]:
    bad = set()
    files = [*(ROOT / "vla_jepa_ros").rglob("*.py"), *(ROOT / "training" / "vla_jepa").rglob("*.py")]
    for path in files:
        mod = module_name(path)
        layer = max((name for name in RULES if mod == name or mod.startswith(name + ".")), key=len, default=None)
        if layer is None:
            continue
        banned_roots, banned_packages = RULES[layer]
        for name in imports(path):
            root = name.split(".")[0]
            sub = ".".join(name.split(".")[:2])
            ours_banned = sub in banned_packages or ("vla_jepa_ros.*" in banned_packages and root == "vla_jepa_ros")
            if root in banned_roots or (ours_banned and not sub.startswith(layer)):
                bad.add((mod, sub if root == "vla_jepa_ros" else root))
    return bad


def test_no_import_breaks_the_layers():
    new = violations() - KNOWN
    assert not new, "imports against the layer rules (docs/architecture.md): " + \
        ", ".join(f"{m} -> {n}" for m, n in sorted(new))


def test_the_list_of_known_breaks_only_shrinks():
    fixed = KNOWN - violations()
    assert not fixed, f"these edges are gone: remove them from KNOWN so they cannot come back: {sorted(fixed)}"


def test_the_scan_sees_a_breaking_import(tmp_path, monkeypatch):
    probe = ROOT / "vla_jepa_ros" / "core" / "_layer_probe.py"
    probe.write_text("import rclpy\nfrom ..nodes import policy_node\n")
    try:
        found = violations()
    finally:
        probe.unlink()
    assert {("vla_jepa_ros.core._layer_probe", "rclpy"),
            ("vla_jepa_ros.core._layer_probe", "vla_jepa_ros.nodes")} <= found

"""A user's mistake on the command line is one line naming the value and the limit, exit code 2, before anything
starts (no graph, no simulator, no traceback)."""
import pytest

from vla_jepa_ros import bringup, cli


def run(capsys, main, argv):
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    err = capsys.readouterr().err
    return code, err


@pytest.mark.parametrize("argv, message", [
    (["eval", "/missing/bundle"], "vla-jepa eval: /missing/bundle/manifest.yaml: no manifest"),
    (["offline-eval", "models/tiny_sim", "/missing"], "vla-jepa offline-eval: /missing/meta.json: missing"),
    (["bags-to-dataset", "/missing", "out"], "vla-jepa bags-to-dataset: /missing: no such file or folder"),
    (["demo", "--episodes", "0"], "argument --episodes: 0 must be >= 1"),
    (["collect", "out", "--episodes-per-family", "-1"], "argument --episodes-per-family: -1 must be >= 1"),
    (["eval", "models/tiny_sim", "--backend", "foo"], "argument --backend: invalid choice: 'foo'"),
    (["eval", "models/tiny_sim", "--noise-scale", "nan"], "argument --noise-scale: 'nan' is not a finite number"),
    (["bench", "--threads", "0"], "argument --threads: 0 must be >= 1"),
    (["export", "a", "b", "--min-cosine", "2"], "argument --min-cosine: 2.0 must be <= 1.0"),
    (["render-layouts", "out", "--image-size-px", "3"], "argument --image-size-px: 3 must be >= 16"),
])
def test_bad_arguments_are_one_line_errors_with_exit_code_2(capsys, monkeypatch, argv, message):
    started = []
    monkeypatch.setattr(bringup.Bringup, "start", lambda self: started.append(self) or self)
    code, err = run(capsys, cli.main, argv)
    assert code == 2 and message in err, err
    assert "Traceback" not in err and not started


def test_bringup_refuses_parameters_for_a_node_the_graph_does_not_have(capsys):
    code, err = run(capsys, bringup.main, ["--graph", "sim", "-p", "polcy.noise_scale=0"])
    assert code == 2 and "parameters for nodes ['polcy'] that graph 'sim' does not have" in err


def test_a_node_refuses_a_parameter_it_does_not_declare(ros_context):
    from rclpy.node import Node
    from rclpy.parameter import Parameter

    from vla_jepa_ros.ros.params import unknown_parameters

    node = Node("n", context=ros_context, parameter_overrides=[Parameter("noise_scal", value=0.0),
                                                                 Parameter("threads", value=1),
                                                                 Parameter("auth_key_file", value="k")])
    node.declare_parameter("noise_scale", 1.0)
    node.declare_parameter("threads", 2)
    # a graph-wide setting (the key file every signing node reads) is not unknown to a node that does not sign
    assert unknown_parameters(node) == ["'noise_scal' (did you mean 'noise_scale'?)"]
    node.destroy_node()


def test_every_program_has_a_name_of_its_own_and_says_it_in_its_usage():
    """Both packages' console scripts: no two share a name (`vla-jepa export` and a `vla-jepa-export` that does
    something else confused users), and each one's --help shows the name it is called by, not `python -m ...`."""
    import subprocess
    import sys
    from importlib.metadata import entry_points
    from pathlib import Path

    ours = [e for e in entry_points(group="console_scripts") if e.value.split(".")[0] in ("vla_jepa", "vla_jepa_ros")]
    names = [e.name for e in ours]
    assert len(names) == len(set(names))
    subcommands = {f"vla-jepa-{c}" for c in cli.COMMANDS}
    assert not subcommands & set(names), f"programs named like a `vla-jepa` subcommand: {subcommands & set(names)}"
    bin_dir = Path(sys.executable).parent
    for name in ("vla-jepa-train", "vla-jepa-onnx", "vla-jepa-train-bench", "vla-jepa-recover"):
        out = subprocess.run([str(bin_dir / name), "--help"], capture_output=True, text=True, timeout=120).stdout
        assert out.startswith(f"usage: {name} "), out[:200]


def test_training_help_says_every_option_in_full():
    """`vla-jepa-train --help`: each option's text ends its sentence (multi-line field comments used to be cut
    after their first line, mid-sentence)."""
    from vla_jepa.train import TrainArgs
    import ast
    import inspect

    src = inspect.getsource(TrainArgs)
    assert "\n    #   " not in src, "a field comment continues on a second line: tyro shows only the first"
    docs = [n.value.value for n in ast.walk(ast.parse(src)) if isinstance(n, ast.Expr)
            and isinstance(n.value, ast.Constant) and isinstance(n.value.value, str)]
    assert len(docs) >= 30  # one per option, not only the class docstring

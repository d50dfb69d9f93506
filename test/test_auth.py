"""core.auth: key files, canonical bytes, tags, tampering of every field, replay and restart rules."""
from __future__ import annotations

import array
import dataclasses
import os

import numpy as np
import pytest

from vla_jepa_ros.core import auth
from vla_jepa_ros.core.auth import AuthError, Signer, Verifier

KEY = bytes(range(32))
KIND = "vla_jepa_interfaces/ActionChunk"


class Clock:
    def __init__(self, t_ns: int = 1_700_000_000_000_000_000) -> None:
        self.t_ns = t_ns

    def __call__(self) -> int:
        return self.t_ns

    def advance(self, s: float) -> None:
        self.t_ns += int(s * 1e9)


def content():
    return {"task_id": "task-3", "sequence": 7, "horizon": 2, "step_period_s": 0.1, "record": True,
            "dim_names": ["dx_m", "dy_m"], "data": array.array("f", [0.01, 0.0, -0.02, 0.5]),
            "pos": np.array([0.4, 0.0, 0.3]), "header": {"sec": 12, "nanosec": 5, "frame_id": "base"},
            "tag_bytes": b"\x00\x01"}


def pair(clock=None):
    clock = clock or Clock()
    return Signer(KEY, "policy", clock), Verifier(KEY, max_age_s=2.0, clock_ns=clock), clock


# ------------------------------------------------------------------ key files
def test_keygen_writes_a_private_key_and_load_reads_it(tmp_path):
    path = auth.write_key(tmp_path / "k")
    assert os.stat(path).st_mode & 0o777 == 0o600
    key = auth.load_key(path)
    assert len(key) == 32 and key != auth.load_key(auth.write_key(tmp_path / "k2"))


def test_keygen_refuses_to_overwrite_without_force(tmp_path):
    path = auth.write_key(tmp_path / "k")
    first = auth.load_key(path)
    with pytest.raises(AuthError, match="exists; refusing to overwrite"):
        auth.write_key(path)
    assert auth.load_key(path) == first
    auth.write_key(path, force=True)
    assert auth.load_key(path) != first


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o644, 0o602])
def test_a_key_file_group_or_others_may_access_is_refused(tmp_path, mode):
    path = auth.write_key(tmp_path / "k")
    os.chmod(path, mode)
    with pytest.raises(AuthError, match=f"mode {mode:04o}.*chmod 600") as e:
        auth.load_key(path)
    assert "\n" not in str(e.value)


def test_missing_and_malformed_key_files_are_refused_with_one_line(tmp_path):
    with pytest.raises(AuthError, match="not found.*vla-jepa keygen"):
        auth.load_key(tmp_path / "none")
    bad = tmp_path / "bad"
    bad.write_text("not hex\n")
    os.chmod(bad, 0o600)
    with pytest.raises(AuthError, match="64 hex characters"):
        auth.load_key(bad)
    os.chmod(bad, 0o400)  # read-only for the owner is fine as a mode
    bad.chmod(0o600)
    bad.write_text("ab" * 31 + "\n")
    with pytest.raises(AuthError, match="64 hex characters"):
        auth.load_key(bad)


# ------------------------------------------------------------------ canonical bytes
def test_canonical_bytes_are_unambiguous():
    c = auth.canonical
    assert c(["ab", "c"]) != c(["a", "bc"])
    assert c(1) != c(1.0) != c(True)
    assert c("1") != c(1)
    assert c(np.array([1, 2], np.int32)) != c(np.array([1, 2], np.int64))
    assert c(np.zeros((2, 3), np.float32)) != c(np.zeros((3, 2), np.float32))
    assert c(array.array("f", [1.0])) == c(np.array([1.0], np.float32))
    assert c(np.array([1.5], ">f8")) == c(np.array([1.5], "<f8"))  # byte order does not change the bytes
    assert c({"a": 1, "b": 2}) != c({"b": 2, "a": 1})
    with pytest.raises(TypeError):
        c(object())


# ------------------------------------------------------------------ tags and tampering
def test_a_signed_message_verifies_once():
    signer, verifier, _ = pair()
    fields = signer.sign(KIND, content())
    assert verifier.verify(KIND, content(), fields) is None
    assert verifier.verify(KIND, content(), fields) == auth.REPLAYED
    assert verifier.refused[(KIND, auth.REPLAYED)] == 1 and verifier.accepted[KIND] == 1


def _mutations(value):
    """Every leaf of `value` changed once: yields (path, changed copy)."""
    if isinstance(value, dict):
        for k, v in value.items():
            for path, changed in _mutations(v):
                yield f"{k}/{path}", {**value, k: changed}
    elif isinstance(value, list):
        for i, v in enumerate(value):
            for path, changed in _mutations(v):
                yield f"{i}/{path}", value[:i] + [changed] + value[i + 1:]
        yield "append", value + [value[-1]]
    elif isinstance(value, array.array):
        for i in range(len(value)):
            changed = array.array(value.typecode, value)
            changed[i] = changed[i] + 1.0
            yield f"[{i}]", changed
    elif isinstance(value, np.ndarray):
        for i in range(value.size):
            changed = value.copy()
            changed.flat[i] += 1e-9
            yield f"[{i}]", changed
    elif isinstance(value, bool):
        yield "", not value
    elif isinstance(value, (int, float)):
        yield "", value + 1
        yield "-", -value if value else value - 1
    elif isinstance(value, str):
        yield "", value + "x"
    elif isinstance(value, bytes):
        yield "", value[:-1] + bytes([value[-1] ^ 1])


def test_changing_any_content_field_breaks_the_tag():
    signer, verifier, _ = pair()
    fields = signer.sign(KIND, content())
    cases = list(_mutations(content()))
    assert len(cases) > 20
    for path, changed in cases:
        assert verifier.verify(KIND, changed, fields) == auth.BAD_TAG, path
    assert verifier.verify(KIND, content(), fields) is None  # the refusals did not consume the real one


def test_changing_any_auth_field_kind_or_key_breaks_the_tag():
    signer, verifier, _ = pair()
    fields = signer.sign(KIND, content())
    for name, value in [("sender", "policyx"), ("session", fields.session ^ 1), ("counter", fields.counter + 1),
                        ("stamp_ns", fields.stamp_ns + 1), ("tag", bytes([fields.tag[0] ^ 1]) + fields.tag[1:]),
                        ("tag", fields.tag[:-1])]:
        assert verifier.verify(KIND, content(), dataclasses.replace(fields, **{name: value})) == auth.BAD_TAG, name
    assert verifier.verify("vla_jepa_interfaces/TaskStatus", content(), fields) == auth.BAD_TAG
    other_key = Verifier(bytes(32), max_age_s=2.0, clock_ns=signer._clock_ns)
    assert other_key.verify(KIND, content(), fields) == auth.BAD_TAG
    assert verifier.verify(KIND, content(), fields) is None


def test_unsigned_messages_are_refused():
    _, verifier, _ = pair()
    assert verifier.verify(KIND, content(), auth.AuthFields()) == auth.UNSIGNED
    assert verifier.verify(KIND, content(), auth.AuthFields(sender="policy")) == auth.UNSIGNED
    assert verifier.counts()[f"auth_refused.{KIND}.unsigned"] == 2


# ------------------------------------------------------------------ replay and time
def test_old_and_duplicate_counters_are_refused_newer_ones_accepted():
    signer, verifier, clock = pair()
    signed = [signer.sign(KIND, content()) for _ in range(5)]
    assert verifier.verify(KIND, content(), signed[2]) is None
    assert verifier.verify(KIND, content(), signed[1]) == auth.REPLAYED  # older than the newest accepted
    assert verifier.verify(KIND, content(), signed[2]) == auth.REPLAYED
    assert verifier.verify(KIND, content(), signed[4]) is None
    assert verifier.verify(KIND, content(), signed[3]) == auth.REPLAYED


def test_messages_outside_the_time_window_are_refused():
    signer, verifier, clock = pair()
    old = signer.sign(KIND, content())
    clock.advance(2.5)
    assert verifier.verify(KIND, content(), old) == auth.EXPIRED
    early = Signer(KEY, "policy", lambda: clock() + int(3e9))
    assert verifier.verify(KIND, content(), early.sign(KIND, content())) == auth.EXPIRED
    assert verifier.verify(KIND, content(), signer.sign(KIND, content())) is None


def test_messages_signed_before_the_verifier_started_are_refused():
    clock = Clock()
    signer = Signer(KEY, "policy", clock)
    captured = signer.sign(KIND, content())
    clock.advance(0.5)
    restarted = Verifier(KEY, max_age_s=2.0, clock_ns=clock)  # a restarted controller forgot every counter
    assert restarted.verify(KIND, content(), captured) == auth.EXPIRED
    assert restarted.verify(KIND, content(), signer.sign(KIND, content())) is None


def test_a_restarted_sender_is_accepted_and_its_old_session_cannot_be_replayed():
    signer, verifier, clock = pair()
    before = [signer.sign(KIND, content()) for _ in range(3)]
    assert verifier.verify(KIND, content(), before[0]) is None
    clock.advance(0.1)
    restarted = Signer(KEY, "policy", clock)  # new session, counter from 1 again
    assert restarted.session != signer.session
    assert verifier.verify(KIND, content(), restarted.sign(KIND, content())) is None
    # the old session's later messages were signed before the restarted sender's first one: refused
    assert verifier.verify(KIND, content(), before[2]) == auth.REPLAYED
    assert verifier.verify(KIND, content(), restarted.sign(KIND, content())) is None


def test_senders_are_tracked_apart_and_the_table_stays_bounded():
    clock = Clock()
    verifier = Verifier(KEY, max_age_s=2.0, clock_ns=clock)
    a, b = Signer(KEY, "policy", clock), Signer(KEY, "task_manager", clock)
    assert verifier.verify(KIND, content(), b.sign(KIND, content())) is None
    assert verifier.verify(KIND, content(), a.sign(KIND, content())) is None  # b's counter does not matter
    for _ in range(3 * auth.SESSIONS_PER_SENDER):
        clock.advance(0.001)
        assert verifier.verify(KIND, content(), Signer(KEY, "policy", clock).sign(KIND, content())) is None
    assert len(verifier._senders["policy"].sessions) == auth.SESSIONS_PER_SENDER


def test_bad_arguments_are_refused():
    with pytest.raises(AuthError):
        Signer(b"short", "x")
    with pytest.raises(ValueError):
        Signer(KEY, "")
    with pytest.raises(ValueError, match="max_age_s"):
        Verifier(KEY, max_age_s=0)


# ------------------------------------------------------------------ ROS messages (no node needed)
def _ros_leaves(msg, prefix=""):
    """(path, owner, field name) of every leaf field of a ROS message, nested messages included."""
    for name in type(msg).get_fields_and_field_types():
        value = getattr(msg, name)
        if hasattr(type(value), "get_fields_and_field_types"):
            yield from _ros_leaves(value, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}", msg, name


def _changed(value):
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1
    if isinstance(value, str):
        return value + "x"
    if isinstance(value, array.array):
        return array.array(value.typecode, list(value) + [value[0] if len(value) else 1])
    if isinstance(value, np.ndarray):
        return value + 1
    if isinstance(value, list):
        return value + ["x"]
    raise TypeError(type(value))


def _sample_messages():
    from vla_jepa_interfaces.msg import ActionChunk, EStopRelease, TaskStatus

    chunk = ActionChunk(task_id="t-1", sequence=3, horizon=1, action_dim=2, step_period_s=0.1,
                        action_space="franka_delta_ee", dim_names=["dx_m", "gripper"],
                        data=array.array("f", [0.01, 1.0]), inference_ms=12.3456789012, model_id="m")
    chunk.header.stamp.sec, chunk.header.frame_id = 5, "base"
    status = TaskStatus(task_id="t-1", instruction="pick up the red cube", state=TaskStatus.RUNNING, steps=2,
                        elapsed_s=1.5, timeout_s=60.0, record=True, message="started")
    return [chunk, status, EStopRelease(released_by="alice", reason="cell clear")]


def test_every_field_of_the_signed_ros_messages_is_covered_by_the_tag():
    import copy

    from rclpy.serialization import deserialize_message, serialize_message

    from vla_jepa_ros.ros.auth import sign_message, verify_message

    clock = Clock()
    for original in _sample_messages():
        signed = sign_message(Signer(KEY, "policy", clock), original)
        leaves = [path for path, *_ in _ros_leaves(signed) if path != "auth.tag"]
        assert "auth.counter" in leaves and "header.stamp.nanosec" in leaves
        for path in leaves:
            msg = copy.deepcopy(signed)
            owner, name = next((o, n) for p, o, n in _ros_leaves(msg) if p == path)
            setattr(owner, name, _changed(getattr(owner, name)))
            verifier = Verifier(KEY, max_age_s=2.0, clock_ns=clock)
            verifier.started_ns -= int(1e9)  # a stamp_ns + 1 still counts as after the verifier's start
            assert verify_message(verifier, msg) == auth.BAD_TAG, f"{type(msg).__name__}.{path}"
        verifier = Verifier(KEY, max_age_s=2.0, clock_ns=clock)
        wire = serialize_message(signed)  # what a receiver gets (float32 fields rounded, arrays retyped)
        assert verify_message(verifier, deserialize_message(wire, type(signed))) is None, type(signed).__name__
        assert verify_message(verifier, deserialize_message(wire, type(signed))) == auth.REPLAYED
        unsigned = copy.deepcopy(signed)
        unsigned.auth.tag = array.array("B")
        assert verify_message(verifier, unsigned) == auth.UNSIGNED


# ------------------------------------------------------------------ keygen, bringup, nodes
def test_cli_keygen_writes_0600_and_refuses_to_overwrite(tmp_path, capsys):
    from vla_jepa_ros.cli import main

    path = tmp_path / "robot.key"
    assert main(["keygen", str(path)]) == 0
    assert os.stat(path).st_mode & 0o777 == 0o600
    key = auth.load_key(path)
    assert main(["keygen", str(path)]) == 1
    err = capsys.readouterr().err
    assert "exists; refusing to overwrite" in err and "Traceback" not in err
    assert auth.load_key(path) == key
    assert main(["keygen", str(path), "--force"]) == 0 and auth.load_key(path) != key
    assert main(["keygen", str(tmp_path / "no" / "dir.key")]) == 1


def test_bringup_makes_a_private_key_per_sim_run_and_removes_it(tmp_path):
    from vla_jepa_ros.bringup import Bringup

    runs = [Bringup("sim", log_dir=tmp_path / str(i)) for i in range(2)]
    keys = [auth.load_key(b.auth_key_file) for b in runs]  # load_key checks mode 0600 and the owner
    assert keys[0] != keys[1]
    for b in runs:
        assert os.stat(b.auth_key_file.parent).st_mode & 0o777 == 0o700
        assert b.extra_params["*"]["auth_key_file"] == str(b.auth_key_file)
        b.stop()
        assert not b.auth_key_file.exists()


def test_bringup_uses_a_configured_key_and_refuses_the_robot_graph_without_one(tmp_path):
    from vla_jepa_ros.bringup import Bringup, main

    with pytest.raises(ValueError, match="graph 'franka' needs auth_key_file.*vla-jepa keygen"):
        Bringup("franka", log_dir=tmp_path)
    with pytest.raises((ValueError, SystemExit)):  # (main: a usage error, exit code 2)
        main(["--graph", "franka", "--log-dir", str(tmp_path), "--quiet"])
    assert Bringup("franka", nodes=["recorder"], log_dir=tmp_path).auth_key_file is None  # records, never signs
    key = auth.write_key(tmp_path / "robot.key")
    b = Bringup("franka", extra_params={"*": {"auth_key_file": str(key)}}, log_dir=tmp_path)
    assert b.auth_key_file == key
    params = tmp_path / "p.yaml"
    params.write_text(f"/**:\n  ros__parameters:\n    auth_key_file: {key}\n")
    assert Bringup("sim", params_file=params, log_dir=tmp_path).auth_key_file == key
    b.stop()
    assert key.exists()  # a configured key is never removed


@pytest.mark.slow
def test_nodes_refuse_to_start_without_a_safe_key(tmp_path):
    import subprocess
    import sys

    env = {**os.environ, "ROS_LOG_DIR": str(tmp_path)}
    loose = auth.write_key(tmp_path / "loose.key")
    os.chmod(loose, 0o644)
    for extra, expected in [([], "auth_key_file is not set"),
                            (["-p", f"auth_key_file:={loose}"], "mode 0644: group/others may access it")]:
        proc = subprocess.run([sys.executable, "-m", "vla_jepa_ros.nodes.task_manager_node", "--ros-args", *extra],
                              env=env, capture_output=True, text=True, timeout=60)
        out = proc.stdout + proc.stderr
        assert proc.returncode == 2 and "refusing to start" in out and expected in out, out[-2000:]
        assert "Traceback" not in out

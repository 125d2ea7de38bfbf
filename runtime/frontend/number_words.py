"""English number words for digit runs, equal to `inflect.engine().number_to_words(run)` on a run of digits.

That is what upstream's `spell_out_number` calls for each maximal run of `str.isdigit()` characters in
non-Chinese text: "2024" -> "two thousand and twenty-four", "1000005" -> "one million and five",
"1234" -> "one thousand, two hundred and thirty-four", "007" -> "seven".
"""

from __future__ import annotations

_UNITS = ("", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
_TEENS = ("ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen")
_TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")
_SCALES = (
    "",
    "thousand",
    "million",
    "billion",
    "trillion",
    "quadrillion",
    "quintillion",
    "sextillion",
    "septillion",
    "octillion",
    "nonillion",
    "decillion",
)


def _below_hundred(n: int) -> str:
    if n < 10:
        return _UNITS[n]
    if n < 20:
        return _TEENS[n - 10]
    tens, units = divmod(n, 10)
    return _TENS[tens] + ("-" + _UNITS[units] if units else "")


def _group_words(n: int) -> str:
    """0 < n < 1000, e.g. "three hundred and five"."""
    hundreds, rest = divmod(n, 100)
    if not hundreds:
        return _below_hundred(rest)
    return f"{_UNITS[hundreds]} hundred" + (f" and {_below_hundred(rest)}" if rest else "")


def digits_to_words(run: str) -> str | None:
    """Words for a run of digit characters, or None if inflect would fail (over 36 significant digits).

    Characters that are digits for `str.isdigit` but not decimal digits (superscripts, circled digits) are
    dropped, as inflect drops non-`\\d` characters; a run with no decimal digit reads "zero", as inflect's does.
    """
    decimal = "".join(c for c in run if c.isdecimal())
    value = int(decimal) if decimal else 0
    if value == 0:
        return "zero"
    groups = []  # (scale index, 0 < value < 1000), most significant first
    k = 0
    while value:
        value, g = divmod(value, 1000)
        if g:
            groups.append((k, g))
        k += 1
    if k > len(_SCALES):
        return None
    groups.reverse()
    words = [_group_words(g) + (f" {_SCALES[k]}" if k else "") for k, g in groups]
    # inflect joins groups with ", " but a last group that is one word (no hundreds, units scale) with " and ".
    if len(words) > 1 and groups[-1][0] == 0 and " " not in words[-1]:
        return ", ".join(words[:-1]) + " and " + words[-1]
    return ", ".join(words)


def spell_out_numbers(text: str) -> str:
    """Replace every maximal run of `str.isdigit()` characters by its English words."""
    out, run = [], []
    for ch in text + "\0":
        if ch.isdigit():
            run.append(ch)
            continue
        if run:
            digits = "".join(run)
            out.append(digits_to_words(digits) or digits)
            run = []
        out.append(ch)
    return "".join(out[:-1])

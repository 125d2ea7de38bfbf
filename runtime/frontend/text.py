"""CosyVoice2/3's text tokenizer on HF `tokenizers`: Qwen2 byte-level BPE plus the family's special tokens.

Equal to upstream `CosyVoice2Tokenizer.encode` (transformers' Qwen2TokenizerFast + add_special_tokens):
NFC normalizer, Qwen2's split regex, byte-level mapping, BPE with the bundle's merges, no BOS/EOS. Special
tokens are matched verbatim before normalisation and BPE: the three Qwen2 ones (151643-151645, ids from
tokenizer_config.json when present) and the family's (CosyVoice2: 17, ids 151646-151662; CosyVoice3: 278,
up to 151923), in upstream's list order, which a pack carries in frontend/added_special_tokens.json.

Without merges.txt, merge ranks are recovered from vocab.json: a Qwen2 vocabulary is ordered by merge
(token id 256 + i is the result of merge i), so each token's merge is the last step of BPE over its own
characters using only lower-ranked tokens (`merges_from_vocab`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from specs.errors import ToolError
from specs.schema import read_json

QWEN2_SPLIT_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
QWEN2_SPECIAL_TOKENS = {"<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645}
# Added by upstream's CosyVoice2Tokenizer after the Qwen2 ones, in this order (ids 151646...).
COSYVOICE2_SPECIAL_TOKENS = (
    "<|endofprompt|>",
    "[breath]",
    "<strong>",
    "</strong>",
    "[noise]",
    "[laughter]",
    "[cough]",
    "[clucking]",
    "[accent]",
    "[quick_breath]",
    "<laughter>",
    "</laughter>",
    "[hissing]",
    "[sigh]",
    "[vocalized-noise]",
    "[lipsmack]",
    "[mn]",
)
COSYVOICE2_VOCAB_SIZE = 151663  # len(upstream tokenizer): 151643 BPE ids + 3 Qwen2 + 17 CosyVoice2 specials


class TextTokenizer:
    """Text -> token ids for the LLM. Build with `from_files` or `from_pack`."""

    def __init__(self, backend, special_tokens: dict[str, int]):
        self._tok = backend
        self.special_tokens = dict(special_tokens)

    # ---- construction ------------------------------------------------------------------------------------
    @classmethod
    def from_files(
        cls,
        vocab_path: str | Path,
        merges_path: str | Path | None = None,
        tokenizer_config_path: str | Path | None = None,
        added_specials: Sequence[str] = COSYVOICE2_SPECIAL_TOKENS,
    ) -> TextTokenizer:
        """merges_path None: merges recovered from the vocabulary; tokenizer_config_path None: Qwen2's
        three specials at 151643-151645; `added_specials`: the family's special tokens after Qwen2's, in
        upstream's order (CosyVoice2's 17 by default; a CosyVoice3 pack carries its 278 in
        frontend/added_special_tokens.json)."""
        vocab = read_json(Path(vocab_path), "file", "Qwen2 vocab.json (token -> id)")
        if not isinstance(vocab, dict) or not all(isinstance(v, int) for v in vocab.values()):
            raise ToolError(vocab_path, "is not a token -> id mapping", "Qwen2's vocab.json")
        base_specials = _base_specials(Path(tokenizer_config_path) if tokenizer_config_path else None)
        bpe_vocab = {t: i for t, i in vocab.items() if t not in base_specials}
        if merges_path is None:
            merges = merges_from_vocab(bpe_vocab, where=str(vocab_path))
        else:
            merges = read_merges(Path(merges_path))
        specials = _special_ids(base_specials, added_specials)
        return cls(_build_backend(bpe_vocab, merges, specials, base_specials, vocab_path), specials)

    @classmethod
    def from_pack(cls, pack) -> TextTokenizer:
        """From the pack's `frontend` section (tokenizer_vocab, optional tokenizer_merges / tokenizer_config)."""
        files = pack.manifest.get("frontend", {})
        if "tiktoken_ranks" in files:  # CosyVoice 1: a tiktoken encoding, not Qwen2's BPE
            from runtime.frontend.text_tiktoken import TiktokenTextTokenizer

            return TiktokenTextTokenizer.from_pack(pack)  # type: ignore[return-value]
        if "tokenizer_vocab" not in files:
            raise ToolError(
                pack.root / "manifest.json",
                "frontend section lists no tokenizer_vocab",
                "a pack exported with its bundle's CosyVoice-BlankEN/vocab.json",
            )

        def path_of(key):  # optional files: merges are derived, specials defaulted when absent
            path = pack.root / files[key]["file"] if key in files else None
            return path if path is not None and path.is_file() else None

        added_path = path_of("added_special_tokens")
        if added_path is not None:
            added = read_json(added_path, "file", "a JSON list of the family's added special tokens")
            if not isinstance(added, list) or not all(isinstance(t, str) for t in added):
                raise ToolError(added_path, "is not a list of strings", "the added special tokens, upstream's order")
        elif pack.family == "cosyvoice2":  # packs written before the list was shipped
            added = list(COSYVOICE2_SPECIAL_TOKENS)
        else:
            raise ToolError(
                pack.root / "manifest.json",
                f"frontend section lists no added_special_tokens for this {pack.family} pack",
                "a pack written by tts-export (frontend/added_special_tokens.json)",
            )
        return cls.from_files(
            path_of("tokenizer_vocab"), path_of("tokenizer_merges"), path_of("tokenizer_config"), added
        )

    # ---- use ---------------------------------------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self._tok.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = True) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def __len__(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)


# ---- merges --------------------------------------------------------------------------------------------
def read_merges(path: Path) -> list[tuple[str, str]]:
    """merges.txt: an optional `#version` line, then one `left right` pair per line, highest priority first."""
    merges = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ToolError(path, f"cannot be read ({e})", "Qwen2's merges.txt (UTF-8)") from None
    for lineno, line in enumerate(lines, 1):
        if not line or (lineno == 1 and line.startswith("#version")):
            continue
        parts = line.split(" ")
        if len(parts) != 2:
            raise ToolError(
                f"{path}:{lineno}", f"is not a merge pair: {line[:60]!r}", "two tokens separated by one space"
            )
        merges.append((parts[0], parts[1]))
    return merges


def merges_from_vocab(vocab: dict[str, int], where: str = "vocab.json") -> list[tuple[str, str]]:
    """Merge list recovered from a merge-ordered byte-level BPE vocabulary (id order = merge priority)."""
    merges = []
    for token, rank in sorted(vocab.items(), key=lambda kv: kv[1]):
        if len(token) == 1:
            continue  # one of the 256 byte symbols
        parts = list(token)
        while len(parts) > 2:
            best_rank, best_at = rank, -1
            for i in range(len(parts) - 1):
                r = vocab.get(parts[i] + parts[i + 1], rank)
                if r < best_rank:
                    best_rank, best_at = r, i
            if best_at < 0:
                break
            parts[best_at : best_at + 2] = [parts[best_at] + parts[best_at + 1]]
        if len(parts) != 2 or any(p not in vocab for p in parts):
            raise ToolError(
                where,
                f"token {token!r} (id {rank}) cannot be built from lower-ranked tokens",
                "a merge-ordered vocabulary, or merges.txt next to it",
            )
        merges.append((parts[0], parts[1]))
    return merges


# ---- helpers -------------------------------------------------------------------------------------------
def _base_specials(config_path: Path | None) -> dict[str, int]:
    """Qwen2's special tokens with their ids: from tokenizer_config.json's added_tokens_decoder if given."""
    if config_path is None:
        return dict(QWEN2_SPECIAL_TOKENS)
    config = read_json(config_path, "file", "tokenizer_config.json of the Qwen2 tokenizer")
    decoder = config.get("added_tokens_decoder") or {}
    found = {entry["content"]: int(i) for i, entry in decoder.items() if entry.get("special", True)}
    return found or dict(QWEN2_SPECIAL_TOKENS)


def _special_ids(base_specials: dict[str, int], added: Sequence[str]) -> dict[str, int]:
    """Ids as transformers' add_special_tokens gives them: tokens already present keep theirs (upstream's lists
    repeat <|im_start|> / <|im_end|>), the others get the next free ids in list order."""
    next_id = max(base_specials.values()) + 1
    ids = dict(base_specials)
    for t in added:
        if t not in ids:
            ids[t] = next_id
            next_id += 1
    return ids


def _build_backend(
    vocab: dict[str, int],
    merges: list[tuple[str, str]],
    specials: dict[str, int],
    base_specials: dict[str, int],
    where,
):
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers
    from tokenizers.models import BPE

    if max(vocab.values()) >= min(base_specials.values()):
        raise ToolError(
            where,
            f"BPE ids reach {max(vocab.values())}, overlapping the special tokens from {min(base_specials.values())}",
            "a Qwen2 vocab.json with ids below the specials",
        )
    try:
        model = BPE(
            vocab=vocab,
            merges=merges,
            dropout=None,
            unk_token=None,
            continuing_subword_prefix="",
            end_of_word_suffix="",
            fuse_unk=False,
            byte_fallback=False,
        )
    except Exception as e:  # merges naming tokens that are not in the vocabulary
        raise ToolError(
            where, f"vocab and merges do not fit together ({e})", "vocab.json and merges.txt from one Qwen2 tokenizer"
        ) from None
    tok = Tokenizer(model)
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_SPLIT_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    # Added one by one in id order, so each gets the next free id; checked below.
    for content in sorted(specials, key=specials.__getitem__):
        tok.add_special_tokens(
            [AddedToken(content, special=True, normalized=False, lstrip=False, rstrip=False, single_word=False)]
        )
    wrong = {c: tok.token_to_id(c) for c, i in specials.items() if tok.token_to_id(c) != i}
    if wrong:
        raise ToolError(
            where,
            f"special tokens got ids {wrong}, not {[specials[c] for c in wrong]}",
            f"a vocabulary of {min(base_specials.values())} BPE ids (ids 0..{min(base_specials.values()) - 1})",
        )
    return tok

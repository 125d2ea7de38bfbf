"""CosyVoice 1's text tokenizer on `tiktoken`: the encoding upstream builds in code (whisper's multilingual one for
CosyVoice-300M, upstream's own for the 25 Hz model), rebuilt from the pack's files (exporters/pipeline/frontend_v1.py:
BPE ranks, split pattern, special tokens). `encode(text)` equals upstream's `tokenizer.encode(text,
allowed_special='all')`: special tokens such as `<|en|>` in the text become single ids, no start-of-transcript
prefix is added."""

from __future__ import annotations

import base64
from collections.abc import Iterable, Sequence
from pathlib import Path

from specs.errors import ToolError
from specs.schema import read_json


class TiktokenTextTokenizer:
    def __init__(self, encoding):
        self._enc = encoding
        self.special_tokens = dict(encoding._special_tokens)

    @classmethod
    def from_files(cls, ranks_path: Path, config_path: Path) -> TiktokenTextTokenizer:
        import tiktoken

        cfg = read_json(config_path, "file", "the text tokenizer's pat_str, special_tokens and n_vocab")
        if not isinstance(cfg, dict) or not {"pat_str", "special_tokens", "n_vocab"} <= set(cfg):
            raise ToolError(config_path, "lacks pat_str / special_tokens / n_vocab", "a pack written by tts-export")
        ranks: dict[bytes, int] = {}
        try:
            for line in Path(ranks_path).read_text(encoding="ascii").splitlines():
                if line:
                    token, rank = line.split(" ")
                    ranks[base64.b64decode(token)] = int(rank)
        except (OSError, UnicodeDecodeError, ValueError) as e:
            raise ToolError(ranks_path, f"is not a tiktoken ranks file ({e})", "'base64-token rank' per line") from None
        try:
            enc = tiktoken.Encoding(
                name=str(cfg.get("name", "cosyvoice1")),
                pat_str=str(cfg["pat_str"]),
                mergeable_ranks=ranks,
                special_tokens={str(k): int(v) for k, v in cfg["special_tokens"].items()},
                explicit_n_vocab=int(cfg["n_vocab"]),
            )
        except (ValueError, AssertionError) as e:
            raise ToolError(ranks_path, f"makes no tiktoken encoding ({e})", "a pack written by tts-export") from None
        return cls(enc)

    @classmethod
    def from_pack(cls, pack) -> TiktokenTextTokenizer:
        files = pack.manifest.get("frontend", {})
        return cls.from_files(pack.root / files["tiktoken_ranks"]["file"], pack.root / files["tiktoken_config"]["file"])

    def encode(self, text: str) -> list[int]:
        return self._enc.encode(text, allowed_special="all")

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [self.encode(t) for t in texts]

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = True) -> str:
        ids = list(ids)
        if skip_special_tokens:
            specials = set(self.special_tokens.values())
            ids = [i for i in ids if i not in specials]
        return self._enc.decode(ids)

    def __len__(self) -> int:
        return int(self._enc.n_vocab)

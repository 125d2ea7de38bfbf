"""CosyVoice 1 frontend data for the pack: the text tokenizer as tiktoken files, and the SFT speakers.

Text: CosyVoice 1 tokenizes with a tiktoken encoding built in code, not shipped in the bundle: whisper's
multilingual one for CosyVoice-300M(-SFT/-Instruct), upstream's own for the 25 Hz model. The yaml's
`get_tokenizer` entry is built with upstream's function and its encoding written out as tiktoken's ranks
format plus its split pattern and special tokens, so the runtime rebuilds the same encoding with `tiktoken`
(no torch, no whisper).

Speakers: `spk2info.pt` (name -> {'embedding': (1, 192)}) becomes the data tensor `speakers.embedding`
(n, 192) float32 and `frontend/speakers.json` (the names in row order). Entries saved by upstream's
`add_zero_shot_spk` carry more keys; only the embedding is used (as upstream's SFT and instruct paths do).
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np

from specs.errors import ToolError
from specs.pack import PackWriter, file_record

SPEAKERS_FILE = "spk2info.pt"
SPEAKER_DATA = "speakers.embedding"


def text_tokenizer_files(yaml_path: Path, writer: PackWriter) -> dict:
    """Frontend records of the tiktoken files of the yaml's `get_tokenizer`."""
    from exporters.model.config import load_yaml_entry
    from exporters.model.upstream import require_upstream

    require_upstream()
    make = load_yaml_entry(yaml_path, "get_tokenizer")
    if make is None:
        raise ToolError(yaml_path, "has no get_tokenizer entry", "the text tokenizer upstream's frontend builds")
    enc = make().encoding
    ranks = sorted(enc._mergeable_ranks.items(), key=lambda kv: kv[1])
    ranks_rel, meta_rel = "frontend/text_tokenizer.tiktoken", "frontend/text_tokenizer.json"
    with open(writer.path(ranks_rel), "w", encoding="ascii") as f:
        for token, rank in ranks:
            f.write(f"{base64.b64encode(token).decode('ascii')} {rank}\n")
    meta = {
        "name": enc.name,
        "pat_str": enc._pat_str,
        "special_tokens": dict(enc._special_tokens),
        "n_vocab": int(enc.n_vocab),
        "allowed_special": "all",
    }
    writer.path(meta_rel).write_text(json.dumps(meta, ensure_ascii=False, indent=1) + "\n")
    return {
        "tiktoken_ranks": {
            "file": ranks_rel,
            **file_record(writer.path(ranks_rel)),
            "doc": f"text tokenizer BPE ranks (tiktoken format) of {enc.name!r}, from upstream's get_tokenizer",
        },
        "tiktoken_config": {
            "file": meta_rel,
            **file_record(writer.path(meta_rel)),
            "doc": "its split pattern, special tokens (name -> id), vocabulary size; encode with allowed_special=all",
        },
    }


def read_speakers(bundle_root: Path, spk_dim: int) -> tuple[list[str], np.ndarray]:
    """Speaker names and their (n, spk_dim) float32 x-vectors from spk2info.pt ([] when the bundle has none)."""
    path = bundle_root / SPEAKERS_FILE
    if not path.is_file():
        return [], np.zeros((0, spk_dim), np.float32)
    from exporters.model.bundle import read_state_dict

    info = read_state_dict(path)  # weights_only load; a dict with str keys
    names, rows = [], []
    for name, entry in info.items():
        emb = entry.get("embedding") if isinstance(entry, dict) else None
        shape = tuple(getattr(emb, "shape", ()))
        if emb is None or shape not in ((1, spk_dim), (spk_dim,)):
            got = f"shape {list(shape)}" if emb is not None else f"a {type(entry).__name__} without 'embedding'"
            want = f"{{'embedding': (1, {spk_dim}) x-vector}} per speaker"
            raise ToolError(path, f"speaker {name!r} has {got}", want)
        arr = emb.detach().float().reshape(spk_dim).numpy()
        if not np.isfinite(arr).all():
            raise ToolError(path, f"speaker {name!r} has a non-finite embedding", "finite x-vector values")
        names.append(str(name))
        rows.append(arr)
    return names, np.stack(rows).astype(np.float32) if rows else np.zeros((0, spk_dim), np.float32)


def speaker_files(names: list[str], table: np.ndarray, writer: PackWriter) -> dict:
    """Write read_speakers' speakers into the pack; returns the frontend records ({} without speakers)."""
    if not names:
        return {}
    writer.add_data(SPEAKER_DATA, table, f"x-vectors of the {len(names)} built-in speakers (rows as speakers.json)")
    rel = "frontend/speakers.json"
    writer.path(rel).write_text(json.dumps(names, ensure_ascii=False, indent=0) + "\n")
    return {
        "speakers": {
            "file": rel,
            **file_record(writer.path(rel)),
            "doc": f"built-in speaker names (spk2info.pt), row i of data {SPEAKER_DATA}",
        }
    }

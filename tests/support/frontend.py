"""Helpers shared by tests/test_frontend_*.py: tolerance checks through specs.compare, tokenizer files,
upstream oracle objects and the stand-in speech tokenizer repair."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from specs.compare import compare
from specs.io_spec import Tolerance
from tests.conftest import DATA_DIR

ZERO_SHOT_WAV = DATA_DIR / "zero_shot_prompt.wav"  # 24 kHz float32, 3.48 s
CROSS_LINGUAL_WAV = DATA_DIR / "cross_lingual_prompt.wav"  # 22.05 kHz int16, 13.75 s
ZERO_SHOT_TEXT = "希望你以后能够做的比我还好呦。"
V2_FEAT_EXTRACTOR = {
    "n_fft": 1920,
    "num_mels": 80,
    "sampling_rate": 24000,
    "hop_size": 480,
    "win_size": 1920,
    "fmin": 0,
    "fmax": 8000,
    "center": False,
}


def assert_close(actual, expected, atol: float, label: str, rtol: float = 0.0) -> None:
    """One verdict line from the project's comparator; fails with it."""
    c = compare(np.asarray(actual), np.asarray(expected), Tolerance(atol=atol, rtol=rtol), label)
    assert c.passed, c.line()


def tokenizer_dir(dest: Path) -> Path:
    """The shared Qwen2 files (vocab with the 3 specials, complete merges, config) as one directory."""
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(DATA_DIR / "qwen2_vocab.json", dest / "vocab.json")
    shutil.copyfile(DATA_DIR / "qwen2_merges.txt", dest / "merges.txt")
    shutil.copyfile(DATA_DIR / "qwen2_tokenizer_config.json", dest / "tokenizer_config.json")
    return dest


def speech_tokenizer_with_length_input(src: Path, dest: Path) -> Path:
    """The random-init stand-in speech tokenizer, with a `feats_length` input if its export dropped it.

    exporters/random/standins.py's module ignores feats_length, so torch.onnx.export prunes that input and the
    stand-in has one input where the real speech_tokenizer_v2.onnx has two; upstream's
    `_extract_speech_token` then fails on `get_inputs()[1]`. Adding the (unused) input restores the real
    signature without touching the computation.
    """
    import onnx

    model = onnx.load(str(src))
    if [i.name for i in model.graph.input] == ["feats"]:
        model.graph.input.append(onnx.helper.make_tensor_value_info("feats_length", onnx.TensorProto.INT32, [1]))
        onnx.save(model, str(dest))
        return dest
    return src


def upstream_frontend(campplus: Path, speech_tokenizer: Path, token_dir: Path):
    """Upstream CosyVoiceFrontEnd for CosyVoice2 (no ttsfrd/wetext in the oracle: plain text path)."""
    from functools import partial

    from cosyvoice.cli.frontend import CosyVoiceFrontEnd
    from cosyvoice.tokenizer.tokenizer import get_qwen_tokenizer
    from matcha.utils.audio import mel_spectrogram

    fe = CosyVoiceFrontEnd(
        partial(get_qwen_tokenizer, str(token_dir), True),
        partial(mel_spectrogram, **V2_FEAT_EXTRACTOR),
        str(campplus),
        str(speech_tokenizer),
    )
    assert fe.text_frontend == "", "the oracle has ttsfrd or wetext; these comparisons assume neither"
    return fe

"""Zero-shot prompt processing equals upstream's CosyVoiceFrontEnd on the tiny bundle's stand-in models.

Both sides get the same 16 kHz waveform (upstream's own torchaudio-resampled prompt, written as a float
WAV, so neither side resamples); zero_shot_prompt.wav is 24 kHz, so the prompt mel needs no resampling.
The soxr-vs-torchaudio difference is measured separately (test_frontend_audio.py).

Tolerances: embedding rtol 1e-5 + atol 1e-4 (stand-in x-vector values up to ~25; measured max abs 1.4e-5,
from the fbank differences in test_frontend_features.py); speech tokens exact; prompt mel atol 5e-4 (as in
test_frontend_features.py).
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import soundfile as sf

from runtime.frontend.audio import load_prompt_wav
from runtime.frontend.features import MelParams
from runtime.frontend.prompt import PromptFrontend, align_prompt, frontend_session
from runtime.frontend.text import TextTokenizer
from specs.errors import ToolError
from tests.conftest import needs_shared_data
from tests.support.frontend import (
    CROSS_LINGUAL_WAV,
    V2_FEAT_EXTRACTOR,
    ZERO_SHOT_TEXT,
    ZERO_SHOT_WAV,
    assert_close,
    speech_tokenizer_with_length_input,
    upstream_frontend,
)

pytestmark = [needs_shared_data, pytest.mark.oracle]
EMB_ATOL, EMB_RTOL, MEL_ATOL = 1e-4, 1e-5, 5e-4


@pytest.fixture(scope="module")
def models(tiny_bundle, tmp_path_factory):
    """(campplus, speech tokenizer with the real two-input signature, tokenizer dir) of the tiny bundle."""
    work = tmp_path_factory.mktemp("frontend_models")
    tokenizer = speech_tokenizer_with_length_input(
        tiny_bundle / "speech_tokenizer_v2.onnx", work / "speech_tokenizer_v2.onnx"
    )
    return tiny_bundle / "campplus.onnx", tokenizer, tiny_bundle / "CosyVoice-BlankEN"


@pytest.fixture(scope="module")
def upstream(models):
    return upstream_frontend(*models)


@pytest.fixture(scope="module")
def ours(models):
    campplus, speech_tokenizer, qwen = models
    text = TextTokenizer.from_files(qwen / "vocab.json", qwen / "merges.txt", qwen / "tokenizer_config.json")
    return PromptFrontend(campplus, speech_tokenizer, MelParams.from_config(V2_FEAT_EXTRACTOR), text)


@pytest.fixture(scope="module", params=[ZERO_SHOT_WAV, CROSS_LINGUAL_WAV], ids=lambda p: p.stem)
def wav16k(request, tmp_path_factory):
    """Upstream's 16 kHz prompt, as a float WAV that both sides read without resampling."""
    from cosyvoice.utils.file_utils import load_wav

    path = tmp_path_factory.mktemp("wav16k") / f"{request.param.stem}_16k.wav"
    samples = load_wav(str(request.param), 16000).numpy()[0]
    sf.write(path, samples, 16000, subtype="FLOAT")
    assert np.array_equal(load_prompt_wav(path).samples, samples)
    return path


def test_speaker_embedding_equal_upstream(ours, upstream, wav16k):
    want = upstream._extract_spk_embedding(str(wav16k)).numpy()
    got = ours.speaker_embedding(load_prompt_wav(wav16k))
    assert got.shape == (1, 192) and got.dtype == np.float32
    assert_close(got, want, EMB_ATOL, f"embedding/{wav16k.stem}", rtol=EMB_RTOL)


def test_speech_tokens_equal_upstream(ours, upstream, wav16k):
    want, want_len = upstream._extract_speech_token(str(wav16k))
    got = ours.speech_tokens(load_prompt_wav(wav16k))
    assert got.dtype == np.int32 and got.shape == tuple(want.shape) and want_len.item() == got.shape[1]
    assert np.array_equal(got, want.numpy())


def test_prompt_mel_equal_upstream(ours, upstream):
    want, want_len = upstream._extract_speech_feat(str(ZERO_SHOT_WAV))  # 24 kHz file: no resampling
    got = ours.speech_feat(load_prompt_wav(ZERO_SHOT_WAV))
    assert got.shape == tuple(want.shape) == (1, want_len.item(), 80)
    assert_close(got, want.numpy(), MEL_ATOL, "prompt_mel/zero_shot")


def test_zero_shot_equal_upstream_frontend(ours, upstream, monkeypatch):
    """Whole frontend_zero_shot (text ids, v2 alignment, shared tokens) with one resampler on both sides."""
    import torch
    from cosyvoice.cli import frontend as upstream_module

    monkeypatch.setattr(
        upstream_module, "load_wav", lambda wav, sr: torch.from_numpy(load_prompt_wav(wav).at(sr))[None]
    )
    prompt_text = upstream.text_normalize(ZERO_SHOT_TEXT, split=False)  # as inference_zero_shot does
    want = upstream.frontend_zero_shot("unused", prompt_text, str(ZERO_SHOT_WAV), 24000, "")
    got = ours.zero_shot(ZERO_SHOT_WAV, ZERO_SHOT_TEXT)

    assert np.array_equal(got.prompt_text, want["prompt_text"].numpy()) and got.prompt_text.dtype == np.int32
    assert np.array_equal(got.speech_tokens, want["llm_prompt_speech_token"].numpy())
    assert np.array_equal(got.speech_tokens, want["flow_prompt_speech_token"].numpy())
    assert got.speech_feat.shape[1] == want["prompt_speech_feat_len"].item() == 2 * got.speech_tokens.shape[1]
    assert_close(got.speech_feat, want["prompt_speech_feat"].numpy(), MEL_ATOL, "zero_shot/prompt_speech_feat")
    assert_close(got.embedding, want["flow_embedding"].numpy(), EMB_ATOL, "zero_shot/embedding", rtol=EMB_RTOL)


def test_align_prompt():
    tokens = np.arange(10, dtype=np.int32)[None]
    mel = np.zeros((1, 17, 80), np.float32)
    t, m = align_prompt(tokens, mel)  # 17 frames -> 8 tokens, 16 frames
    assert t.shape == (1, 8) and m.shape == (1, 16, 80)
    t, m = align_prompt(tokens[:, :5], mel)  # fewer tokens than frames / 2
    assert t.shape == (1, 5) and m.shape == (1, 10, 80)


@pytest.fixture(scope="module")
def small_pack(tiny_bundle, tmp_path_factory):
    """The tiny bundle exported by tts-export's own code with one graph only (the frontend needs none),
    its stand-in speech tokenizer given the real two-input signature (see frontend_support)."""
    from exporters.graphs.estimator import EstimatorExporter
    from exporters.pipeline.graph import ExportOptions
    from exporters.pipeline.pack import export_pack

    out = tmp_path_factory.mktemp("frontend_pack") / "pack"
    export_pack(
        tiny_bundle,
        out,
        [EstimatorExporter.name],
        ExportOptions(seed=0, log=lambda m: None),
        random_init={"size": "tiny", "seed": 0},
        log=lambda m: None,
    )
    st = out / "frontend" / "speech_tokenizer_v2.onnx"
    fixed = speech_tokenizer_with_length_input(st, out.parent / "st.onnx")
    if fixed != st:
        st.unlink()  # the exporter hard-links frontend files to the bundle's: never write through the link
        shutil.copyfile(fixed, st)
    return out


def test_small_pack_left_the_bundle_untouched(small_pack, tiny_bundle):
    from specs.pack import sha256_file

    manifest = json.loads((small_pack / "manifest.json").read_text())
    assert manifest["model"]["source"]["files"]["speech_tokenizer_v2.onnx"]["sha256"] == sha256_file(
        tiny_bundle / "speech_tokenizer_v2.onnx"
    )


def test_from_pack_and_one_session_per_model(small_pack):
    from specs.pack import Pack

    pack = Pack.open(small_pack)
    a, b = PromptFrontend.from_pack(pack), PromptFrontend.from_pack(pack)
    assert a.embedder.session is b.embedder.session is frontend_session(small_pack / "frontend" / "campplus.onnx")
    assert a.mel_params == MelParams(1920, 80, 24000, 480, 1920, 0.0, 8000.0, False)  # model.config.feat_extractor
    assert a.token_mel_ratio == 2
    assert a.text_tokenizer.encode("<|endofprompt|>hello") == [151646, 14990] and len(a.text_tokenizer) == 151663
    inputs = a.zero_shot(ZERO_SHOT_WAV, ZERO_SHOT_TEXT)
    assert inputs.prompt_text.shape[0] == 1 and inputs.embedding.shape == (1, 192)
    assert inputs.speech_feat.shape == (1, 2 * inputs.speech_tokens.shape[1], 80)


def test_tokenizer_from_pack_without_merges(small_pack, tmp_path):
    """A pack whose manifest lists no merges.txt: merges are recovered from vocab.json, same ids."""
    from specs.pack import Pack, write_manifest

    full = TextTokenizer.from_pack(Pack.open(small_pack))
    pack_dir = tmp_path / "pack"
    shutil.copytree(small_pack, pack_dir)
    manifest = json.loads((pack_dir / "manifest.json").read_text())
    del manifest["frontend"]["tokenizer_merges"]
    write_manifest(pack_dir / "manifest.json", manifest)
    (pack_dir / "frontend" / "merges.txt").unlink()
    derived = TextTokenizer.from_pack(Pack.open(pack_dir))
    text = "You are a helpful assistant.<|endofprompt|>希望你以后能够做的比我还好呦。 Numbers 2024, emoji 😀."
    assert derived.encode(text) == full.encode(text)


def test_frontend_model_errors(tmp_path, models):
    campplus, speech_tokenizer, _ = models
    with pytest.raises(ToolError, match="frontend model is missing"):
        frontend_session(tmp_path / "none.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not onnx")
    with pytest.raises(ToolError, match="ONNX Runtime cannot load it"):
        frontend_session(tmp_path / "junk.onnx")
    with pytest.raises(ToolError, match="speech_tokenizer_v2.onnx with inputs feats"):
        PromptFrontend(campplus, campplus, MelParams.from_config(V2_FEAT_EXTRACTOR))
    with pytest.raises(ToolError, match=r"campplus.onnx with one input \(1, T, 80\)"):
        PromptFrontend(speech_tokenizer, speech_tokenizer, MelParams.from_config(V2_FEAT_EXTRACTOR))

"""End-to-end parity for CosyVoice 1: `TtsSession` on the exported tiny v1 pack vs upstream `CosyVoiceModel.tts` in
PyTorch, streaming and offline, for an SFT speaker, a zero-shot prompt, a cross-lingual prompt and instruct text.

Both sides get the same text ids, prompt inputs and sampler (upstream's torch.multinomial replaced by the runtime's
numpy ras_sampling), and the runtime's randomness is injected into upstream (exporters/oracles/tts.py
upstream_tts_v1): the flow's per-call CFM noise (upstream draws randn_like) and the HiFT SineGen's per-call phase
and noise. Checked: identical speech tokens, identical chunk structure (one piece of audio per token2wav call, the
notes' sample counts: first chunk 38,912, then 44,032), PCM within stated bounds, the 22 050 Hz rate and 882-sample
output chunks.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import DATA_DIR, needs_oracle, needs_shared_data
from tests.test_e2e_parity import Recorder, runtime_tts

pytestmark = needs_oracle

TEXT = (
    "Hello there, tiny voice. This sentence is here so that the random model keeps talking long "
    "enough to stream several chunks of audio."
)
INSTRUCT = "Theo 'Crimson', is a fiery, passionate rebel leader.<|endofprompt|>"
# Measured on the tiny v1 pack (upstream init, F0 ~0: unvoiced): flow mels agree to ~6e-6 and HiFT to ~3e-7, so PCM
# differs by rounding only: max 1 LSB. Bounds: 2 LSB max, 0.1 mean (a voiced F0 adds the phase drift that
# tests/test_v1_hift.py bounds).
PCM_TOL_LSB = (2, 0.1)


@pytest.fixture(scope="module")
def engine(tiny_v1_pack):
    from runtime.engine import PackEngine

    return PackEngine.get(tiny_v1_pack)


def check_parity(engine, model, prompt, stream, seed=0):
    from exporters.oracles.tts import upstream_tts
    from runtime.frontend.normalize import normalize_text
    from runtime.sampling import RasSampler
    from runtime.session import derive_seed
    from runtime.vocoder import pcm16

    segments = normalize_text(TEXT, engine.tokenizer.encode, split=True)
    assert len(segments) == 1
    ids = engine.tokenizer.encode(segments[0])
    sampler = Recorder(RasSampler(derive_seed(seed, 0, 0), engine.llm.params))
    up_chunks = list(
        upstream_tts(model, ids, prompt, stream, sampler, derive_seed(seed, 0, 1), flow_seed=derive_seed(seed, 0, 2))
    )
    pcm, pieces, tokens = runtime_tts(engine, prompt, stream, seed)
    assert tokens == sampler.tokens and len(tokens) > 120
    assert pieces == [len(c) for c in up_chunks]
    expected = pcm16(np.concatenate(up_chunks))
    diff = np.abs(pcm.astype(np.int64) - expected.astype(np.int64))
    assert diff.max() <= PCM_TOL_LSB[0] and diff.mean() <= PCM_TOL_LSB[1], (diff.max(), diff.mean())
    return pieces, tokens


def _speaker(engine, name="英文女", instruct=None):
    from runtime.session import Prompt

    ids = engine.tokenizer.encode(instruct) if instruct else None
    return Prompt.speaker(engine.speaker(name), engine.flow.mel_bins, ids)


@pytest.mark.parametrize("stream", [True, False])
def test_v1_parity_sft_speaker(engine, tiny_v1_model, stream):
    pieces, tokens = check_parity(engine, tiny_v1_model, _speaker(engine), stream)
    if stream:  # upstream's v1 stream: 100-token hops + 20 overlap, the first two pieces as the notes count them
        assert len(pieces) == 1 + max(0, (len(tokens) - 20) // 100) and pieces[:2] == [38_912, 44_032]
    else:
        assert len(pieces) == 1


@pytest.mark.parametrize("stream", [True, False])
def test_v1_parity_instruct(engine, tiny_v1_model, stream):
    """Instruct mode: the instruct ids are the LLM's prompt text and the LLM has no speaker row (upstream deletes
    llm_embedding); the flow still speaks with the speaker's x-vector."""
    prompt = _speaker(engine, "中文男", INSTRUCT)
    assert not prompt.llm_speaker and prompt.llm_uses_prompt and len(prompt.text_ids) > 5
    check_parity(engine, tiny_v1_model, prompt, stream)


@needs_shared_data
@pytest.mark.parametrize("stream", [True, False])
def test_v1_parity_zero_shot_prompt(engine, tiny_v1_model, stream):
    from runtime.session import Prompt

    inputs = engine.prompt_frontend.zero_shot(DATA_DIR / "zero_shot_prompt.wav", "希望你以后能够做的比我还好呦。")
    # CosyVoice 1 keeps the whole prompt (no 2:1 token/mel alignment): 50 Hz tokens, mel at 22 050 Hz
    assert inputs.speech_feat.shape[1] == int(3.48 * 22050) // 256 and inputs.speech_tokens.shape[1] > 150
    check_parity(engine, tiny_v1_model, Prompt.from_inputs(inputs), stream)


@needs_shared_data
def test_v1_parity_cross_lingual_prompt(engine, tiny_v1_model):
    """Cross-lingual: no prompt text or speech for the LLM, but (unlike CosyVoice2) its speaker row stays."""
    from runtime.session import Prompt

    inputs = engine.prompt_frontend.zero_shot(DATA_DIR / "cross_lingual_prompt.wav", "")
    prompt = Prompt.from_inputs(inputs, cross_lingual=True)
    assert prompt.llm_speaker and not prompt.llm_uses_prompt
    check_parity(engine, tiny_v1_model, prompt, True)


def test_v1_session_contract(engine):
    """22 050 Hz, 882-sample chunks with metadata, bitwise repeatable, another seed differs."""
    from runtime.session import TtsSession

    assert engine.sample_rate == 22050 and engine.chunk_policy.output_chunk_samples == 882

    def run(seed):
        s = TtsSession(engine, prompt=_speaker(engine), seed=seed, stream=True)
        s.synthesize(TEXT)
        return list(s.chunks())

    a, b, c = run(3), run(3), run(4)
    assert [x.pcm for x in a] == [x.pcm for x in b] and [x.pcm for x in a] != [x.pcm for x in c]
    assert all(x.n_samples == 882 for x in a[:-1]) and a[-1].final and sum(not x.final for x in a) == len(a) - 1
    assert [x.sample_offset for x in a] == [882 * i for i in range(len(a))]


def test_v1_export_refuses_a_malformed_spk2info_before_any_work(tiny_v1_bundle, tmp_path):
    import os
    import shutil

    import torch

    from exporters.pipeline.graph import ExportOptions
    from exporters.pipeline.pack import export_pack
    from specs.errors import ToolError

    b = tmp_path / "b"
    shutil.copytree(tiny_v1_bundle, b, copy_function=os.link)
    (b / "spk2info.pt").unlink()
    torch.save({"中文女": {"embedding": torch.zeros(1, 80)}}, b / "spk2info.pt")
    with pytest.raises(ToolError, match=r"spk2info.pt \| speaker '中文女' has shape \[1, 80\]"):
        export_pack(b, tmp_path / "pack", None, ExportOptions(log=lambda m: None), log=lambda m: None)
    assert not (tmp_path / "pack").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["b"]


def test_speaker_errors_are_one_line(engine, tiny_pack):
    from runtime.engine import PackEngine
    from runtime.session import speaker_prompt
    from specs.errors import ToolError

    with pytest.raises(ToolError, match=r"unknown speaker 'nobody'. Note: one of 中文女, 中文男"):
        speaker_prompt(engine, "nobody")
    with pytest.raises(ToolError, match="this pack's LLM is not instruct-trained"):
        speaker_prompt(engine, "中文女", INSTRUCT)
    with pytest.raises(ToolError, match="this pack has no built-in speakers"):
        speaker_prompt(PackEngine.get(tiny_pack), "中文女")

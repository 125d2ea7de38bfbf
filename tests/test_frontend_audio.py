"""Prompt WAV loading: upstream-equal samples for good files, one clear ToolError per kind of bad file."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import soundfile as sf

from runtime.frontend.audio import MAX_PROMPT_SECONDS, MIN_PROMPT_SECONDS, load_prompt_wav, resample
from specs.errors import ToolError
from tests.conftest import needs_shared_data
from tests.support.frontend import CROSS_LINGUAL_WAV, ZERO_SHOT_WAV


def tone(seconds: float, sr: int, channels: int = 1) -> np.ndarray:
    t = np.arange(int(round(seconds * sr))) / sr
    x = 0.3 * np.sin(2 * np.pi * 220 * t)
    return np.stack([x * (0.5 + 0.5 * c) for c in range(channels)], axis=1) if channels > 1 else x


# ---- good files ------------------------------------------------------------------------------------------
@needs_shared_data
@pytest.mark.oracle
@pytest.mark.parametrize("subtype", ["PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE"])
def test_samples_equal_upstream_load_wav(tmp_path, subtype):
    from cosyvoice.utils.file_utils import load_wav

    path = tmp_path / "stereo.wav"
    sf.write(path, tone(1.3, 24000, channels=2), 24000, subtype=subtype)
    audio = load_prompt_wav(path)  # stereo: averaged to mono, as upstream
    assert audio.sample_rate == 24000 and audio.samples.dtype == np.float32
    assert np.array_equal(audio.samples, load_wav(str(path), 24000).numpy()[0])
    assert np.array_equal(load_prompt_wav(ZERO_SHOT_WAV).samples, load_wav(str(ZERO_SHOT_WAV), 24000).numpy()[0])


@pytest.mark.parametrize(
    "source,target", [(24000, 16000), (22050, 16000), (44100, 24000), (48000, 16000), (16000, 24000), (22050, 24000)]
)
@pytest.mark.parametrize("n", [16000, 16001, 22051, 44099])
def test_resample_length_is_upstreams(source, target, n):
    y = resample(np.zeros(n, np.float32), source, target)
    assert y.dtype == np.float32 and len(y) == math.ceil(n * target / source)


@needs_shared_data
@pytest.mark.oracle
def test_soxr_option_difference_to_torchaudio_is_bounded():
    """The soxr option vs upstream's torchaudio sinc resampler: measured, not equal (they differ near the new Nyquist).

    Measured (zero_shot 24k->16k / cross_lingual 22.05k->16k): waveform SNR 47.4 / 37.5 dB; whisper log-mel
    max abs 0.004 / 0.009 in bins 0-99 (below ~4 kHz) but 0.47 / 0.59 in bins 120-127 (7.3-8 kHz: soxr is
    flat to 7.3 kHz then cuts off steeply, torchaudio's short filter rolls off gradually from ~6 kHz and is
    only -6 dB at 7.95 kHz); kaldi fbank max abs 0.06 / 0.18 in bins 0-69, 3.3 / 2.4 in bins 70-79.
    Bounds below are about 2x the measurement.
    """
    from cosyvoice.utils.file_utils import load_wav

    from runtime.frontend.features import whisper_log_mel

    for path, snr_min, low_bins_max in ((ZERO_SHOT_WAV, 44.0, 0.01), (CROSS_LINGUAL_WAV, 34.0, 0.02)):
        ref = load_wav(str(path), 16000).numpy()[0]
        ours = load_prompt_wav(path).at(16000, "soxr")
        assert len(ours) == len(ref)
        snr = 10 * np.log10(np.sum(ref.astype(np.float64) ** 2) / np.sum((ours - ref).astype(np.float64) ** 2))
        assert snr > snr_min, f"{path.name}: SNR {snr:.1f} dB"
        mel_diff = np.abs(whisper_log_mel(ours) - whisper_log_mel(ref))[0]
        assert mel_diff[:100].max() < low_bins_max, f"{path.name}: {mel_diff[:100].max():.4f}"
        assert mel_diff.max() < 1.2, f"{path.name}: {mel_diff.max():.4f}"


# ---- bad files -----------------------------------------------------------------------------------------------
def write(path, seconds=1.0, sr=16000, channels=1, subtype="PCM_16", fmt=None):
    sf.write(path, tone(seconds, sr, channels), sr, subtype=subtype, format=fmt)
    return path


def test_missing_file(tmp_path):
    with pytest.raises(ToolError, match=r"nope\.wav \| prompt WAV does not exist"):
        load_prompt_wav(tmp_path / "nope.wav")


def test_directory(tmp_path):
    with pytest.raises(ToolError, match="is not a regular file"):
        load_prompt_wav(tmp_path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_file(tmp_path):
    path = write(tmp_path / "locked.wav")
    path.chmod(0)
    with pytest.raises(ToolError, match="cannot be read"):
        load_prompt_wav(path)


def test_not_audio(tmp_path):
    (tmp_path / "text.wav").write_text("hello, not audio")
    with pytest.raises(ToolError, match=r"is not a readable WAV file \(.*\)\. Note: a PCM WAV"):
        load_prompt_wav(tmp_path / "text.wav")


def test_other_container(tmp_path):
    with pytest.raises(ToolError, match="is a FLAC file, not a WAV"):
        load_prompt_wav(write(tmp_path / "p.flac", fmt="FLAC"))


@pytest.mark.parametrize(
    "subtype,what", [("PCM_U8", "8-bit PCM"), ("ULAW", "ULAW encoding"), ("IMA_ADPCM", "IMA_ADPCM encoding")]
)
def test_unsupported_encodings(tmp_path, subtype, what):
    with pytest.raises(ToolError, match=f"uses {what}, which the frontend does not accept"):
        load_prompt_wav(write(tmp_path / "p.wav", subtype=subtype))


def test_stereo_is_averaged(tmp_path):
    x = tone(1.0, 16000, channels=2).astype(np.float32)
    sf.write(tmp_path / "s.wav", x, 16000, subtype="FLOAT")
    assert np.array_equal(load_prompt_wav(tmp_path / "s.wav").samples, x.mean(axis=1, dtype=np.float32))


def test_truncated_file(tmp_path):
    full = write(tmp_path / "full.wav").read_bytes()
    (tmp_path / "cut.wav").write_bytes(full[: len(full) // 2 + 1])
    with pytest.raises(
        ToolError,
        match=r"WAV file is truncated: its header announces 32000 bytes of audio, "
        r"the file holds 15979",
    ):
        load_prompt_wav(tmp_path / "cut.wav")
    (tmp_path / "head.wav").write_bytes(full[:30])  # cut inside the header
    with pytest.raises(ToolError, match="is not a readable WAV file"):
        load_prompt_wav(tmp_path / "head.wav")


def test_too_short(tmp_path):
    with pytest.raises(ToolError, match=r"prompt is too short \(0\.100 s\)\. Note: at least 0\.5 s"):
        load_prompt_wav(write(tmp_path / "p.wav", seconds=0.1))
    assert load_prompt_wav(write(tmp_path / "ok.wav", seconds=MIN_PROMPT_SECONDS)).seconds == MIN_PROMPT_SECONDS
    with pytest.raises(ToolError, match="too short"):
        load_prompt_wav(write(tmp_path / "empty.wav", seconds=0.0))


def test_too_long(tmp_path):
    with pytest.raises(ToolError, match=r"prompt is too long \(30\.10 s\)\. Note: at most 30 s"):
        load_prompt_wav(write(tmp_path / "p.wav", seconds=30.1))
    assert load_prompt_wav(write(tmp_path / "ok.wav", seconds=MAX_PROMPT_SECONDS)).seconds == MAX_PROMPT_SECONDS


def test_low_sample_rate(tmp_path):
    with pytest.raises(ToolError, match=r"sample rate is 8000 Hz\. Note: at least 16000 Hz"):
        load_prompt_wav(write(tmp_path / "p.wav", sr=8000))


def test_non_finite_samples(tmp_path):
    x = tone(1.0, 16000).astype(np.float32)
    x[100] = np.nan
    sf.write(tmp_path / "nan.wav", x, 16000, subtype="FLOAT")
    with pytest.raises(ToolError, match="contains NaN or infinite samples"):
        load_prompt_wav(tmp_path / "nan.wav")


@pytest.mark.oracle
@pytest.mark.parametrize("source", [22050, 24000, 44100, 48000])
@pytest.mark.parametrize("target", [16000, 22050, 24000])
def test_default_resampler_is_torchaudios_kernel(source, target):
    """The default resampler is torchaudio 2.3.1's Resample (upstream's load_wav): the kernel equal bit for bit, the
    output of a chirp sweeping to the new Nyquist within float32 accumulation order (measured <= 1.5e-7)."""
    import torch
    import torchaudio

    from runtime.frontend.resample import resample_sinc, sinc_hann_kernel

    if source == target:
        pytest.skip("no resampling")
    ref = torchaudio.transforms.Resample(source, target)
    g = math.gcd(source, target)
    kernel, width = sinc_hann_kernel(source // g, target // g)
    assert width == ref.width and np.array_equal(kernel, ref.kernel[:, 0].numpy())
    t = np.arange(source * 2 + 7) / source
    chirp = (0.5 * np.sin(2 * np.pi * (50 * t + target / 4 * t * t))).astype(np.float32)
    want = ref(torch.from_numpy(chirp)[None])[0].numpy()
    got = resample_sinc(chirp, source, target)
    assert got.shape == want.shape and np.abs(got - want).max() < 1e-6


@needs_shared_data
@pytest.mark.oracle
def test_default_prompt_features_equal_upstreams():
    """On the shipped prompts (24 kHz and 22.05 kHz), the 16 kHz kaldi fbank (campplus input) and whisper log-mel
    (speech tokenizer input) equal upstream's load_wav + torchaudio features within float error (soxr: up to
    3.3 and 0.59 apart in the top bins)."""
    from cosyvoice.utils.file_utils import load_wav

    from runtime.frontend.features import campplus_fbank, whisper_log_mel

    for path in (ZERO_SHOT_WAV, CROSS_LINGUAL_WAV):
        ref = load_wav(str(path), 16000).numpy()[0]
        ours = load_prompt_wav(path).at(16000)
        assert ours.shape == ref.shape and np.abs(ours - ref).max() < 1e-6, path.name
        assert np.abs(campplus_fbank(ours) - campplus_fbank(ref)).max() < 1e-3, path.name
        assert np.abs(whisper_log_mel(ours) - whisper_log_mel(ref)).max() < 1e-4, path.name

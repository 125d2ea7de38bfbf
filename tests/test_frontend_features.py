"""runtime/frontend features equal the upstream reference implementations.

Tolerances (max abs difference; both sides float32 results, ours computed in float64 internally):
- kaldi fbank (log mel, mean-subtracted): 2e-3. Measured 6.2e-4 on zero_shot_prompt.wav, in the lowest
  bins of quiet frames; torchaudio's own float32 result differs from its float64 result by 6.4e-4 there.
- whisper log-mel ((log10 + 4) / 4 units): 1e-4. Measured 2.2e-5 (float32 FFT/matmul in torch).
- matcha prompt mel (natural log): 5e-4. Measured 1.1e-4, at low-energy bins near the 1e-5 floor.
- mel filters: exact (float32 bit-equal to librosa and whisper's stored mel_filters.npz).
"""

from __future__ import annotations

import numpy as np
import pytest

from runtime.frontend import dsp
from runtime.frontend.features import MelParams, campplus_fbank, prompt_mel, whisper_log_mel
from specs.errors import ToolError
from tests.conftest import needs_shared_data
from tests.support.frontend import CROSS_LINGUAL_WAV, V2_FEAT_EXTRACTOR, ZERO_SHOT_WAV, assert_close

FBANK_ATOL = 2e-3
WHISPER_ATOL = 1e-4
PROMPT_MEL_ATOL = 5e-4
ODD_LENGTHS = [401, 4799, 16000 + 33, 24000 * 2 + 479]


def signal(n: int, seed: int = 0) -> np.ndarray:
    """Speech-like test signal: harmonics with vibrato plus noise, in [-1, 1]."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 16000.0
    f0 = 140 + 20 * np.sin(2 * np.pi * 3 * t)
    phase = 2 * np.pi * np.cumsum(f0) / 16000.0
    x = sum(np.sin(k * phase) / k for k in range(1, 30)) * 0.2 + rng.standard_normal(n) * 0.01
    return (x * np.hanning(n) ** 0.1).astype(np.float32)


@pytest.fixture(scope="module")
def upstream_wavs():
    from tests.conftest import HAVE_ORACLE

    if not HAVE_ORACLE or not ZERO_SHOT_WAV.is_file():
        pytest.skip("needs the upstream oracle and shared data")
    from cosyvoice.utils.file_utils import load_wav

    return {(p.name, sr): load_wav(str(p), sr) for p in (ZERO_SHOT_WAV, CROSS_LINGUAL_WAV) for sr in (16000, 24000)}


# ---- mel filters --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "sr,n_fft,n_mels,fmin,fmax",
    [
        (16000, 400, 128, 0, None),
        (16000, 400, 80, 0, None),
        (24000, 1920, 80, 0, 8000),
        (22050, 1024, 80, 0, 8000),
        (24000, 1920, 100, 50, 12000),
    ],
)
def test_slaney_filters_equal_librosa(sr, n_fft, n_mels, fmin, fmax):
    librosa = pytest.importorskip("librosa")
    want = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)
    got = dsp.slaney_mel_filters(sr, n_fft, n_mels, fmin, fmax)
    assert got.dtype == np.float32 and np.array_equal(got, want)


def test_slaney_filters_equal_whisper_assets():
    whisper = pytest.importorskip("whisper")
    from pathlib import Path

    stored = np.load(Path(whisper.audio.__file__).parent / "assets" / "mel_filters.npz")
    for n_mels in (80, 128):
        assert np.array_equal(dsp.slaney_mel_filters(16000, 400, n_mels), stored[f"mel_{n_mels}"])


def test_stft_matches_torch_stft():
    torch = pytest.importorskip("torch")
    x = signal(5003)
    for center, win in ((True, 400), (False, 320)):
        want = torch.stft(
            torch.from_numpy(x).double(),
            400,
            160,
            win,
            torch.hann_window(win, dtype=torch.float64),
            center=center,
            pad_mode="reflect",
            return_complex=True,
        ).T.numpy()
        got = dsp.stft(x, 400, 160, dsp.hann_window(win), center=center)
        assert got.shape == want.shape
        assert_close(np.abs(got - want), np.zeros(want.shape), 1e-9, f"stft center={center} win={win}")


# ---- kaldi fbank ------------------------------------------------------------------------------------------------
@pytest.mark.oracle
@needs_shared_data
def test_campplus_fbank_equal_torchaudio(upstream_wavs):
    import torch
    import torchaudio.compliance.kaldi as kaldi

    cases = {name: w for (name, sr), w in upstream_wavs.items() if sr == 16000}
    cases.update({f"synthetic-{n}": torch.from_numpy(signal(n))[None] for n in ODD_LENGTHS})
    for name, wav in cases.items():
        want = kaldi.fbank(wav, num_mel_bins=80, dither=0, sample_frequency=16000)
        want = (want - want.mean(dim=0, keepdim=True)).numpy()
        got = campplus_fbank(wav.numpy()[0])
        assert got.shape == want.shape == (1 + (wav.shape[1] - 400) // 160, 80)
        assert_close(got, want, FBANK_ATOL, f"fbank/{name}")


# ---- whisper log-mel --------------------------------------------------------------------------------------------
@pytest.mark.oracle
@needs_shared_data
def test_whisper_log_mel_equal_whisper(upstream_wavs):
    import torch
    import whisper

    cases = {name: w for (name, sr), w in upstream_wavs.items() if sr == 16000}
    cases.update({f"synthetic-{n}": torch.from_numpy(signal(n))[None] for n in ODD_LENGTHS})
    for name, wav in cases.items():
        want = whisper.log_mel_spectrogram(wav, n_mels=128).numpy()
        got = whisper_log_mel(wav.numpy()[0])
        assert got.shape == want.shape == (1, 128, wav.shape[1] // 160)
        assert_close(got, want, WHISPER_ATOL, f"whisper_log_mel/{name}")


# ---- matcha prompt mel -----------------------------------------------------------------------------------------
@pytest.mark.oracle
@needs_shared_data
def test_prompt_mel_equal_matcha(upstream_wavs):
    import torch
    from matcha.utils.audio import mel_spectrogram

    params = MelParams.from_config(V2_FEAT_EXTRACTOR)
    cases = {name: w for (name, sr), w in upstream_wavs.items() if sr == 24000}
    cases.update({f"synthetic-{n}": torch.from_numpy(signal(n, seed=1))[None] for n in ODD_LENGTHS[1:]})
    for name, wav in cases.items():
        want = mel_spectrogram(wav, **V2_FEAT_EXTRACTOR).transpose(1, 2).numpy()
        got = prompt_mel(wav.numpy()[0], params)
        assert got.shape == want.shape == (1, wav.shape[1] // 480, 80)
        assert_close(got, want, PROMPT_MEL_ATOL, f"prompt_mel/{name}")


@pytest.mark.oracle
def test_prompt_mel_other_parameters_equal_matcha():
    """Parameters come from the config: a v1-like set (22.05 kHz, hop 256, win < n_fft) also matches."""
    import torch
    from matcha.utils.audio import mel_basis, mel_spectrogram

    cfg = {
        "n_fft": 1024,
        "num_mels": 80,
        "sampling_rate": 22050,
        "hop_size": 256,
        "win_size": 800,
        "fmin": 0,
        "fmax": 8000,
        "center": False,
    }
    wav = torch.from_numpy(signal(22050 + 77, seed=2))[None]
    mel_basis.clear()  # matcha caches filters by fmax only (pitfall P2): drop the v2 entry first
    want = mel_spectrogram(wav, **cfg).transpose(1, 2).numpy()
    mel_basis.clear()
    assert_close(prompt_mel(wav.numpy()[0], MelParams.from_config(cfg)), want, PROMPT_MEL_ATOL, "prompt_mel/v1-like")


def test_mel_params_errors():
    with pytest.raises(ToolError, match="lacks hop_size"):
        MelParams.from_config({k: v for k, v in V2_FEAT_EXTRACTOR.items() if k != "hop_size"})
    with pytest.raises(ToolError, match="0 < hop_size <= n_fft"):
        MelParams.from_config({**V2_FEAT_EXTRACTOR, "hop_size": 4000})

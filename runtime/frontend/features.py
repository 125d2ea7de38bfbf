"""Frontend features, numpy only: kaldi fbank (CAM++), whisper log-mel (speech tokenizer), prompt mel (flow).

- `campplus_fbank`: torchaudio.compliance.kaldi.fbank(num_mel_bins=80, dither=0) as upstream calls it, via
  kaldi-native-fbank, then per-utterance mean subtraction.
- `whisper_log_mel`: whisper.log_mel_spectrogram(audio, n_mels=128) with openai-whisper's fixed parameters.
- `prompt_mel`: matcha.utils.audio.mel_spectrogram with the bundle's `feat_extractor` parameters
  (`MelParams.from_config(pack.config["feat_extractor"])`), returned as (1, T, 80) like upstream's frontend.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from runtime.frontend import dsp
from specs.errors import ToolError

# ---- CAM++ input: kaldi fbank ------------------------------------------------------------------------------
CAMPPLUS_SAMPLE_RATE = 16000
CAMPPLUS_MEL_BINS = 80


def campplus_fbank(wav16k: np.ndarray) -> np.ndarray:
    """(T, 80) float32 log mel fbank minus its mean over frames; T = 1 + (N - 400) // 160 (snip_edges).

    Options are torchaudio's kaldi.fbank defaults with upstream's num_mel_bins=80, dither=0: 25 ms povey
    window, 10 ms shift, DC removal, pre-emphasis 0.97, 512-point power spectrum, kaldi mel bins 20 Hz..Nyquist,
    log floored at float32 eps, no energy. The waveform stays in [-1, 1] (the mean subtraction cancels the
    scale anyway).
    """
    import kaldi_native_fbank as knf

    opts = knf.FbankOptions()
    fo = opts.frame_opts
    fo.samp_freq = CAMPPLUS_SAMPLE_RATE
    fo.frame_shift_ms, fo.frame_length_ms = 10.0, 25.0
    fo.dither = 0.0
    fo.preemph_coeff = 0.97
    fo.remove_dc_offset = True
    fo.window_type = "povey"
    fo.round_to_power_of_two = True
    fo.snip_edges = True
    mo = opts.mel_opts
    mo.num_bins = CAMPPLUS_MEL_BINS
    mo.low_freq, mo.high_freq = 20.0, 0.0
    mo.htk_mode = False
    mo.is_librosa = False
    opts.use_energy = False
    opts.use_log_fbank = True
    opts.use_power = True
    opts.use_log_floor = True
    opts.eps = float(np.finfo(np.float32).eps)

    computer = knf.OnlineFbank(opts)
    computer.accept_waveform(CAMPPLUS_SAMPLE_RATE, np.asarray(wav16k, dtype=np.float32).tolist())
    computer.input_finished()
    n = computer.num_frames_ready
    if n == 0:
        return np.zeros((0, CAMPPLUS_MEL_BINS), dtype=np.float32)
    feats = np.stack([np.asarray(computer.get_frame(i), dtype=np.float32) for i in range(n)])
    return (feats - feats.mean(axis=0, keepdims=True)).astype(np.float32)


# ---- speech tokenizer input: whisper log-mel ---------------------------------------------------------------
WHISPER_SAMPLE_RATE = 16000
WHISPER_N_FFT = 400
WHISPER_HOP = 160
WHISPER_MEL_BINS = 128
WHISPER_DYNAMIC_RANGE = 8.0  # log10 units kept below the utterance's maximum


@lru_cache(maxsize=8)
def _mel_filters(sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float | None) -> np.ndarray:
    filters = dsp.slaney_mel_filters(sample_rate, n_fft, n_mels, fmin, fmax)
    filters.setflags(write=False)
    return filters


def whisper_log_mel(wav16k: np.ndarray, n_mels: int = WHISPER_MEL_BINS) -> np.ndarray:
    """(1, n_mels, N // 160) float32, as whisper.log_mel_spectrogram(audio, n_mels) without padding.

    Centred STFT (reflect pad 200), periodic hann 400, hop 160, last frame dropped; power spectrum; Slaney
    mel filters 0..8 kHz; log10 floored at 1e-10, then at (global max - 8); scaled as (x + 4) / 4.
    """
    x = np.asarray(wav16k, dtype=np.float32)
    if len(x) <= WHISPER_N_FFT // 2:
        raise ValueError(f"whisper_log_mel needs more than {WHISPER_N_FFT // 2} samples, got {len(x)}")
    spec = dsp.stft(x, WHISPER_N_FFT, WHISPER_HOP, dsp.hann_window(WHISPER_N_FFT), center=True)[:-1]
    mel = dsp.power_spectrum(spec) @ _mel_filters(WHISPER_SAMPLE_RATE, WHISPER_N_FFT, n_mels, 0.0, None).T
    log_mel = np.log10(np.maximum(mel, 1e-10))
    log_mel = np.maximum(log_mel, log_mel.max() - WHISPER_DYNAMIC_RANGE)
    return ((log_mel + 4.0) / 4.0).T[None].astype(np.float32)


# ---- flow prompt: matcha mel ------------------------------------------------------------------------------
@dataclass(frozen=True)
class MelParams:
    """Keyword arguments of matcha's mel_spectrogram, as the bundle's yaml `feat_extractor` gives them."""

    n_fft: int
    num_mels: int
    sampling_rate: int
    hop_size: int
    win_size: int
    fmin: float
    fmax: float | None
    center: bool = False

    @classmethod
    def from_config(cls, feat_extractor: Mapping, where: str = "manifest model.config.feat_extractor") -> MelParams:
        missing = [
            k
            for k in ("n_fft", "num_mels", "sampling_rate", "hop_size", "win_size", "fmin", "fmax")
            if k not in feat_extractor
        ]
        if missing:
            raise ToolError(
                where,
                f"lacks {', '.join(missing)}",
                "the yaml's feat_extractor arguments (n_fft, num_mels, sampling_rate, hop_size, "
                "win_size, fmin, fmax, center)",
            )
        f = feat_extractor
        params = cls(
            int(f["n_fft"]),
            int(f["num_mels"]),
            int(f["sampling_rate"]),
            int(f["hop_size"]),
            int(f["win_size"]),
            float(f["fmin"]),
            None if f["fmax"] is None else float(f["fmax"]),
            bool(f.get("center", False)),
        )
        if not (0 < params.hop_size <= params.n_fft and 0 < params.win_size <= params.n_fft):
            raise ToolError(
                where,
                f"hop_size {params.hop_size}, win_size {params.win_size}, n_fft {params.n_fft}",
                "0 < hop_size <= n_fft and 0 < win_size <= n_fft",
            )
        return params


def prompt_mel(wav: np.ndarray, params: MelParams) -> np.ndarray:
    """(1, T, num_mels) float32 log mel of the prompt at params.sampling_rate; T = N // hop for v2 (center=False).

    Reflect pad (n_fft - hop) // 2, STFT with a periodic hann of win_size, magnitude sqrt(power + 1e-9),
    Slaney mel filters fmin..fmax, natural log floored at 1e-5.
    """
    x = np.asarray(wav, dtype=np.float32)
    pad = (params.n_fft - params.hop_size) // 2
    if len(x) <= pad:
        raise ValueError(f"prompt_mel needs more than {pad} samples, got {len(x)}")
    x = dsp.reflect_pad(x.astype(np.float64), pad, pad)
    spec = dsp.stft(x, params.n_fft, params.hop_size, dsp.hann_window(params.win_size), center=params.center)
    magnitude = np.sqrt(dsp.power_spectrum(spec) + 1e-9)
    filters = _mel_filters(params.sampling_rate, params.n_fft, params.num_mels, params.fmin, params.fmax)
    return np.log(np.maximum(magnitude @ filters.T, 1e-5))[None].astype(np.float32)

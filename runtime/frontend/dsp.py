"""The numeric routines the frontend computes itself: windows, framing, STFT, Slaney mel filters.

Shared by the whisper log-mel (speech tokenizer input) and the matcha prompt mel (flow prompt), so both
use one STFT and one filterbank. Everything is computed in float64; callers cast the result to float32.
"""

from __future__ import annotations

import math

import numpy as np


def hann_window(length: int, periodic: bool = True) -> np.ndarray:
    """Hann window; `periodic=True` is torch.hann_window's default (the DFT-even window)."""
    denom = length if periodic else length - 1
    n = np.arange(length, dtype=np.float64)
    return 0.5 - 0.5 * np.cos(2.0 * math.pi * n / max(denom, 1))


def centred_window(window: np.ndarray, n_fft: int) -> np.ndarray:
    """A window shorter than n_fft, zero-padded on both sides to n_fft (as torch.stft does)."""
    if len(window) == n_fft:
        return window
    left = (n_fft - len(window)) // 2
    return np.pad(window, (left, n_fft - len(window) - left))


def reflect_pad(signal: np.ndarray, left: int, right: int) -> np.ndarray:
    """Mirror padding without repeating the edge sample (torch/numpy 'reflect')."""
    return np.pad(signal, (left, right), mode="reflect")


def frames(signal: np.ndarray, frame_length: int, hop: int) -> np.ndarray:
    """(n_frames, frame_length) strided view; frames start at 0, hop, 2*hop, ... and lie fully inside."""
    n_frames = 1 + (len(signal) - frame_length) // hop
    if n_frames <= 0:
        return np.zeros((0, frame_length), dtype=signal.dtype)
    view = np.lib.stride_tricks.sliding_window_view(signal, frame_length)
    return view[: (n_frames - 1) * hop + 1 : hop]


def stft(signal: np.ndarray, n_fft: int, hop: int, window: np.ndarray, center: bool = False) -> np.ndarray:
    """One-sided STFT, (n_frames, n_fft // 2 + 1) complex128, with torch.stft's framing.

    center=True reflect-pads n_fft // 2 samples on both sides first (torch.stft(center=True, pad_mode='reflect')).
    """
    x = np.asarray(signal, dtype=np.float64)
    if center:
        x = reflect_pad(x, n_fft // 2, n_fft // 2)
    return np.fft.rfft(frames(x, n_fft, hop) * centred_window(window, n_fft), axis=-1)


def power_spectrum(spec: np.ndarray) -> np.ndarray:
    return spec.real**2 + spec.imag**2


# ---- Slaney mel scale (librosa's default: htk=False, norm='slaney') ----------------------------------------
_F_SP = 200.0 / 3.0  # Hz per mel below 1 kHz (linear part)
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOG_STEP = math.log(6.4) / 27.0  # log-spaced part above 1 kHz


def hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    hz = np.asarray(hz, dtype=np.float64)
    linear = hz / _F_SP
    log_part = _MIN_LOG_MEL + np.log(np.maximum(hz, _MIN_LOG_HZ) / _MIN_LOG_HZ) / _LOG_STEP
    return np.where(hz >= _MIN_LOG_HZ, log_part, linear)


def mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    linear = _F_SP * mel
    log_part = _MIN_LOG_HZ * np.exp(_LOG_STEP * (np.maximum(mel, _MIN_LOG_MEL) - _MIN_LOG_MEL))
    return np.where(mel >= _MIN_LOG_MEL, log_part, linear)


def slaney_mel_filters(
    sample_rate: int, n_fft: int, n_mels: int, fmin: float = 0.0, fmax: float | None = None
) -> np.ndarray:
    """Triangular mel filters, (n_mels, n_fft // 2 + 1) float32, area-normalised (Slaney).

    Rounded to float32 in two steps (triangles, then after normalisation) exactly as librosa.filters.mel
    does with dtype=float32, so the result equals librosa's and whisper's stored `mel_filters.npz` bit for bit.
    """
    fmax = sample_rate / 2.0 if fmax is None else float(fmax)
    fft_hz = np.fft.rfftfreq(n_fft, d=1.0 / sample_rate)
    edges_hz = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    widths = np.diff(edges_hz)
    offsets = edges_hz[:, None] - fft_hz[None, :]
    rising = -offsets[:-2] / widths[:-1, None]
    falling = offsets[2:] / widths[1:, None]
    triangles = np.maximum(0.0, np.minimum(rising, falling)).astype(np.float32)
    area_norm = 2.0 / (edges_hz[2:] - edges_hz[:-2])
    return (triangles.astype(np.float64) * area_norm[:, None]).astype(np.float32)

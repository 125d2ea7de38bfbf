"""Upstream's prompt resampler in numpy: torchaudio 2.3.1's `transforms.Resample` (windowed sinc, `sinc_interp_hann`,
lowpass_filter_width 6, rolloff 0.99), the resampler upstream's `load_wav` runs on every prompt.

The kernel is built exactly as torchaudio builds it (float64, then cached as float32; the phase offsets
k / new_freq are float32 quotients as torch's integer true-division makes them), so kernels are equal bit for
bit; the convolution is a float32 matrix product over strided frames, equal to torch's conv1d within float32
accumulation order (~1e-7 relative). Used for prompt audio only: synthesized audio is never resampled.
"""

from __future__ import annotations

import functools
import math

import numpy as np

LOWPASS_FILTER_WIDTH = 6
ROLLOFF = 0.99


@functools.lru_cache(maxsize=16)
def sinc_hann_kernel(orig_freq: int, new_freq: int) -> tuple[np.ndarray, int]:
    """(kernel (new, 2 * width + orig) float32, width) for rates already divided by their gcd."""
    base_freq = min(orig_freq, new_freq) * ROLLOFF
    width = math.ceil(LOWPASS_FILTER_WIDTH * orig_freq / base_freq)
    idx = np.arange(-width, width + orig_freq, dtype=np.float64)[None, :] / orig_freq
    phase = (np.arange(0, -new_freq, -1, dtype=np.float32) / np.float32(new_freq)).astype(np.float64)
    t = (phase[:, None] + idx) * base_freq
    t = np.clip(t, -LOWPASS_FILTER_WIDTH, LOWPASS_FILTER_WIDTH)
    window = np.cos(t * math.pi / LOWPASS_FILTER_WIDTH / 2) ** 2
    t = t * math.pi
    scale = base_freq / orig_freq
    with np.errstate(invalid="ignore", divide="ignore"):
        kernel = np.where(t == 0, 1.0, np.sin(t) / t)
    kernel32 = (kernel * (window * scale)).astype(np.float32)
    kernel32.setflags(write=False)  # cached: shared by every call
    return kernel32, width


def resample_sinc(samples: np.ndarray, source_rate: int, target_rate: int) -> np.ndarray:
    """`torchaudio.transforms.Resample(source_rate, target_rate)(x)` for a mono float32 signal."""
    x = np.ascontiguousarray(samples, dtype=np.float32)
    if source_rate == target_rate:
        return x
    gcd = math.gcd(int(source_rate), int(target_rate))
    orig, new = int(source_rate) // gcd, int(target_rate) // gcd
    kernel, width = sinc_hann_kernel(orig, new)
    padded = np.pad(x, (width, width + orig))
    taps = kernel.shape[1]
    n_frames = (len(padded) - taps) // orig + 1
    frames = np.lib.stride_tricks.as_strided(padded, (n_frames, taps), (orig * 4, 4), writeable=False)
    out = (frames @ kernel.T).reshape(-1)  # frame j, phase c -> sample j * new + c (torch's transpose + reshape)
    return np.ascontiguousarray(out[: math.ceil(new * len(x) / orig)])

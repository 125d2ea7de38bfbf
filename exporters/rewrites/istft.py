"""Export-friendly STFT / ISTFT (center=True, onesided, any window) as fixed-basis convolutions.

`torch.stft` exports to the ONNX `STFT` op, which TensorRT lacks, and onnxscript has no `aten::istft` at
all. Both transforms are linear in the signal, so with a frame length of `n_fft` and a hop of `hop` they
are exactly a strided convolution and a transposed convolution with constant kernels:

- STFT: reflect-pad `n_fft // 2` on both sides, then Conv1d(1 -> 2 * bins, kernel n_fft, stride hop) whose
  kernels are `window[n] * cos(2 pi k n / n_fft)` (real part) and `-window[n] * sin(...)` (imaginary part),
  bins = n_fft // 2 + 1. Same values as `torch.stft(..., center=True, pad_mode="reflect", onesided=True)`.
- ISTFT: the onesided inverse DFT of each frame times the synthesis window, as ConvTranspose1d(2 * bins
  -> 1, kernel n_fft, stride hop) (overlap-add included), divided by the overlap-added squared window
  (the same transposed conv on a ones signal), then `n_fft // 2` samples trimmed from each end. Same as
  `torch.istft(..., center=True, length=None)`: the imaginary parts of the DC and Nyquist bins are
  ignored, interior bins count twice (Hermitian symmetry).

Bases are built in float64 and rounded once to float32. Every size comes from the caller (HiFT's
`istft_params` and its window); nothing here assumes 16 / 4.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _dft_angles(n_fft: int) -> torch.Tensor:
    """2 pi k n / n_fft for k in [0, n_fft // 2], n in [0, n_fft), exact integer products first."""
    k = torch.arange(n_fft // 2 + 1, dtype=torch.float64)[:, None]
    n = torch.arange(n_fft, dtype=torch.float64)[None, :]
    return 2.0 * math.pi * torch.remainder(k * n, n_fft) / n_fft


def stft_basis(window: torch.Tensor) -> torch.Tensor:
    """Conv1d weight (2 * bins, 1, n_fft): real rows then imaginary rows of the windowed forward DFT."""
    w = window.to(torch.float64)[None, :]
    ang = _dft_angles(window.numel())
    return torch.cat([w * torch.cos(ang), -w * torch.sin(ang)]).unsqueeze(1).to(torch.float32)


def istft_basis(window: torch.Tensor) -> torch.Tensor:
    """ConvTranspose1d weight (2 * bins, 1, n_fft): windowed onesided inverse DFT (1/n_fft included)."""
    n_fft = window.numel()
    ang = _dft_angles(n_fft)
    weight = torch.full((n_fft // 2 + 1, 1), 2.0, dtype=torch.float64)
    weight[0] = 1.0
    if n_fft % 2 == 0:
        weight[-1] = 1.0  # Nyquist bin appears once
    w = window.to(torch.float64)[None, :] / n_fft
    real = weight * torch.cos(ang) * w
    imag = -weight * torch.sin(ang) * w  # sin rows of DC / Nyquist are exactly 0: their imag parts drop out
    return torch.cat([real, imag]).unsqueeze(1).to(torch.float32)


class ConvSTFT(torch.nn.Module):
    """(B, L) signal -> (real, imag), each (B, bins, L // hop + 1), as torch.stft(center=True, reflect)."""

    def __init__(self, n_fft: int, hop: int, window: torch.Tensor):
        super().__init__()
        if window.numel() != n_fft:
            raise ValueError(f"window has {window.numel()} samples, n_fft is {n_fft}")
        self.n_fft, self.hop, self.bins = n_fft, hop, n_fft // 2 + 1
        self.register_buffer("basis", stft_basis(window), persistent=False)

    def forward(self, x: torch.Tensor):
        pad = self.n_fft // 2
        x = F.pad(x.unsqueeze(1), (pad, pad), mode="reflect")
        spec = F.conv1d(x, self.basis, stride=self.hop)
        return spec[:, : self.bins], spec[:, self.bins :]


class ConvISTFT(torch.nn.Module):
    """(real, imag), each (B, bins, frames) -> (B, hop * (frames - 1)), as torch.istft(center=True)."""

    def __init__(self, n_fft: int, hop: int, window: torch.Tensor):
        super().__init__()
        if window.numel() != n_fft:
            raise ValueError(f"window has {window.numel()} samples, n_fft is {n_fft}")
        self.n_fft, self.hop = n_fft, hop
        self.register_buffer("basis", istft_basis(window), persistent=False)
        self.register_buffer(
            "window_sq", (window.to(torch.float64) ** 2).to(torch.float32).view(1, 1, -1), persistent=False
        )

    def forward(self, real: torch.Tensor, imag: torch.Tensor) -> torch.Tensor:
        frames = F.conv_transpose1d(torch.cat([real, imag], dim=1), self.basis, stride=self.hop)
        # Overlap-added squared window, from the same op on a ones signal: its length follows the input.
        ones = torch.ones_like(real[:, :1])
        envelope = F.conv_transpose1d(ones, self.window_sq, stride=self.hop)
        half = self.n_fft // 2
        return frames[:, 0, half:-half] / envelope[:, 0, half:-half]

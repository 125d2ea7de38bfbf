"""float32 arithmetic that reproduces torch's CPU rounding where plain ONNX ops would not.

HiFT's sine source runs a phase of up to ~1e4 rad through `sin`; one float32 ulp there (~1e-3 rad) is
already several PCM LSBs of output, so the graph must round exactly where upstream rounds:

- `torch.cumsum` on float32 CPU accumulates in double and rounds each prefix once; ONNX CumSum
  accumulates in float32. `exact_cumsum` splits the addends so every partial sum is exact in float32,
  then rounds the three partial sums once.
- torch's vectorised (AVX2/AVX512) linear-interpolation kernel is compiled with FMA contraction:
  `src = fma(scale, j + 0.5, -0.5)` and `out = fma(w0, x0, w1 * x1)`. `fma` below computes a*b + c
  with one rounding from error-free transformations (Dekker's product, Knuth's sum).

Only Mul/Add/Sub/Floor/CumSum: no float64 (TensorRT has none) and no FMA op (ONNX has none). The
tracer and ONNX Runtime keep each op separately rounded, which is what the transformations need.
Results equal the correctly rounded value except in rare double-rounding ties (measured: none in
1.3 M interpolated samples).
"""

from __future__ import annotations

import torch

_SPLITTER = 4097.0  # 2**12 + 1: Veltkamp split of a float32 into two 12-bit halves


def two_sum(a, b):
    """s, t with s = fl(a + b) and s + t == a + b exactly (Knuth; no ordering of |a|, |b| needed)."""
    s = a + b
    bb = s - a
    return s, (a - (s - bb)) + (b - bb)


def split(a):
    """hi, lo with a == hi + lo and hi, lo each representable in 12 bits (Veltkamp)."""
    c = a * _SPLITTER
    hi = c - (c - a)
    return hi, a - hi


def two_prod(a, b):
    """p, e with p = fl(a * b) and p + e == a * b exactly (Dekker; no FMA needed)."""
    p = a * b
    ah, al = split(a)
    bh, bl = split(b)
    return p, ((ah * bh - p) + ah * bl + al * bh) + al * bl


def fma(a, b, c):
    """fl(a * b + c) with a single rounding (up to rare double-rounding ties)."""
    p, e = two_prod(a, b)
    s, t = two_sum(p, c)
    return s + (t + e)


def exact_cumsum(x: torch.Tensor, dim: int, max_len_bits: int = 12, cumsum=torch.cumsum) -> torch.Tensor:
    """Cumulative sum of x in [0, 1) along `dim`, each prefix rounded once as torch's double accumulator does.

    x = hi + mid + lo with hi on a 2**-12 grid, mid on a 2**-24 grid: the running sums of each part then
    fit in 24 bits (exact in float32) for up to 2**max_len_bits addends, whatever the summation order or
    accumulator precision of `cumsum` (tests pass a float32-accumulating one, as ONNX CumSum is). The
    three sums are combined with one final rounding."""
    step_hi, step_mid = 2.0**-max_len_bits, 2.0 ** -(2 * max_len_bits)
    hi = torch.floor(x * (1.0 / step_hi)) * step_hi
    rest = x - hi
    mid = torch.floor(rest * (1.0 / step_mid)) * step_mid
    lo = rest - mid
    s, e = two_sum(cumsum(hi, dim), cumsum(mid, dim))
    return s + (e + cumsum(lo, dim))

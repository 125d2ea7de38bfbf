"""exporters/rewrites/istft.py: the fixed-basis conv STFT / ISTFT equal torch.stft / torch.istft (center=True), and
export to ONNX without STFT/DFT ops, with a dynamic length.

Tolerance: |err| <= 5e-6 * max(1, absmax of the reference). Both sides are float32 sums of n_fft products
(a 16-term dot product here, radix-2 butterflies in torch's FFT): measured <= 1e-6 on unit-scale signals.
A wrong window, basis sign, envelope or trim gives errors of order 1e-1.
"""

import numpy as np
import pytest
import torch

from exporters.rewrites.istft import ConvISTFT, ConvSTFT

TOL = 5e-6
# (n_fft, hop): HiFT's 16/4, another power of two, an odd n_fft (no Nyquist bin) and hop = n_fft / 2.
PARAMS = [(16, 4), (32, 8), (15, 5), (20, 10)]


def _window(n_fft):
    return torch.hann_window(n_fft, periodic=True)  # = scipy get_window("hann", n, fftbins=True)


def _close(got, want, what):
    err = float((got - want).abs().max())
    bound = TOL * max(1.0, float(want.abs().max()))
    assert err <= bound, f"{what}: max |err| {err:.2e} > {bound:.2e}"


@pytest.mark.parametrize("n_fft,hop", PARAMS)
@pytest.mark.parametrize("length_hops", [3, 7, 480, 24001])  # reflect padding needs > n_fft // 2 samples
def test_conv_stft_equals_torch_stft(n_fft, hop, length_hops):
    g = torch.Generator().manual_seed(length_hops)
    length = hop * length_hops
    x = 0.3 * torch.randn(1, length, generator=g)
    w = _window(n_fft)
    ref = torch.view_as_real(
        torch.stft(x, n_fft, hop, n_fft, window=w, center=True, pad_mode="reflect", return_complex=True)
    )
    real, imag = ConvSTFT(n_fft, hop, w)(x)
    assert real.shape == ref.shape[:-1] == imag.shape
    _close(real, ref[..., 0], "real")
    _close(imag, ref[..., 1], "imag")


@pytest.mark.parametrize("n_fft,hop", PARAMS)
@pytest.mark.parametrize("frames", [2, 9, 6001])
def test_conv_istft_equals_torch_istft(n_fft, hop, frames):
    g = torch.Generator().manual_seed(frames)
    bins = n_fft // 2 + 1
    # HiFT's spectra: magnitude exp(x) clipped at 100, phase sin(y); arbitrary imag parts in DC/Nyquist
    # (torch.istft ignores them, so must the conv version).
    mag = torch.exp(torch.randn(1, bins, frames, generator=g)).clip(max=1e2)
    phase = torch.sin(torch.randn(1, bins, frames, generator=g))
    real, imag = mag * torch.cos(phase), mag * torch.sin(phase)
    w = _window(n_fft)
    ref = torch.istft(torch.complex(real, imag), n_fft, hop, n_fft, window=w, center=True)
    got = ConvISTFT(n_fft, hop, w)(real, imag)
    assert got.shape == ref.shape == (1, hop * (frames - 1) + n_fft % 2)  # centre trim: n_fft // 2 per side
    _close(got, ref, "istft")


def test_istft_inverts_stft():
    w = _window(16)
    x = 0.3 * torch.randn(1, 4 * 1000, generator=torch.Generator().manual_seed(1))
    _close(ConvISTFT(16, 4, w)(*ConvSTFT(16, 4, w)(x)), x, "roundtrip")


def test_window_must_match_n_fft():
    with pytest.raises(ValueError, match="n_fft"):
        ConvSTFT(16, 4, _window(15))
    with pytest.raises(ValueError, match="n_fft"):
        ConvISTFT(16, 4, _window(20))


def test_exports_without_stft_ops_and_runs_any_length(tmp_path):
    import onnx
    import onnxruntime as ort

    w = _window(16)

    class RoundTrip(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.stft, self.istft = ConvSTFT(16, 4, w), ConvISTFT(16, 4, w)

        def forward(self, x):
            return self.istft(*self.stft(x))

    path = tmp_path / "roundtrip.onnx"
    torch.onnx.export(
        RoundTrip(),
        (torch.randn(1, 400),),
        str(path),
        input_names=["x"],
        output_names=["y"],
        dynamic_axes={"x": {1: "n"}, "y": {1: "n"}},
        opset_version=18,
        dynamo=False,
    )
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert not ops & {"STFT", "DFT"}, ops
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for n in (40, 4 * 1001):
        x = (0.3 * np.random.default_rng(n).standard_normal((1, n))).astype(np.float32)
        y = sess.run(None, {"x": x})[0]
        assert y.shape == x.shape
        assert np.abs(y - x).max() <= TOL

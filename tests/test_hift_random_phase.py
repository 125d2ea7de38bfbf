"""The claim behind dropping SineGen2's random initial phase from the `hift` graph: it has no effect on the
output of upstream CosyVoice2 HiFT.

Upstream adds `rand(1, harmonics)` (harmonic 0 zeroed) to sample 0 of the per-sample phase increments,
then linearly downsamples them by 1/480, which reads only samples 480k + 239 and 480k + 240. The test
runs upstream `hift.inference` with the same mel, cache and noise and different phases, including NaN:
NaN would poison any output it reached, so bitwise-equal finite outputs show sample 0 is never read.
"""

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.oracle


def _run(hift, mel, cache, noise, phase):
    from exporters.oracles.hift import injected_noise

    with injected_noise(noise, phase) as calls:
        speech, source = hift.inference(speech_feat=mel, cache_source=cache)
    assert calls.initial_phase == 1 and calls.sine_noise == 1, calls.shapes  # the phase was really drawn
    return speech, source


@pytest.mark.parametrize("cached", [False, True], ids=["first_chunk", "steady_chunk"])
def test_random_initial_phase_has_no_effect(tiny_model, cached):
    from exporters.oracles.flow import upstream_flow_mel

    hift = tiny_model.hift
    g = torch.Generator().manual_seed(11)
    mel = upstream_flow_mel(tiny_model.flow, g, n_tokens=29)[:, :, :58]
    cache = 0.1 * torch.randn(1, 1, 3840 if cached else 0, generator=g)
    noise = torch.randn(1, 58 * 480, 9, generator=g)
    phases = [
        torch.zeros(1, 9),
        torch.rand(1, 9, generator=g),
        torch.rand(1, 9, generator=g),
        torch.full((1, 9), float("nan")),
    ]
    outs = [_run(hift, mel, cache, noise, p) for p in phases]
    speech0, source0 = outs[0]
    assert torch.isfinite(speech0).all() and float(speech0.std()) > 0.05  # a real waveform, not silence
    for speech, source in outs[1:]:
        assert torch.equal(speech, speech0)
        assert torch.equal(source, source0)


def test_the_noise_does_have_an_effect(tiny_model):
    """Control: the same harness does see a change of the injected noise (so equality above is not vacuous)."""
    hift = tiny_model.hift
    g = torch.Generator().manual_seed(12)
    mel = 0.5 * torch.randn(1, 80, 30, generator=g) - 5
    cache = torch.zeros(1, 1, 0)
    a, _ = _run(hift, mel, cache, torch.randn(1, 30 * 480, 9, generator=g), torch.zeros(1, 9))
    b, _ = _run(hift, mel, cache, torch.randn(1, 30 * 480, 9, generator=g), torch.zeros(1, 9))
    assert float((a - b).abs().max()) > 1e-3
    assert np.isfinite(a.numpy()).all()

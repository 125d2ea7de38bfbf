"""specs/noise.py: vocoder noise addressed by absolute mel frame (no torch, no oracle needed)."""

import numpy as np
import pytest

from specs.noise import FrameNoise


def test_chunked_draws_equal_monolithic_draws():
    noise = FrameNoise(seed=3, samples_per_frame=480, harmonics=9)
    whole = noise(0, 388)
    assert whole.shape == (1, 388 * 480, 9) and whole.dtype == np.float32
    # upstream's streaming calls: 50 frames, then 8 cached + 100, 8 + 200, 8 + 38
    parts, start = [], 0
    for cached, new in [(0, 50), (8, 100), (8, 200), (8, 38)]:
        chunk = noise(start - cached, cached + new)
        np.testing.assert_array_equal(chunk, whole[:, (start - cached) * 480 : (start + new) * 480])
        parts.append(chunk[:, cached * 480 :])
        start += new
    np.testing.assert_array_equal(np.concatenate(parts, axis=1), whole)


def test_same_seed_is_bitwise_reproducible_and_seeds_differ():
    a = FrameNoise(5, 480, 9)(17, 30)
    assert a.tobytes() == FrameNoise(5, 480, 9)(17, 30).tobytes()
    assert not np.array_equal(a, FrameNoise(6, 480, 9)(17, 30))
    assert not np.array_equal(a, FrameNoise(5, 480, 9)(18, 30)[:, :, :])  # frames differ from each other


def test_is_standard_normal():
    z = FrameNoise(0, 480, 9)(0, 300).ravel().astype(np.float64)  # 1.3 M values
    assert abs(z.mean()) < 5e-3 and abs(z.std() - 1) < 5e-3
    assert abs(np.mean(np.abs(z) > 1.96) - 0.05) < 2e-3  # the tails too, not only two moments
    assert abs(np.corrcoef(z[:-1], z[1:])[0, 1]) < 5e-3


def test_zero_frames_and_bad_positions():
    assert FrameNoise(0, 480, 9)(10, 0).shape == (1, 0, 9)
    with pytest.raises(ValueError):
        FrameNoise(0, 480, 9)(-1, 3)
    with pytest.raises(ValueError):
        FrameNoise(-1, 480, 9)

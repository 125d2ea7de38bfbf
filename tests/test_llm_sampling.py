"""runtime/sampling.py against upstream `ras_sampling` / `sampling_ids`: forced cases (degenerate
distributions, the nucleus boundary, top-k ties, the repetition fallback, eos masking) and the sampled
distribution (chi-square against the exact ras_sampling distribution, for ours and upstream's alike)."""

from __future__ import annotations

import numpy as np
import pytest

from runtime.sampling import RasParams, RasSampler, nucleus_candidates, ras_sample, sampling_ids, softmax

NEG = -np.inf


def upstream_ras(scores: np.ndarray, decoded: list[int], seed: int) -> int:
    import torch
    from cosyvoice.utils.common import ras_sampling

    torch.manual_seed(seed)
    return int(
        ras_sampling(
            torch.tensor(scores, dtype=torch.float32), list(decoded), 25, top_p=0.8, top_k=25, win_size=10, tau_r=0.1
        )
    )


def exact_ras_distribution(scores: np.ndarray, decoded: list[int], p: RasParams = RasParams()) -> np.ndarray:
    """P(token) under ras_sampling, from its definition: nucleus draw, then the full-vocab redraw (with the
    drawn token masked) when the drawn token occurs in the last win_size tokens."""
    ids, probs = nucleus_candidates(scores, p.top_p, p.top_k)
    dist = np.zeros(len(scores))
    recent = list(decoded[-p.win_size :])
    for token, q in zip(ids, probs / probs.sum(dtype=np.float64)):
        if recent.count(int(token)) >= p.win_size * p.tau_r:
            masked = np.array(scores, np.float32)
            masked[token] = NEG
            dist += q * softmax(masked).astype(np.float64)
        else:
            dist[token] += q
    return dist


def test_nucleus_includes_the_token_that_crosses_top_p():
    scores = np.log(np.array([0.5, 0.3, 0.15, 0.05], np.float32))
    ids, _ = nucleus_candidates(scores, 0.8, 25)
    assert ids.tolist() == [0, 1]  # 0.5 < 0.8 -> take 0.3 too; 0.8 is not < 0.8 -> stop
    ids, _ = nucleus_candidates(np.log(np.array([0.5, 0.29, 0.21], np.float32)), 0.8, 25)
    assert ids.tolist() == [0, 1, 2]  # 0.79 < 0.8: the third token (crossing 0.8) is included


def test_top_k_ties_keep_index_order():
    ids, _ = nucleus_candidates(np.zeros(100, np.float32), 0.8, 25)
    assert ids.tolist() == list(range(25))  # stable descending sort, 25 * 0.01 < 0.8


def test_degenerate_distribution_and_repetition_fallback():
    rng = np.random.default_rng(0)
    scores = np.full(50, NEG, np.float32)
    scores[7], scores[3] = 0.0, -30.0  # token 7 has probability ~1, token 3 the rest
    assert all(ras_sample(scores, [], rng) == 7 for _ in range(20))
    assert all(ras_sample(scores, [1, 7, 2], rng) == 3 for _ in range(20))  # 7 was just produced: redraw
    old = [7] + [1] * 10  # 7 only outside the window of 10
    assert all(ras_sample(scores, old, rng) == 7 for _ in range(20))


def test_sampling_ids_masks_only_eos_before_min_len():
    rng = np.random.default_rng(0)
    scores = np.full(20, -40.0, np.float32)
    scores[16], scores[17], scores[5] = 0.0, -1.0, -2.0  # eos 16 most likely, another stop id 17 next
    assert sampling_ids(scores, [], rng, eos=16, ignore_eos=False) == 16
    got = {sampling_ids(scores, [], rng, eos=16, ignore_eos=True) for _ in range(50)}
    assert 16 not in got and 17 in got  # upstream masks eos only, other stop ids stay samplable


@pytest.mark.oracle
@pytest.mark.parametrize("decoded", [[], [11, 4, 11]], ids=["nucleus", "with_repetition"])
def test_sampled_distribution_matches_upstream_ras_sampling(decoded):
    from scipy.stats import chisquare

    rng = np.random.default_rng(3)
    scores = (rng.standard_normal(300) * 2.5).astype(np.float32)
    scores[[11, 4]] += 6.0  # two dominant tokens, so the repetition path is taken often when decoded has them
    want = exact_ras_distribution(scores, decoded)
    n = 3000
    ours = RasSampler(0)
    ours_counts = np.bincount([ours(scores, decoded) for _ in range(n)], minlength=300)
    up_counts = np.bincount([upstream_ras(scores, decoded, seed) for seed in range(n)], minlength=300)
    support = want > 0
    assert ours_counts[~support].sum() == 0 and up_counts[~support].sum() == 0
    # pool tokens with expected count < 5 into one bin (chi-square validity)
    big = want * n >= 5
    for counts in (ours_counts, up_counts):
        obs = np.append(counts[big], counts[~big].sum())
        exp = np.append(want[big], want[~big].sum()) * n
        keep = exp > 0
        assert chisquare(obs[keep], exp[keep] * obs.sum() / exp[keep].sum()).pvalue > 1e-3


@pytest.mark.oracle
def test_forced_cases_agree_with_upstream():
    scores = np.full(40, NEG, np.float32)
    scores[9], scores[2] = 0.0, -25.0
    for seed in range(5):
        assert upstream_ras(scores, [], seed) == ras_sample(scores, [], np.random.default_rng(seed)) == 9
        assert upstream_ras(scores, [9], seed) == ras_sample(scores, [9], np.random.default_rng(seed)) == 2
    uniform = np.zeros(100, np.float32)
    assert max(upstream_ras(uniform, [], s) for s in range(200)) < 25
    assert max(ras_sample(uniform, [], np.random.default_rng(s)) for s in range(200)) < 25

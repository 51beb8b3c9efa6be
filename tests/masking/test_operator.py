import itertools
import math
from fractions import Fraction

import numpy as np
import pytest

from balm.masking import STRATEGIES, derive_seed, make_masks, realised_rates


def _codes(mask):
    return (mask.astype(np.int64) << np.arange(mask.shape[1])).sum(axis=1)


def _exact_floor_counts(n, rates_str):
    """floor(N r̂(ê)) for every pattern, in exact decimal arithmetic (independent of the library)."""
    rs = [Fraction(s) for s in rates_str]
    m = len(rs)
    out = {}
    for bits in itertools.product([0, 1], repeat=m):
        ratio = Fraction(1)
        for b, r in zip(bits, rs):
            ratio *= (1 - r) if b else r
        code = sum(b << j for j, b in enumerate(bits))
        out[code] = math.floor(n * ratio)
    return out


@pytest.mark.parametrize("m", [2, 3, 4])
def test_paper_realised_rates_within_design_bound(m):
    rng = np.random.default_rng(100 + m)
    for _ in range(150):
        rates = rng.uniform(0.0, 0.95, size=m)
        n = int(rng.integers(1, 2500))
        mask = make_masks(n, rates, seed=int(rng.integers(1 << 30)), strategy="paper")
        eps = np.abs(rates - realised_rates(mask))
        bound = np.prod(rates) / m + 2**m / n
        assert np.all(eps <= bound + 1e-12), (rates, n, eps, bound)
        assert mask.any(axis=1).all()


@pytest.mark.parametrize("m", [2, 3, 4])
def test_default_strategy_hits_the_requested_rates(m):
    """The default (no strategy given) realises every rate within 1/n, counted here by hand."""
    rng = np.random.default_rng(200 + m)
    tried = 0
    for _ in range(150):
        rates = rng.uniform(0.0, 0.9, size=m)
        n = int(rng.integers(1, 2500))
        if np.rint(n * rates).sum() > (m - 1) * n:  # infeasible without an all-missing row
            continue
        mask = make_masks(n, rates, seed=int(rng.integers(1 << 30)))
        missing = (~mask).sum(axis=0)  # per-modality missing counts
        assert np.all(np.abs(missing / n - rates) <= 1.0 / n + 1e-12), (rates, n, missing)
        assert mask.any(axis=1).all()
        tried += 1
    assert tried >= 50
    # the example: ask 0.6 / 0.2, the paper operator gives 0.54 / 0.14, the default the request
    assert np.allclose(realised_rates(make_masks(1000, (0.6, 0.2), seed=0)), (0.6, 0.2))
    assert np.allclose(realised_rates(make_masks(1000, (0.6, 0.2), seed=0, strategy="paper")), (0.54, 0.14))


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_no_row_all_missing(strategy):
    rng = np.random.default_rng(7)
    for _ in range(60):
        m = 3 if strategy == "reference" and rng.random() < 0.5 else int(rng.integers(2, 5))
        rates = rng.uniform(0.0, 0.9, size=m)
        n = int(rng.integers(1, 800))
        if strategy == "exact" and np.rint(n * rates).sum() > (m - 1) * n:
            continue
        mask = make_masks(n, rates, seed=3, strategy=strategy)
        assert mask.shape == (n, m) and mask.dtype == bool
        assert mask.any(axis=1).all()


@pytest.mark.parametrize("m", [2, 3, 4])
def test_paper_pattern_counts_are_floors(m):
    rng = np.random.default_rng(m)
    for _ in range(40):
        rates_str = [f"{x:.2f}" for x in rng.integers(0, 96, size=m) / 100]
        n = int(rng.integers(1, 6000))
        mask = make_masks(n, [float(s) for s in rates_str], seed=11, strategy="paper")
        counts = np.bincount(_codes(mask), minlength=2**m)
        floors = _exact_floor_counts(n, rates_str)
        singles = [1 << j for j in range(m)]
        for code, fl in floors.items():
            if code == 0:
                assert counts[0] == 0
            elif code not in singles:
                assert counts[code] == fl, (rates_str, n, code)
        # the rest is spread as evenly as possible over the single-modality patterns
        extra = np.array([counts[c] - floors[c] for c in singles])
        left = n - sum(fl for c, fl in floors.items() if c != 0)
        assert extra.sum() == left
        assert extra.max() - extra.min() <= 1 and extra.min() == left // m


def test_same_seed_same_mask_and_split_seeds_differ():
    rates = (0.5, 0.7, 0.3)
    for strategy in ("paper", "exact"):
        a = make_masks(1000, rates, seed=5, strategy=strategy)
        b = make_masks(1000, rates, seed=5, strategy=strategy)
        assert np.array_equal(a, b)
        tr = make_masks(1000, rates, seed=derive_seed(5, "mask", "train"), strategy=strategy)
        te = make_masks(1000, rates, seed=derive_seed(5, "mask", "test"), strategy=strategy)
        assert not np.array_equal(tr, te)
        # same pattern multiset (paper counts depend on n and rates only, up to tie-breaking)
        assert abs(realised_rates(tr) - realised_rates(te)).max() <= 2 / 1000


@pytest.mark.parametrize("n", [5810, 1623, 1, 2, 3, 7, 10, 31, 97])
def test_exact_hits_requested_rates(n):
    rates = np.array([0.5, 0.7, 0.3])
    mask = make_masks(n, rates, seed=1, strategy="exact")
    assert np.all(np.abs(realised_rates(mask) - rates) <= 1 / n + 1e-12)
    assert mask.any(axis=1).all()


def test_exact_random_feasible_requests():
    rng = np.random.default_rng(0)
    done = 0
    for _ in range(300):
        m = int(rng.integers(2, 5))
        rates = rng.uniform(0.0, 0.99, size=m)
        n = int(rng.integers(1, 400))
        k = np.rint(n * rates)
        # feasible iff some choice within 1/n fits (M-1) n: lowering the rounded-up ones
        lowerable = int((k >= n * rates - 1e-12).sum())
        if k.sum() - lowerable > (m - 1) * n:
            with pytest.raises(ValueError):
                make_masks(n, rates, seed=0, strategy="exact")
            continue
        mask = make_masks(n, rates, seed=int(rng.integers(100)), strategy="exact")
        assert np.all(np.abs(realised_rates(mask) - rates) <= 1 / n + 1e-12), (rates, n)
        assert mask.any(axis=1).all()
        done += 1
    assert done > 100


def test_exact_joint_is_the_kl_projection_of_independence():
    # The closest distribution (in KL) to the independent one with given marginals and no
    # all-missing mass has product form: log(q / p) = c + sum_m e^m theta_m on every pattern.
    rates = np.array([0.5, 0.7, 0.3])
    n = 5810
    mask = make_masks(n, rates, seed=2, strategy="exact")
    q = np.bincount(_codes(mask), minlength=8)[1:] / n
    bits = ((np.arange(1, 8)[:, None] >> np.arange(3)) & 1).astype(float)
    p = np.where(bits.astype(bool), 1 - rates, rates).prod(axis=1)
    design = np.hstack([np.ones((7, 1)), bits])
    y = np.log(q / p)
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    assert np.abs(design @ coef - y).max() < 0.03
    # while the cyclic layout (a valid mask with the same marginals) is far from product form
    from balm.masking.exact import _cyclic_counts, target_missing_counts
    from balm.masking.patterns import pattern_bits

    cyc = _cyclic_counts(n, target_missing_counts(n, rates), pattern_bits(3))[1:] / n
    assert np.array_equal(np.rint(((1 - bits) * cyc[:, None]).sum(0) * n), np.rint(rates * n))
    assert (cyc == 0).any()


def test_exact_impossible_request_explains():
    with pytest.raises(ValueError, match=r"200") as e:
        make_masks(100, (0.9, 0.9, 0.9), seed=0, strategy="exact")
    assert "[90, 90, 90]" in str(e.value)
    # the paper strategy never fails: it moves the all-missing mass instead
    assert make_masks(100, (0.9, 0.9, 0.9), seed=0, strategy="paper").any(axis=1).all()


def test_exact_borderline_uses_every_row():
    # sum of missing counts equals (M - 1) n: every row keeps exactly one modality
    mask = make_masks(50, (0.9, 0.9, 0.2), seed=4, strategy="exact")
    assert np.array_equal(np.rint(realised_rates(mask) * 50), [45, 45, 10])
    assert (mask.sum(axis=1) == 1).all()


def test_reference_layout_matches_public_code_order():
    n, (ra, rt, rv) = 5810, (0.5, 0.7, 0.3)
    mask = make_masks(n, (ra, rt, rv), seed=0, strategy="reference")
    # the public generator's order: atv, at, tv, av, a, t, v, then leftovers a, v, t
    spec = [
        ((1, 1, 1), int(n * (1 - ra) * (1 - rt) * (1 - rv))),
        ((1, 1, 0), int(n * (1 - ra) * (1 - rt) * rv)),
        ((0, 1, 1), int(n * ra * (1 - rt) * (1 - rv))),
        ((1, 0, 1), int(n * (1 - ra) * rt * (1 - rv))),
        ((1, 0, 0), int(n * (1 - ra) * rt * rv)),
        ((0, 1, 0), int(n * ra * (1 - rt) * rv)),
        ((0, 0, 1), int(n * ra * rt * (1 - rv))),
    ]
    left = n - sum(c for _, c in spec)
    spec += [((1, 0, 0), left // 3), ((0, 0, 1), left // 3), ((0, 1, 0), left - 2 * (left // 3))]
    expected = np.concatenate([np.tile(np.array(p, bool), (c, 1)) for p, c in spec])
    assert np.array_equal(mask, expected)
    assert mask[0].all()
    # the documented bias: every realised rate is low by about prod(r) / M
    bias = np.array([ra, rt, rv]) - realised_rates(mask)
    assert np.allclose(bias, ra * rt * rv / 3, atol=2 / n)
    # seed does not matter for the reference layout
    assert np.array_equal(mask, make_masks(n, (ra, rt, rv), seed=99, strategy="reference"))


def test_reference_other_m_is_ordered_by_level():
    mask = make_masks(1000, (0.2, 0.4, 0.6, 0.3), seed=0, strategy="reference")
    present = mask.sum(axis=1)
    assert mask[0].all()
    body = present[: np.flatnonzero(present == 1)[0]]
    assert np.all(np.diff(body) <= 0)  # levels in decreasing order before the single-modality tail
    assert (present[np.flatnonzero(present == 1)[0]:] == 1).all()


def test_shuffle_spreads_patterns_over_dialogues():
    rates, n = (0.5, 0.7, 0.3), 5810
    blocks = np.array_split(np.arange(n), 120)

    def blocks_without_text(mask):
        return sum(not mask[b, 1].any() for b in blocks)

    paper = blocks_without_text(make_masks(n, rates, seed=0, strategy="paper"))
    ref = blocks_without_text(make_masks(n, rates, seed=0, strategy="reference"))
    assert paper <= 1
    assert ref >= 40
    # and complete rows are not all at the start
    first = make_masks(n, rates, seed=0, strategy="paper")[: n // 4].all(axis=1).mean()
    assert first < 0.2


@pytest.mark.parametrize(
    "rates,pattern",
    [
        ((0.5, 1.2, 0.3), r"rates\[1\]'.*got 1\.2"),
        ((0.5, 0.2, -0.1), r"rates\[2\]'.*got -0\.1"),
        ((float("nan"), 0.2), r"rates\[0\]"),
        ((0.2, "x"), r"rates\[1\]"),
        ((0.2, 1.0), r"rates\[1\]'.*got 1\.0"),
        ((), r"empty"),
    ],
)
def test_invalid_rates_name_index(rates, pattern):
    with pytest.raises(ValueError, match=pattern):
        make_masks(10, rates, seed=0)


def test_invalid_n_strategy_and_single_modality():
    with pytest.raises(ValueError, match=r"n \(number of samples\)"):
        make_masks(0, (0.1, 0.2), seed=0)
    with pytest.raises(ValueError, match="paper, exact, reference"):
        make_masks(10, (0.1, 0.2), seed=0, strategy="shuffled")
    with pytest.raises(ValueError, match=r"rates\[0\]"):
        make_masks(10, (0.3,), seed=0)
    assert make_masks(4, (0.0,), seed=0).all()
    with pytest.raises(ValueError, match="seed"):
        make_masks(10, (0.1, 0.2), seed=-1)

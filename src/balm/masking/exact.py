"""Pattern counts whose per-modality missing counts hit the requested rates exactly."""

from __future__ import annotations

import numpy as np

from .patterns import pattern_bits, pattern_ratios


def target_missing_counts(n: int, rates: np.ndarray) -> np.ndarray:
    """Missing count per modality, each within 1 of ``n r_m``, with no all-missing row possible.

    Starts from ``round(n r_m)``. A row can lose at most M − 1 modalities, so the counts must
    satisfy ``Σ_m k_m ≤ (M − 1) n``; when rounding overshoots that bound, counts that were
    rounded up (or sit exactly on ``n r_m``) are lowered by one, largest overshoot first,
    which keeps every ``|k_m / n − r_m| ≤ 1 / n``. Raises ``ValueError`` when no such choice fits.
    """
    m = len(rates)
    target = n * rates
    k = np.rint(target).astype(np.int64)
    bound = (m - 1) * n
    excess = int(k.sum()) - bound
    if excess > 0:
        # Lowering k_m by one stays within 1/n iff k_m - 1 >= n r_m - 1, i.e. k_m >= n r_m.
        slack = k - target
        movable = np.flatnonzero(slack >= -1e-12)
        if movable.size < excess:
            raise ValueError(
                f"exact masks impossible: missing counts round(n * r) = {k.tolist()} for n = {n} "
                f"sum to {int(k.sum())}, but with no all-missing row at most (M - 1) * n = {bound} "
                f"entries can be missing (M = {m}); even lowering counts by one (still within 1/n) "
                f"leaves {int(k.sum()) - movable.size} > {bound}"
            )
        order = movable[np.argsort(-slack[movable], kind="stable")]
        k[order[:excess]] -= 1
    return k


def _missing_counts(counts: np.ndarray, bits: np.ndarray) -> np.ndarray:
    return (counts[:, None] * ~bits).sum(axis=0)


def _cyclic_counts(n: int, k: np.ndarray, bits: np.ndarray) -> np.ndarray:
    """Fallback: lay modality m's k_m missing slots consecutively around a cycle of n rows.

    Because every ``k_m ≤ n`` no row is hit twice by one modality, and because
    ``Σ k_m ≤ (M − 1) n`` no row is hit by all M modalities.
    """
    m = len(k)
    missing = np.zeros((n, m), dtype=bool)
    start = 0
    for j in range(m):
        idx = (start + np.arange(k[j])) % n
        missing[idx, j] = True
        start = (start + int(k[j])) % n
    codes = ((~missing).astype(np.int64) << np.arange(m)).sum(axis=1)
    return np.bincount(codes, minlength=2**m)


def fitted_distribution(rates: np.ndarray, targets: np.ndarray, iters: int = 500) -> np.ndarray:
    """Pattern distribution closest in KL to the independent one with no all-missing mass.

    Iterative proportional fitting: start from ``r̂(ê)`` with ``r̂(0) = 0`` and rescale, one
    modality at a time, the patterns missing / keeping that modality so its missing share equals
    ``targets[m]``. The fixed point is the I-projection of the paper's distribution onto the
    distributions with the requested marginals and no all-missing pattern.
    """
    m = len(rates)
    bits = pattern_bits(m)
    q = pattern_ratios(rates)
    q[0] = 0.0
    q /= q.sum()
    for _ in range(iters):
        worst = 0.0
        for j in range(m):
            miss = q[~bits[:, j]].sum()
            pres = 1.0 - miss
            worst = max(worst, abs(miss - targets[j]))
            if miss > 0:
                q[~bits[:, j]] *= targets[j] / miss
            if pres > 0:
                q[bits[:, j]] *= (1.0 - targets[j]) / pres
            q /= q.sum()
        if worst < 1e-12:
            break
    return q


def _round_counts(n: int, q: np.ndarray) -> np.ndarray:
    """Integer counts summing to n: floors, then the largest fractional parts get one more."""
    x = n * q
    counts = np.floor(x).astype(np.int64)
    rest = n - int(counts.sum())
    if rest > 0:
        counts[np.argsort(-(x - counts), kind="stable")[:rest]] += 1
    counts[0] = 0 if q[0] == 0 else counts[0]
    return counts


def exact_counts(n: int, rates: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Pattern counts with per-modality missing counts equal to ``target_missing_counts``.

    Construction: (1) fit the pattern distribution closest (in KL) to the paper's independent
    one subject to the target marginals and no all-missing pattern (``fitted_distribution``);
    (2) round it to integer counts; (3) repair each modality's marginal exactly by moving rows
    between patterns that differ only in that modality. Rows to move are drawn without
    replacement, uniformly among the eligible rows (multivariate hypergeometric over the
    pattern counts). Raising modality m's missing count only uses rows where m and at least one
    other modality are present, so no all-missing row appears. Modalities needing fewer missing
    entries are repaired first (they free rows for the others). If the repair runs out of
    eligible rows (only in extreme requests), the counts come from a cyclic construction that
    always meets the marginals.
    """
    m = len(rates)
    k = target_missing_counts(n, rates)
    bits = pattern_bits(m)
    counts = _round_counts(n, fitted_distribution(rates, k / n))
    diff = k - _missing_counts(counts, bits)
    for j in np.argsort(diff, kind="stable"):
        d = int(diff[j])
        if d == 0:
            continue
        if d < 0:  # make |d| rows present in modality j
            eligible = ~bits[:, j]
        else:  # make d rows missing in j, keeping another modality present
            eligible = bits[:, j] & (bits.sum(axis=1) >= 2)
        src = np.flatnonzero(eligible & (counts > 0))
        if counts[src].sum() < abs(d):
            counts = _cyclic_counts(n, k, bits)
            break
        moved = rng.multivariate_hypergeometric(counts[src], abs(d))
        counts[src] -= moved
        counts[src ^ (1 << j)] += moved
    if counts[0] != 0 or int(counts.sum()) != n or not np.array_equal(_missing_counts(counts, bits), k):
        raise RuntimeError("internal error: exact mask counts do not meet their marginals")
    return counts

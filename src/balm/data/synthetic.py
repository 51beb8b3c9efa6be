"""Synthetic IEMOCAP-like and CMU-MOSEI-like datasets, generated at run time from a seed.

The shapes (splits, dialogue and utterance counts, modality names, dimensions, label space)
match the real sets; the content is a latent-variable model built so that modalities differ
in informativeness (text > audio > visual) and dialogue context carries information.

Generative model, per split (see docs/synthetic.md):

- Labels follow a sticky Markov chain inside each dialogue (stay with probability
  ``stay``, otherwise draw from the class prior), so emotions persist. MOSEI-like scores come
  from a per-video sentiment level plus per-utterance noise, rounded to thirds (averaged
  ratings; scores near 0 become exactly 0.0) and clipped to [-3, 3].
- A per-utterance latent ``h_i ∈ R^K``: the class centroid (or the score along a sentiment
  direction) plus latent noise shared by all modalities.
- Modality m: ``x_i^m = a_m (h_i + o_b) Q_m + u_{b,s} P_m + ε_i``, where ``Q_m`` (K x d_m) spans a
  random signal subspace, ``a_m`` sets the modality's signal-to-noise ratio, ``o_b`` is a
  dialogue-level offset inside the signal subspace (a per-utterance model cannot remove it,
  a model that sees the whole dialogue can), ``u_{b,s}`` is per-(dialogue, speaker) nuisance in other
  directions ``P_m``, and ``ε`` is isotropic unit Gaussian noise. Columns then get mild random
  scales and offsets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from balm.masking import derive_seed

from .dataset import Dataset, Split

IEMOCAP_CLASSES = ["hap", "sad", "neu", "ang", "exc", "fru"]
CENTROID_SCALE = 3.4
# Class shares of the 6-class IEMOCAP utterances (hap 648, sad 1084, neu 1708, ang 1103, exc 1041, fru 1849).
IEMOCAP_PRIOR = np.array([648, 1084, 1708, 1103, 1041, 1849], dtype=np.float64) / 7433


@dataclass(frozen=True)
class SplitShape:
    name: str
    sequences: int
    utterances: int


@dataclass(frozen=True)
class SyntheticSpec:
    """Shape and generator settings of one synthetic dataset."""

    name: str
    task: str
    dims: tuple[tuple[str, int], ...]
    splits: tuple[SplitShape, ...]
    length_range: tuple[int, int]
    snr: tuple[float, ...]  # a_m per modality, in ``dims`` order
    latent_dim: int = 8
    latent_noise: float = 0.6  # std of the latent noise shared by all modalities
    dialogue_offset: float = 0.8  # std of o_b (inside the signal subspace)
    nuisance_dim: int = 4
    nuisance: float = 2.0  # std of u_b (outside the signal subspace)
    stay: float = 0.6  # label persistence within a dialogue


IEMOCAP_SPEC = SyntheticSpec(
    name="synthetic-iemocap",
    task="classification",
    dims=(("audio", 1582), ("text", 1024), ("visual", 342)),
    splits=(SplitShape("train", 120, 5810), SplitShape("test", 31, 1623)),
    length_range=(20, 110),
    snr=(0.48, 0.9, 0.16),
    dialogue_offset=1.0,
    stay=0.7,
)

MOSEI_SPEC = SyntheticSpec(
    name="synthetic-mosei",
    task="regression",
    dims=(("audio", 512), ("text", 1024), ("visual", 1024)),
    splits=(SplitShape("train", 2249, 16326), SplitShape("dev", 300, 1871), SplitShape("test", 676, 4659)),
    length_range=(1, 30),
    snr=(0.28, 0.7, 0.2),
    latent_dim=4,
    stay=0.0,
)

SPECS = {"iemocap": IEMOCAP_SPEC, "mosei": MOSEI_SPEC}


def dialogue_lengths(rng: np.random.Generator, sequences: int, utterances: int, low: int, high: int) -> np.ndarray:
    """``sequences`` lengths in ``[low, high]`` summing exactly to ``utterances`` (varied, gamma-shaped)."""
    if not (low * sequences <= utterances <= high * sequences):
        raise ValueError(f"cannot split {utterances} utterances into {sequences} sequences of length {low}..{high}")
    mean = utterances / sequences
    shape = 4.0 if low > 1 else 1.5
    raw = low + rng.gamma(shape, max(mean - low, 1e-3) / shape, size=sequences)
    lengths = np.clip(np.rint(raw), low, high).astype(np.int64)
    diff = utterances - int(lengths.sum())
    while diff != 0:  # nudge random sequences by one until the total is exact
        step = 1 if diff > 0 else -1
        ok = np.flatnonzero((lengths + step >= low) & (lengths + step <= high))
        pick = rng.choice(ok, size=min(abs(diff), ok.size), replace=False)
        lengths[pick] += step
        diff -= step * pick.size
    return lengths


def _orthonormal_rows(rng: np.random.Generator, k: int, d: int) -> np.ndarray:
    q, _ = np.linalg.qr(rng.standard_normal((d, k)))
    return q.T.astype(np.float32)  # (k, d), orthonormal rows


def _sticky_chain(rng: np.random.Generator, lengths: np.ndarray, prior: np.ndarray, stay: float) -> np.ndarray:
    """Class labels: first utterance from ``prior``; then keep the previous label w.p. ``stay``."""
    n = int(lengths.sum())
    fresh = rng.choice(len(prior), size=n, p=prior)
    starts = np.zeros(n, dtype=bool)
    starts[np.concatenate([[0], np.cumsum(lengths)[:-1]])] = True
    keep = (rng.random(n) < stay) & ~starts
    # label = fresh draw at the last position that did not keep its predecessor's label
    last_fresh = np.maximum.accumulate(np.where(keep, 0, np.arange(n)))
    return fresh[last_fresh]


def _mosei_scores(rng: np.random.Generator, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Latent sentiment (float) and its label: rounded to thirds, clipped to [-3, 3]."""
    n = int(lengths.sum())
    seq = np.repeat(np.arange(lengths.size), lengths)
    level = rng.normal(0.35, 1.0, size=lengths.size)[seq]
    latent = level + rng.normal(0.0, 0.9, size=n)
    labels = np.clip(np.rint(latent * 3.0) / 3.0, -3.0, 3.0).astype(np.float32)
    return latent, labels


def _speakers(rng: np.random.Generator, lengths: np.ndarray, two: bool) -> np.ndarray:
    n = int(lengths.sum())
    if not two:
        return np.zeros(n, dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    switch = rng.random(n) < 0.75
    switch[starts] = False
    first = np.zeros(n, dtype=np.int64)
    first[starts] = rng.integers(0, 2, size=lengths.size)
    seq = np.repeat(np.arange(lengths.size), lengths)
    # parity of switches since the dialogue start, flipped by the first speaker
    flips = np.cumsum(switch)
    flips = flips - flips[starts][seq]
    return (first[starts][seq] + flips) % 2


def _generate_split(spec: SyntheticSpec, params: dict, shape: SplitShape, rng: np.random.Generator) -> Split:
    lengths = dialogue_lengths(rng, shape.sequences, shape.utterances, *spec.length_range)
    n = shape.utterances
    seq = np.repeat(np.arange(lengths.size), lengths)
    k = spec.latent_dim
    if spec.task == "classification":
        labels = _sticky_chain(rng, lengths, IEMOCAP_PRIOR, spec.stay)
        h = params["centroids"][labels]
    else:
        latent, labels = _mosei_scores(rng, lengths)
        h = latent[:, None] * params["direction"][None, :]
    speakers = _speakers(rng, lengths, two=spec.task == "classification")
    h = h + spec.latent_noise * rng.standard_normal((n, k))
    offset = (spec.dialogue_offset * rng.standard_normal((lengths.size, k)))[seq]
    h = (h + offset).astype(np.float32)
    group = seq * 2 + speakers  # nuisance per (dialogue, speaker)
    nuis = (spec.nuisance * rng.standard_normal((2 * lengths.size, spec.nuisance_dim)))[group].astype(np.float32)
    features = {}
    for j, (name, d) in enumerate(spec.dims):
        x = rng.standard_normal((n, d), dtype=np.float32)
        x += (spec.snr[j] * h) @ params["Q"][name]
        x += nuis @ params["P"][name]
        x *= params["scale"][name]
        x += params["shift"][name]
        features[name] = x
    ids = [f"{shape.name}_{s:04d}" for s in range(lengths.size)]
    lab = labels.astype(np.int64) if spec.task == "classification" else labels.astype(np.float32)
    return Split(name=shape.name, features=features, labels=lab, speakers=speakers.astype(np.int64),
                 lengths=lengths, sequence_ids=ids, mask=None)


def _parameters(spec: SyntheticSpec, rng: np.random.Generator) -> dict:
    k = spec.latent_dim
    params: dict = {"Q": {}, "P": {}, "scale": {}, "shift": {}}
    if spec.task == "classification":
        # A fixed geometry (accuracy must not depend on the seed): orthogonal centroids, with
        # related emotions closer (exc near hap, fru near ang); Q_m rotates them at random.
        c = np.eye(len(IEMOCAP_CLASSES), k)
        c[4] = 0.6 * c[0] + 0.8 * c[4]
        c[5] = 0.6 * c[3] + 0.8 * c[5]
        params["centroids"] = c * CENTROID_SCALE
    else:
        v = rng.standard_normal(k)
        params["direction"] = v / np.linalg.norm(v) * 1.5
    for name, d in spec.dims:
        both = _orthonormal_rows(rng, k + spec.nuisance_dim, d)
        params["Q"][name] = both[:k]
        params["P"][name] = both[k:]
        params["scale"][name] = np.exp(0.25 * rng.standard_normal(d)).astype(np.float32)
        params["shift"][name] = (0.5 * rng.standard_normal(d)).astype(np.float32)
    return params


def make_synthetic(
    like: str = "iemocap",
    seed: int = 0,
    spec: SyntheticSpec | None = None,
    splits: Sequence[str] | None = None,
) -> Dataset:
    """An IEMOCAP-like (6-class) or CMU-MOSEI-like (regression) dataset, deterministic in ``seed``.

    ``spec`` overrides the generator settings (shapes, signal-to-noise ratios); by default the
    settings are calibrated so that per-modality linear probes reach about 0.6 (text), 0.4
    (audio) and 0.25-0.3 (visual) accuracy on the IEMOCAP-like set (docs/synthetic.md).
    Each split has its own random stream, so ``splits`` (a subset of the split names) gives
    exactly the arrays the full dataset would hold for those splits.
    """
    if like not in SPECS:
        raise ValueError(f"unknown synthetic dataset {like!r}; choose one of {sorted(SPECS)}")
    spec = spec or SPECS[like]
    names = [sh.name for sh in spec.splits]
    if splits is not None:
        unknown = [s for s in splits if s not in names]
        if unknown or not splits:
            raise ValueError(f"synthetic {like!r} has splits {names}; got {list(splits)}")
    params = _parameters(spec, np.random.default_rng(derive_seed(seed, "synthetic", like, "parameters")))
    splits = {
        sh.name: _generate_split(spec, params, sh, np.random.default_rng(derive_seed(seed, "synthetic", like, sh.name)))
        for sh in spec.splits
        if splits is None or sh.name in splits
    }
    classification = spec.task == "classification"
    return Dataset(
        name=spec.name,
        task=spec.task,
        splits=splits,
        num_classes=len(IEMOCAP_CLASSES) if classification else None,
        label_names=list(IEMOCAP_CLASSES) if classification else None,
        speaker_names=["M", "F"] if classification else ["S"],
        mask_info=None,
        metadata={"synthetic": True, "like": like, "seed": int(seed), "snr": dict(zip((m for m, _ in spec.dims), spec.snr))},
    )

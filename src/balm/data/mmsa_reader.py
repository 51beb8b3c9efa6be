"""Reader for the MMSA / MulT pickles (``aligned_50.pkl``, ``unaligned_50.pkl``, ``mosi_data.pkl``).

One pickled dict ``{"train", "valid", "test"}``, each a dict of arrays over N utterances::

    text, audio, vision     (N, T_m, d_m) word/frame-level features (padded to T_m steps)
    regression_labels       (N,) or (N, 1) scores          (MMSA)
    classification_labels   (N,) negative 0 / neutral 1 / positive 2  (MMSA, deprecated there)
    labels                  (N, 1, 1) scores, or (N, K, 2) per-emotion binary (MulT IEMOCAP)
    id                      (N,) "video$_$clip" (MMSA) or (N, k) byte-string rows (MulT)
    audio_lengths, vision_lengths  (N,) real steps of the unaligned audio / vision (MMSA)
    text_bert               (N, 3, T) BERT token ids, attention mask, segment ids (MMSA)
    raw_text, annotations   ignored

balm keeps one vector per utterance: each modality is the mean over its non-padding
steps. Padding is found, per modality, from the first rule that applies: (1) ``<m>_lengths``
says the first L steps are real; (2) when ``text_bert`` is present and has the modality's
T steps, its attention-mask row marks the real steps (text of every MMSA file, audio and
vision of the aligned ones); (3) otherwise a step whose values are all zero is padding
(the MulT files, zero-padded). An utterance with no real step gets a zero vector
(counted in ``metadata["empty_features"]``). ``-inf`` in audio is read as 0, as both
public loaders do. MMSA ids ``video$_$clip`` make videos the sequences (clips in
numeric order); other ids make each utterance its own sequence.
"""

from __future__ import annotations

import os
from typing import Any, Sequence as Seq

import numpy as np

from .dataset import Dataset, Split
from .errors import DataError
from .label_space import build_dataset
from .safe_pickle import safe_load

SPLITS = {"train": "train", "dev": "valid", "test": "test"}
MODALITIES = {"audio": "audio", "text": "text", "visual": "vision"}
POOLS = ("mean",)
MMSA_CLASSES = ("negative", "neutral", "positive")
MULT_IEMOCAP = ("neutral", "happy", "sad", "angry")  # MulT's emotion order of its (N, 4, 2) labels
LABEL_KEYS = {"regression": "regression_labels", "classification": "classification_labels"}


def pool_steps(x: np.ndarray, real: np.ndarray, chunk: int = 1024) -> tuple[np.ndarray, int]:
    """Mean over the real steps: ``out[i] = sum_t real[i,t] x[i,t] / sum_t real[i,t]`` (0 when none).

    Padding steps never enter the sum (whatever they hold). Returns the (N, d) float32
    means and the number of utterances with no real step. Works in chunks of utterances
    so that a large file is never copied whole in float64.
    """
    n, _, d = x.shape
    out = np.zeros((n, d), np.float32)
    count = real.sum(axis=1)
    for a in range(0, n, chunk):
        xs = x[a : a + chunk].astype(np.float64)
        rs = real[a : a + chunk]
        total = np.where(rs[:, :, None], xs, 0.0).sum(axis=1)
        c = count[a : a + chunk, None]
        out[a : a + chunk] = np.divide(total, c, out=np.zeros_like(total), where=c > 0)
    return out, int((count == 0).sum())


def _real_steps(part: dict, key: str, x: np.ndarray, split_key: str, source: str | None) -> np.ndarray:
    n, t = x.shape[:2]
    lk = f"{key}_lengths"
    if lk in part:
        lengths = np.asarray(part[lk]).reshape(-1)
        if lengths.shape != (n,) or lengths.dtype.kind not in "iuf" or (lengths < 0).any() or (lengths > t).any():
            raise DataError(
                f"expected {n} step counts in [0, {t}] (the steps of {key!r}), got {lengths.dtype} {lengths.shape}",
                source=source, field=f"{split_key}.{lk}",
            )
        return np.arange(t)[None, :] < lengths.astype(np.int64)[:, None]
    bert = part.get("text_bert")
    if bert is not None:
        bert = np.asarray(bert)
        if bert.ndim == 3 and bert.shape[0] == n and bert.shape[1] == 3 and bert.shape[2] == t:
            return bert[:, 1, :] != 0
    return (x != 0).any(axis=2)


def _array(part: dict, key: str, split_key: str, source: str | None) -> np.ndarray:
    if key not in part:
        raise DataError(f"missing key {key!r}; the split has {sorted(map(str, part))}", source=source, field=f"{split_key}.{key}")
    try:
        arr = np.asarray(part[key])
    except ValueError:
        raise DataError("ragged array", source=source, field=f"{split_key}.{key}") from None
    if arr.dtype.kind not in "biuf":
        raise DataError(f"expected numeric features, got dtype {arr.dtype}", source=source, field=f"{split_key}.{key}")
    return arr


def _labels(part: dict, label: str | None, n: int, split_key: str, source: str | None):
    if label is None:
        key = next((k for k in ("regression_labels", "labels", "classification_labels") if k in part), None)
        if key is None:
            raise DataError(
                "no labels: expected 'regression_labels' or 'classification_labels' (MMSA) or 'labels' (MulT)",
                source=source, field=f"{split_key}.regression_labels",
            )
    else:
        key = LABEL_KEYS.get(label, label)
        if key not in part:
            raise DataError(f"missing key {key!r}; the split has {sorted(map(str, part))}", source=source, field=f"{split_key}.{key}")
    y = np.asarray(part[key])
    fld = f"{split_key}.{key}"
    if y.dtype.kind not in "biuf":
        raise DataError(f"expected numeric labels, got dtype {y.dtype}", source=source, field=fld)
    if y.shape[:1] != (n,):
        raise DataError(f"expected {n} labels (one per utterance), got shape {y.shape}", source=source, field=fld)
    if y.ndim == 3 and y.shape[2] == 2 and y.shape[1] > 1:  # MulT IEMOCAP: per emotion [no, yes]
        yes = y.argmax(axis=2)
        bad = yes.sum(axis=1) != 1
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DataError(
                f"utterance {i} is positive for {int(yes[i].sum())} emotions; one class per utterance needs exactly one",
                source=source, field=fld,
            )
        return key, yes.argmax(axis=1), y.shape[1]
    flat = y.reshape(n, -1)
    if flat.shape[1] != 1:
        raise DataError(f"expected one label per utterance, got shape {y.shape}", source=source, field=fld)
    return key, flat[:, 0], None


def _ids(part: dict, n: int, split: str, split_key: str, source: str | None) -> list[str]:
    if "id" not in part:
        return [f"{split}_{i}" for i in range(n)]
    raw = np.asarray(part["id"])
    if raw.shape[:1] != (n,) or raw.ndim > 2:
        raise DataError(f"expected {n} ids (one per utterance), got shape {raw.shape}", source=source, field=f"{split_key}.id")

    def text(v) -> str:
        return v.decode("utf-8") if isinstance(v, bytes) else str(v)

    rows = raw.tolist()
    return ["_".join(text(c) for c in r) if raw.ndim == 2 else text(r) for r in rows]


def _group(ids: list[str]) -> tuple[np.ndarray, np.ndarray, list[str]] | None:
    """Row order, lengths and video ids when every id is ``video$_$clip``; else None."""
    parts = [i.split("$_$") for i in ids]
    if not ids or any(len(p) != 2 for p in parts):
        return None
    videos = list(dict.fromkeys(p[0] for p in parts))
    rank = {v: k for k, v in enumerate(videos)}
    numeric = all(p[1].lstrip("-").isdigit() for p in parts)
    key = [(rank[p[0]], int(p[1]) if numeric else 0, i) for i, p in enumerate(parts)]
    order = np.array([k[2] for k in sorted(key)], dtype=np.int64)
    lengths = np.bincount([rank[p[0]] for p in parts], minlength=len(videos)).astype(np.int64)
    return order, lengths, videos


def from_mmsa_dict(
    obj: Any,
    *,
    source: str | None = None,
    label: str | None = None,
    pool: str = "mean",
    name: str | None = None,
    task: str | None = None,
    num_classes: int | None = None,
    label_names: Seq[str] | None = None,
) -> Dataset:
    """Build a validated :class:`Dataset` from an unpickled MMSA / MulT dict (rules in the module docstring).

    ``label``: ``"regression"`` (``regression_labels``), ``"classification"``
    (``classification_labels``) or a key; default the first of ``regression_labels``,
    ``labels``, ``classification_labels``. ``pool`` must be ``"mean"``.
    """
    if pool not in POOLS:
        raise DataError(
            f"pool={pool!r}: balm's data model keeps one vector per utterance, so the word-level sequences of this "
            "file cannot be kept as sequences; use pool='mean' (mean over each utterance's non-padding steps)",
            source=source, field="pool",
        )
    if not isinstance(obj, dict):
        raise DataError(f"expected a dict with keys 'train', 'valid', 'test', got {type(obj).__name__}", source=source)
    for split_key in SPLITS.values():
        if split_key not in obj:
            raise DataError(f"missing split key {split_key!r}; the file has {sorted(map(str, obj))}", source=source, field=split_key)
        if not isinstance(obj[split_key], dict):
            raise DataError(f"expected a dict of arrays, got {type(obj[split_key]).__name__}", source=source, field=split_key)
    dims: dict[str, tuple[int, str]] = {}
    empty = {m: 0 for m in MODALITIES}
    splits, label_keys, widths = {}, set(), set()
    for split, split_key in SPLITS.items():
        part = obj[split_key]
        feats, n = {}, None
        for m, key in MODALITIES.items():
            x = _array(part, key, split_key, source)
            fld = f"{split_key}.{key}"
            if x.ndim == 2:
                x = x[:, None, :]  # already one vector per utterance
            if x.ndim != 3:
                raise DataError(f"expected (utterances, steps, dim) features, got shape {x.shape}", source=source, field=fld)
            if n is None:
                n = x.shape[0]
            elif x.shape[0] != n:
                raise DataError(f"{x.shape[0]} utterances, but {split_key}.text has {n}", source=source, field=fld)
            want = dims.setdefault(m, (x.shape[2], split_key))
            if x.shape[2] != want[0]:
                raise DataError(
                    f"feature dimension {x.shape[2]} differs from {want[0]}, the dimension of {want[1]}.{key}",
                    source=source, field=fld,
                )
            if key == "audio":
                x = np.where(np.isneginf(x), 0, x)
            real = _real_steps(part, key, x, split_key, source)
            pooled, none = pool_steps(x, real)
            if not np.isfinite(pooled).all():
                i = int(np.flatnonzero(~np.isfinite(pooled).all(axis=1))[0])
                raise DataError(f"non-finite feature value in utterance {i} (expected finite numbers)", source=source, field=fld)
            feats[m], empty[m] = pooled, empty[m] + none
        key, y, width = _labels(part, label, n, split_key, source)
        label_keys.add(key)
        if width is not None:
            widths.add(width)
        ids = _ids(part, n, split, split_key, source)
        grouped = _group(ids)
        if grouped is None:
            order, lengths, seq_ids = np.arange(n), np.ones(n, np.int64), ids
        else:
            order, lengths, seq_ids = grouped
        splits[split] = Split(
            name=split, features={m: v[order] for m, v in feats.items()}, labels=y[order],
            speakers=np.zeros(n, np.int64), lengths=lengths, sequence_ids=seq_ids,
        )
    if len(label_keys) > 1:
        raise DataError(f"the splits take their labels from different keys {sorted(label_keys)}", source=source, field="labels")
    if label_keys == {"classification_labels"} and task is None:
        task = "classification"  # MMSA stores these class indices as floats
    if label_names is None and num_classes is None and task != "regression":
        if widths:
            num_classes = widths.pop()
            label_names = MULT_IEMOCAP if num_classes == len(MULT_IEMOCAP) else None
        elif label_keys == {"classification_labels"}:
            label_names = MMSA_CLASSES
    name = name or (os.path.splitext(os.path.basename(source))[0] if source else "dataset")
    ds = build_dataset(
        splits, name=name, fmt="mmsa", source=source, speaker_names=None,
        task=task, num_classes=num_classes, label_names=label_names,
    )
    ds.metadata["label_key"] = label_keys.pop()
    ds.metadata["pool"] = pool
    ds.metadata["empty_features"] = empty
    return ds


def read_mmsa(path: str | os.PathLike, **kwargs) -> Dataset:
    """Read an MMSA / MulT pickle with the restricted unpickler, pooling steps to utterances."""
    path = os.fspath(path)
    return from_mmsa_dict(safe_load(path), source=path, **kwargs)

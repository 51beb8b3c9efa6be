"""Column-wise splits from per-dialogue mappings (the layout of the community's pickles).

The public feature files keep, for each field, a mapping ``dialogue id -> per-utterance
list``. These helpers gather the dialogues of one split into the column-wise
:class:`~balm.data.dataset.Split`, checking each dialogue on the way so that an error
names the field and the dialogue id.
"""

from __future__ import annotations

from typing import Mapping, Sequence as Seq

import numpy as np

from .dataset import Split
from .errors import DataError
from .validation import as_features


def _lookup(table: Mapping, key: str, vid, source: str | None):
    if not isinstance(table, Mapping):
        raise DataError(f"expected a mapping from dialogue id to values, got {type(table).__name__}", source=source, field=key)
    try:
        return table[vid]
    except KeyError:
        raise DataError(f"no entry for dialogue {vid!r}", source=source, field=key) from None


def _dialogue_features(seq, key: str, vid, dim: int | None, source: str | None) -> np.ndarray:
    field = f"{key}[{vid!r}]"
    try:
        arr = np.asarray(seq, dtype=np.float32)
    except (ValueError, TypeError):
        # ragged: find the first utterance whose vector length differs
        sizes = [np.asarray(u).size for u in seq]
        want = dim if dim is not None else sizes[0]
        k = next((i for i, s in enumerate(sizes) if s != want), 0)
        raise DataError(
            f"utterance {k} has a feature vector of dimension {sizes[k]}, expected {want}", source=source, field=field
        ) from None
    if arr.ndim == 1 and arr.size == 0:
        arr = arr.reshape(0, dim or 0)
    return as_features(arr, source=source, field=field, dim=dim)


def _dialogue_speakers(seq, key: str, vid, source: str | None) -> np.ndarray:
    arr = np.asarray(seq)
    if arr.ndim == 2:  # one-hot (or score) rows: the speaker is the arg-max
        if arr.dtype.kind not in "biuf":
            raise DataError(f"expected one-hot speaker rows, got dtype {arr.dtype}", source=source, field=f"{key}[{vid!r}]")
        return arr.argmax(axis=1).astype(np.int64)
    if arr.ndim != 1:
        raise DataError(f"expected one speaker per utterance, got shape {arr.shape}", source=source, field=f"{key}[{vid!r}]")
    if arr.dtype.kind == "S":
        arr = arr.astype(str)
    if arr.dtype.kind not in "Uiub" and arr.size:
        raise DataError(
            f"expected speaker names or integer ids, got dtype {arr.dtype}", source=source, field=f"{key}[{vid!r}]"
        )
    return arr


def split_from_dialogues(
    name: str,
    vids: Seq,
    features: Mapping[str, tuple[str, Mapping]],
    labels: tuple[str, Mapping],
    speakers: tuple[str, Mapping] | None,
    *,
    dims: dict[str, int] | None = None,
    source: str | None = None,
) -> tuple[Split, np.ndarray]:
    """Gather dialogues ``vids`` into a split.

    ``features`` maps modality -> (file key, mapping vid -> per-utterance vectors);
    ``labels`` and ``speakers`` are (file key, mapping vid -> per-utterance values).
    Returns the split (labels kept in their file dtype, speakers zero) and the raw
    speaker column (strings or ints), which :func:`encode_speakers` turns into ids.
    """
    dims = dict(dims or {})
    feats: dict[str, list[np.ndarray]] = {m: [] for m in features}
    ys, spk, lengths, ids = [], [], [], []
    lab_key, lab_table = labels
    for vid in vids:
        y = np.asarray(_lookup(lab_table, lab_key, vid, source))
        if y.ndim > 1:
            y = y.reshape(y.shape[0], -1)
            if y.shape[1] != 1:
                raise DataError(f"expected one label per utterance, got shape {y.shape}", source=source, field=f"{lab_key}[{vid!r}]")
            y = y[:, 0]
        n = y.shape[0] if y.ndim else -1
        if n < 0:
            raise DataError("expected a per-utterance list of labels", source=source, field=f"{lab_key}[{vid!r}]")
        if n == 0:
            raise DataError(f"dialogue {vid!r} is empty; every dialogue needs at least one utterance", source=source, field=f"{lab_key}[{vid!r}]")
        for m, (key, table) in features.items():
            x = _dialogue_features(_lookup(table, key, vid, source), key, vid, dims.get(m), source)
            if x.shape[0] != n:
                raise DataError(
                    f"{x.shape[0]} utterances, but {lab_key}[{vid!r}] has {n} labels", source=source, field=f"{key}[{vid!r}]"
                )
            dims.setdefault(m, x.shape[1])
            feats[m].append(x)
        if speakers is not None:
            s_key, s_table = speakers
            s = _dialogue_speakers(_lookup(s_table, s_key, vid, source), s_key, vid, source)
            if s.shape[0] != n:
                raise DataError(f"{s.shape[0]} speakers, but {lab_key}[{vid!r}] has {n} labels", source=source, field=f"{s_key}[{vid!r}]")
            spk.append(s)
        ys.append(y)
        lengths.append(n)
        ids.append(str(vid))
    if not ids:
        raise DataError(f"split {name!r} lists no dialogues", source=source, field=name)
    cols = {m: np.concatenate(v, axis=0) for m, v in feats.items()}
    y_all = np.concatenate(ys)
    raw_spk = np.concatenate(spk) if speakers is not None else np.zeros(len(y_all), dtype=np.int64)
    split = Split(
        name=name,
        features=cols,
        labels=y_all,
        speakers=np.zeros(len(y_all), dtype=np.int64),
        lengths=np.asarray(lengths, dtype=np.int64),
        sequence_ids=ids,
    )
    return split, raw_spk


def encode_speakers(raw: dict[str, np.ndarray], *, source: str | None = None, field: str = "speaker"):
    """Map raw speaker columns (per split) to int64 ids.

    Names 'M'/'F' (IEMOCAP) become 0/1 in that order, as in the community code; other
    names are numbered in sorted order. Integer ids are kept. Returns (columns, names).
    """
    kinds = {c.dtype.kind for c in raw.values() if c.size}
    if not kinds:
        return {k: c.astype(np.int64) for k, c in raw.items()}, None
    if kinds <= set("iub"):
        return {k: c.astype(np.int64) for k, c in raw.items()}, None
    if kinds != {"U"}:
        raise DataError("speakers mix names and integer ids", source=source, field=field)
    uniq = sorted(set().union(*(np.unique(c).tolist() for c in raw.values() if c.size)))
    names = ["M", "F"] if set(uniq) <= {"M", "F"} else uniq
    table = np.asarray(names)
    order = np.argsort(table)
    out = {}
    for k, c in raw.items():
        pos = np.searchsorted(table[order], c)
        out[k] = order[pos].astype(np.int64)
    return out, list(names)

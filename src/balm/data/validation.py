"""The one place where a dataset is checked; every reader and the native loader end here.

Each problem is reported as a :class:`DataError` naming the file, the field and what
was expected. Checking happens before anything is written, so bad input never leaves
partial output behind.
"""

from __future__ import annotations

import warnings
from dataclasses import replace
from typing import Sequence as Seq

import numpy as np

from balm.masking.rates import check_rates

from .dataset import SPLIT_NAMES, TASKS, Dataset, Split
from .errors import DataError


LARGE_FEATURE = 1e15  # |x| above this warns: x² and sums over a layer overflow float32 (max 3.4e38)


def as_features(x, *, source: str | None, field: str, dim: int | None = None) -> np.ndarray:
    """``x`` as a finite, C-contiguous float32 ``(N, d)`` array, or :class:`DataError`."""
    try:
        arr = np.asarray(x)
    except ValueError:
        raise DataError("feature vectors of different dimensions", source=source, field=field) from None
    if arr.dtype == object or arr.dtype.kind not in "biuf":
        raise DataError(f"expected numeric feature vectors, got dtype {arr.dtype}", source=source, field=field)
    if arr.ndim != 2:
        raise DataError(f"expected a 2-D (utterances, dim) array, got shape {arr.shape}", source=source, field=field)
    if dim is not None and arr.shape[1] != dim:
        raise DataError(
            f"feature dimension {arr.shape[1]} differs from the modality's dimension {dim}", source=source, field=field
        )
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    finite = np.isfinite(arr)
    if not finite.all():
        row, col = np.argwhere(~finite)[0]
        raise DataError(
            f"non-finite feature value {arr[row, col]} at utterance {row}, dimension {col} (expected finite numbers)",
            source=source,
            field=field,
        )
    big = float(np.abs(arr).max()) if arr.size else 0.0
    if big > LARGE_FEATURE:
        warnings.warn(f"{source or 'dataset'}: field {field!r}: feature magnitude up to {big:.3g}; squares and sums "
                      "of such values overflow float32 (max 3.4e38) and training will likely diverge; rescale or "
                      "standardise the features", UserWarning, stacklevel=2)
    return arr


def check_mask(mask, n: int, modalities: Seq[str], *, source: str | None = None, field: str = "mask") -> np.ndarray:
    """An availability mask: ``(n, M)`` booleans (True = present), no all-missing row."""
    arr = np.asarray(mask)
    if arr.shape != (n, len(modalities)):
        raise DataError(
            f"expected shape ({n}, {len(modalities)}) (utterances, modalities {list(modalities)}), got {arr.shape}",
            source=source,
            field=field,
        )
    if arr.dtype != np.bool_:
        if arr.dtype.kind not in "biu" or not np.isin(arr, (0, 1)).all():
            raise DataError(f"expected booleans (True = present), got dtype {arr.dtype}", source=source, field=field)
        arr = arr.astype(bool)
    empty = ~arr.any(axis=1)
    if empty.any():
        rows = np.flatnonzero(empty)
        raise DataError(
            f"{len(rows)} utterance(s) have every modality missing (first: row {rows[0]}); "
            "each utterance needs at least one present modality",
            source=source,
            field=field,
        )
    return np.ascontiguousarray(arr)


def _check_labels(labels, n: int, task: str, num_classes: int | None, *, source, field) -> np.ndarray:
    arr = np.asarray(labels)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise DataError(f"expected {n} labels (one per utterance), got shape {arr.shape}", source=source, field=field)
    if task == "classification":
        if arr.dtype.kind in "iub":
            out = arr.astype(np.int64)
        elif arr.dtype.kind == "f" and np.isfinite(arr).all() and (arr == np.round(arr)).all():
            out = arr.astype(np.int64)
        else:
            raise DataError(
                f"expected integer class indices for classification, got dtype {arr.dtype}", source=source, field=field
            )
        bad = (out < 0) | (out >= num_classes)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DataError(
                f"label {out[i]} at utterance {i} is out of range; expected class indices in [0, {num_classes})",
                source=source,
                field=field,
            )
        return np.ascontiguousarray(out)
    if arr.dtype.kind not in "iuf":
        raise DataError(f"expected real-valued scores for regression, got dtype {arr.dtype}", source=source, field=field)
    out = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(out).all():
        i = int(np.flatnonzero(~np.isfinite(out))[0])
        raise DataError(f"non-finite label at utterance {i} (expected finite scores)", source=source, field=field)
    return out


def validate_split(
    split: Split,
    *,
    task: str,
    num_classes: int | None,
    num_speakers: int | None = None,
    dims: dict[str, int] | None = None,
    source: str | None = None,
) -> Split:
    """Check one split and return it with canonical dtypes (features float32, labels int64/float32)."""
    name = split.name
    if not split.features:
        raise DataError("a split needs at least one modality", source=source, field=f"{name}.features")
    feats = {}
    n = None
    for m, x in split.features.items():
        fld = f"{name}.features[{m}]"
        want = None if dims is None else dims.get(m)
        if dims is not None and m not in dims:
            raise DataError(f"modality {m!r} is not among the dataset's modalities {list(dims)}", source=source, field=fld)
        arr = as_features(x, source=source, field=fld, dim=want)
        if n is None:
            n = arr.shape[0]
        elif arr.shape[0] != n:
            raise DataError(
                f"{arr.shape[0]} utterances, but the other modalities have {n}", source=source, field=fld
            )
        feats[m] = arr
    if dims is not None and list(dims) != list(feats):
        raise DataError(
            f"modalities {list(feats)} differ from the dataset's {list(dims)}", source=source, field=f"{name}.features"
        )
    labels = _check_labels(split.labels, n, task, num_classes, source=source, field=f"{name}.labels")
    spk = np.asarray(split.speakers)
    if spk.shape != (n,) or spk.dtype.kind not in "iub":
        raise DataError(
            f"expected {n} integer speaker ids, got shape {spk.shape} dtype {spk.dtype}", source=source, field=f"{name}.speakers"
        )
    spk = np.ascontiguousarray(spk, dtype=np.int64)
    if n and (spk.min() < 0 or (num_speakers is not None and spk.max() >= num_speakers)):
        hi = "" if num_speakers is None else f", < {num_speakers} (the number of speaker names)"
        raise DataError(f"speaker ids must be >= 0{hi}", source=source, field=f"{name}.speakers")
    lengths = np.asarray(split.lengths)
    if lengths.ndim != 1 or lengths.dtype.kind not in "iu":
        raise DataError(f"expected a 1-D integer array, got {lengths.dtype} {lengths.shape}", source=source, field=f"{name}.lengths")
    lengths = lengths.astype(np.int64)
    if (lengths < 1).any():
        s = int(np.flatnonzero(lengths < 1)[0])
        sid = split.sequence_ids[s] if s < len(split.sequence_ids) else s
        raise DataError(f"sequence {sid!r} is empty; every dialogue needs at least one utterance", source=source, field=f"{name}.lengths")
    if int(lengths.sum()) != n:
        raise DataError(
            f"sequence lengths sum to {int(lengths.sum())} but the split has {n} utterances", source=source, field=f"{name}.lengths"
        )
    ids = [str(s) for s in split.sequence_ids]
    if len(ids) != len(lengths):
        raise DataError(f"{len(ids)} sequence ids for {len(lengths)} sequences", source=source, field=f"{name}.sequence_ids")
    if len(set(ids)) != len(ids):
        seen, dup = set(), None
        for s in ids:
            if s in seen:
                dup = s
                break
            seen.add(s)
        raise DataError(f"sequence id {dup!r} appears more than once", source=source, field=f"{name}.sequence_ids")
    mask = None
    if split.mask is not None:
        mask = check_mask(split.mask, n, tuple(feats), source=source, field=f"{name}.mask")
    return Split(name=name, features=feats, labels=labels, speakers=spk, lengths=lengths, sequence_ids=ids, mask=mask)


def validate_dataset(ds: Dataset, *, source: str | None = None) -> Dataset:
    """Check a whole dataset (task, label space, every split, disjoint ids, masks) and return it canonicalised."""
    if ds.task not in TASKS:
        raise DataError(f"task must be one of {TASKS}, got {ds.task!r}", source=source, field="task")
    if not ds.splits:
        raise DataError("the dataset has no splits", source=source, field="splits")
    for key, sp in ds.splits.items():
        if key not in SPLIT_NAMES:
            raise DataError(f"split names must be among {SPLIT_NAMES}, got {key!r}", source=source, field="splits")
        if sp.name != key:
            raise DataError(f"split stored under {key!r} is named {sp.name!r}", source=source, field="splits")
    num_classes, label_names = ds.num_classes, ds.label_names
    if ds.task == "classification":
        if not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
            raise DataError(f"classification needs a positive integer num_classes, got {num_classes!r}", source=source, field="num_classes")
        num_classes = int(num_classes)
        if label_names is not None and len(label_names) != num_classes:
            raise DataError(
                f"{len(label_names)} label names for {num_classes} classes", source=source, field="label_names"
            )
    else:
        if label_names is not None:
            raise DataError("regression data has no label names", source=source, field="label_names")
        num_classes = None
    num_speakers = None if ds.speaker_names is None else len(ds.speaker_names)
    dims = None
    splits = {}
    for key, sp in ds.splits.items():
        checked = validate_split(sp, task=ds.task, num_classes=num_classes, num_speakers=num_speakers, dims=dims, source=source)
        if dims is None:
            dims = checked.dims()
        splits[key] = checked
    if num_speakers is None:  # raw ids (e.g. 1000, 1003, ...): renumber them 0..S-1 over all splits
        ids = np.unique(np.concatenate([sp.speakers for sp in splits.values()]))
        if ids.size and (ids[0] != 0 or ids[-1] != ids.size - 1):
            splits = {k: replace(sp, speakers=np.searchsorted(ids, sp.speakers).astype(sp.speakers.dtype))
                      for k, sp in splits.items()}
    owner: dict[str, str] = {}
    for key, sp in splits.items():
        for sid in sp.sequence_ids:
            prev = owner.setdefault(sid, key)
            if prev != key:
                raise DataError(
                    f"sequence id {sid!r} is in both {prev!r} and {key!r}; splits must be disjoint",
                    source=source,
                    field=f"{key}.sequence_ids",
                )
    masked = [sp.mask is not None for sp in splits.values()]
    if any(masked) and not all(masked):
        raise DataError("either every split has a mask or none has", source=source, field="mask")
    info = ds.mask_info
    if info is not None:
        if not isinstance(info, dict):
            raise DataError(f"expected a mapping, got {type(info).__name__}", source=source, field="mask_info")
        if info.get("rates") is not None:
            check_rates(info["rates"], tuple(dims), key="mask_info.rates", source=source, error=DataError)
    return replace(
        ds,
        splits=splits,
        num_classes=num_classes,
        label_names=None if label_names is None else [str(s) for s in label_names],
        speaker_names=None if ds.speaker_names is None else [str(s) for s in ds.speaker_names],
        metadata=dict(ds.metadata or {}),
    )

"""Reader for the MMIN / RedCore / MCE layout: ``{A,V,L}/<name>.h5`` plus ``target/<cvNo>/``.

Layout under one root folder::

    A/<name>.h5, V/<name>.h5, L/<name>.h5   one HDF5 file per modality: a top-level dataset per
                                            utterance id, (T, d) frames/words or a (d,) vector
    target/<cvNo>/{trn,val,tst}_label.npy   labels: (N, C) one-hot (IEMOCAP), (N,) class indices
                                            (MSP-IMPROV) or (N,) float scores
    target/<cvNo>/{trn,val,tst}_int2name.npy  utterance ids, (N,) or (N, 1), bytes or str

``cvNo`` is the cross-validation fold (1..10 for IEMOCAP, 1..12 for MSP-IMPROV, one
folder per held-out speaker); ``cv=`` picks it and may be omitted when there is only one.
Each utterance is the mean of its rows (frames or words) and its own sequence of length
1: the layout gives no dialogue ids. ``A/<name>_mean_std.h5`` (MMIN's per-fold ComParE
statistics) is not a modality file and is not applied. Needs the optional ``h5py``.
"""

from __future__ import annotations

import os
from typing import Mapping, Sequence as Seq

import numpy as np

from .dataset import Dataset, Split
from .errors import DataError
from .label_space import build_dataset
from .safe_pickle import safe_loads

FOLDERS = {"audio": "A", "text": "L", "visual": "V"}
SETS = {"train": "trn", "dev": "val", "test": "tst"}


def _h5py(source: str | None):
    try:
        import h5py
    except ImportError:
        raise DataError(
            "reading .h5 feature files needs the h5py package: pip install -e '.[formats]' in the balm clone (or pip install h5py)",
            source=source,
        ) from None
    return h5py


def read_npy_any(path: str) -> np.ndarray:
    """A ``.npy`` file; object arrays (pickled payloads) go through the restricted unpickler."""
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, dtype = read_header(f)
            if not dtype.hasobject:
                f.seek(0)
                return np.load(f, allow_pickle=False)
            arr = safe_loads(f.read(), source=path)
    except FileNotFoundError:
        raise DataError("file not found", source=path) from None
    except (ValueError, OSError, EOFError) as exc:
        raise DataError(f"not a readable .npy file ({type(exc).__name__}: {exc})", source=path) from None
    return np.asarray(arr).reshape(shape)


def _names(arr: np.ndarray, path: str) -> list[str]:
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise DataError(f"expected (N,) or (N, 1) utterance ids, got shape {arr.shape}", source=path, field="int2name")
    out = []
    for v in arr.tolist():
        if isinstance(v, (list, tuple)) and len(v) == 1:
            v = v[0]
        if isinstance(v, bytes):
            v = v.decode("utf-8")
        if not isinstance(v, str):
            raise DataError(f"expected utterance ids as strings, got {type(v).__name__}", source=path, field="int2name")
        out.append(v)
    return out


def _labels(arr: np.ndarray, n: int, path: str) -> tuple[np.ndarray, int | None]:
    """Labels as a 1-D array, and the number of classes when they are one-hot rows."""
    if arr.dtype.kind not in "biuf":
        raise DataError(f"expected numeric labels, got dtype {arr.dtype}", source=path, field="label")
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    width = None
    if arr.ndim == 2:
        width = arr.shape[1]
        ok = np.isin(arr, (0, 1)).all() and (arr.sum(axis=1) == 1).all()
        if not ok:
            raise DataError(
                f"2-D labels of shape {arr.shape} must be one-hot rows (a single 1 per row)", source=path, field="label"
            )
        arr = arr.argmax(axis=1)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise DataError(
            f"expected {n} labels (one per utterance id in int2name), got shape {arr.shape}", source=path, field="label"
        )
    return arr, width


def _pick_cv(target: str, cv) -> str:
    if not os.path.isdir(target):
        raise DataError("no target/ folder (expected target/<cvNo>/{trn,val,tst}_{label,int2name}.npy)", source=target)
    folds = sorted(d for d in os.listdir(target) if os.path.isdir(os.path.join(target, d)))
    if cv is None:
        if len(folds) != 1:
            raise DataError(f"there are {len(folds)} cross-validation folds {folds}; pass cv= (command line --cv)", source=target, field="cv")
        return os.path.join(target, folds[0])
    path = os.path.join(target, str(cv))
    if not os.path.isdir(path):
        raise DataError(f"no fold {cv!r}; the folds are {folds}", source=target, field="cv")
    return path


def _feature_files(root: str, features: Mapping | None) -> dict[str, str]:
    if features:
        out = {}
        for m, p in features.items():
            p = os.fspath(p)
            out[str(m)] = p if os.path.isabs(p) or not os.path.exists(os.path.join(root, p)) else os.path.join(root, p)
        return out
    out = {}
    for m, sub in FOLDERS.items():
        folder = os.path.join(root, sub)
        if not os.path.isdir(folder):
            continue
        files = sorted(f for f in os.listdir(folder) if f.endswith(".h5") and not f.endswith("_mean_std.h5"))
        if len(files) != 1:
            raise DataError(
                f"{len(files)} feature files {files}; name one per modality with features={{modality: file}} "
                "(command line --feature audio=A/comparE.h5 ...)", source=folder, field=m,
            )
        out[m] = os.path.join(folder, files[0])
    if not out:
        raise DataError("no A/, V/ or L/ folder of .h5 feature files", source=root, field="features")
    return out


def _pooled(h5file, uids: list[str], path: str, modality: str, dim: int | None, h5py) -> np.ndarray:
    rows = np.empty((len(uids), dim or 0), np.float32) if dim else None
    for i, uid in enumerate(uids):
        if uid not in h5file:
            raise DataError(f"no {modality} features for utterance {uid!r}", source=path, field=uid)
        node = h5file[uid]
        if not isinstance(node, h5py.Dataset):
            raise DataError(
                f"is an HDF5 group, expected a dataset of (frames, dim) {modality} features "
                "(the word-aligned files keep groups; use the unaligned ones)", source=path, field=uid,
            )
        x = np.asarray(node[()])
        if x.dtype.kind not in "biuf":
            raise DataError(f"expected numeric features, got dtype {x.dtype}", source=path, field=uid)
        x = x.reshape(1, -1) if x.ndim == 1 else x
        if x.ndim != 2 or x.shape[0] == 0:
            raise DataError(f"expected a (dim,) vector or (frames, dim) array with frames >= 1, got shape {node.shape}", source=path, field=uid)
        if rows is None:
            dim = x.shape[1]
            rows = np.empty((len(uids), dim), np.float32)
        elif x.shape[1] != dim:
            raise DataError(f"feature dimension {x.shape[1]} differs from the modality's dimension {dim}", source=path, field=uid)
        if not np.isfinite(x).all():
            raise DataError("non-finite feature value (expected finite numbers)", source=path, field=uid)
        rows[i] = x.astype(np.float64).mean(axis=0)
    return rows


def read_mmin(
    root: str | os.PathLike,
    features: Mapping[str, str | os.PathLike] | None = None,
    *,
    cv: int | str | None = None,
    name: str | None = None,
    task: str | None = None,
    num_classes: int | None = None,
    label_names: Seq[str] | None = None,
) -> Dataset:
    """Read an MMIN-style folder (layout in the module docstring) into a validated :class:`Dataset`.

    ``features`` maps modality -> ``.h5`` file (relative to ``root`` or absolute); without
    it, the single ``.h5`` of each of ``A/``, ``L/``, ``V/`` is audio, text and visual.
    """
    root = os.fspath(root)
    if not os.path.isdir(root):
        raise DataError("expected the folder holding A/, V/, L/ and target/", source=root)
    files = _feature_files(root, features)
    fold = _pick_cv(os.path.join(root, "target"), cv)
    h5py = _h5py(next(iter(files.values())))
    handles = {}
    try:
        for m, p in files.items():
            if not os.path.isfile(p):
                raise DataError("feature file not found", source=p, field=m)
            try:
                handles[m] = h5py.File(p, "r")
            except OSError as exc:
                raise DataError(f"not a readable HDF5 file ({exc})", source=p, field=m) from None
        splits, dims, widths = {}, {}, set()
        for split, short in SETS.items():
            lab_path = os.path.join(fold, f"{short}_label.npy")
            names_path = os.path.join(fold, f"{short}_int2name.npy")
            if not os.path.exists(lab_path) and not os.path.exists(names_path) and split == "dev":
                continue
            uids = _names(read_npy_any(names_path), names_path)
            y, width = _labels(read_npy_any(lab_path), len(uids), lab_path)
            if width is not None:
                widths.add(width)
            if not uids:
                raise DataError("the split lists no utterances", source=names_path, field="int2name")
            feats = {}
            for m, h in handles.items():
                feats[m] = _pooled(h, uids, files[m], m, dims.get(m), h5py)
                dims[m] = feats[m].shape[1]
            splits[split] = Split(
                name=split, features=feats, labels=y, speakers=np.zeros(len(uids), np.int64),
                lengths=np.ones(len(uids), np.int64), sequence_ids=uids,
            )
    finally:
        for h in handles.values():
            h.close()
    name = name or os.path.basename(os.path.normpath(root))
    if len(widths) > 1:
        raise DataError(f"one-hot labels of different widths {sorted(widths)} across splits", source=fold, field="label")
    if widths and num_classes is None and label_names is None and task != "regression":
        num_classes = widths.pop()  # one-hot rows state the number of classes
    ds = build_dataset(
        splits, name=name, fmt="mmin", source=root, speaker_names=None,
        task=task, num_classes=num_classes, label_names=label_names,
    )
    ds.metadata["feature_files"] = {m: os.path.relpath(p, root) if p.startswith(root) else os.path.basename(p) for m, p in files.items()}
    ds.metadata["cv"] = os.path.basename(fold)
    return ds

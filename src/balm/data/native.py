"""balm's own on-disk format: a directory with ``meta.json`` and one ``<split>.npz`` per split.

Layout::

    DIR/meta.json       format, version, name, task, num_classes, label_names, speaker_names,
                        modalities (name + dim, in order), splits (utterances, sequences),
                        mask_info, metadata
    DIR/<split>.npz     features_<j> (N, d_j) float32 for modality j of meta["modalities"],
                        labels (N,), speakers (N,) int64, lengths (S,) int64,
                        sequence_ids (S,) unicode, mask (N, M) bool (only when masks are stored)
    DIR/masks/<key>.npz cached masks (see :mod:`balm.data.masks`)

Arrays are written uncompressed with ``np.savez`` and read with ``allow_pickle=False``.
A dataset is written into a temporary directory next to ``DIR`` and moved into place,
so a failure leaves any earlier dataset at ``DIR`` untouched.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile

from balm.io import clean_stale, staging_dir, swap_in
import numpy as np

from .dataset import SPLIT_NAMES, Dataset, Split
from .errors import DataError
from .npz_reader import read_arrays
from .validation import validate_dataset

FORMAT = "balm-dataset"
VERSION = 1
META = "meta.json"


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def is_native(path: str | os.PathLike) -> bool:
    return os.path.isfile(os.path.join(os.fspath(path), META))


def _split_arrays(sp: Split) -> dict[str, np.ndarray]:
    out = {f"features_{j}": x for j, x in enumerate(sp.features.values())}
    out["labels"] = sp.labels
    out["speakers"] = sp.speakers
    out["lengths"] = sp.lengths
    out["sequence_ids"] = np.asarray(sp.sequence_ids, dtype=str)
    if sp.mask is not None:
        out["mask"] = sp.mask
    return out


def _meta(ds: Dataset) -> dict:
    return _jsonable(
        {
            "format": FORMAT,
            "version": VERSION,
            "name": ds.name,
            "task": ds.task,
            "num_classes": ds.num_classes,
            "label_names": ds.label_names,
            "speaker_names": ds.speaker_names,
            "modalities": [{"name": m, "dim": d} for m, d in ds.dims().items()],
            "splits": {k: {"utterances": sp.num_utterances, "sequences": sp.num_sequences} for k, sp in ds.splits.items()},
            "mask_info": ds.mask_info,
            "metadata": ds.metadata,
        }
    )


def replace_dir(tmp: str, target: str) -> None:
    """Move the finished directory ``tmp`` to ``target``, replacing an earlier one there."""
    old = None
    if os.path.exists(target):
        old = tempfile.mkdtemp(prefix=f".{os.path.basename(target)}.old-", dir=os.path.dirname(target))
        os.rmdir(old)
        os.rename(target, old)
    try:
        os.rename(tmp, target)
    except BaseException:
        if old is not None:
            os.rename(old, target)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def save_dataset(ds: Dataset, path: str | os.PathLike, *, keep_masks_cache: bool = False) -> str:
    """Write ``ds`` (validated first) to directory ``path`` atomically; returns the path.

    An existing directory at ``path`` is replaced only if it is a balm dataset (or empty).
    ``keep_masks_cache`` carries over ``path/masks`` when the same path is rewritten.
    """
    path = os.path.abspath(os.fspath(path))
    ds = validate_dataset(ds, source=path)
    if os.path.exists(path):
        if not os.path.isdir(path):
            raise DataError("exists and is not a directory; refusing to overwrite", source=path)
        if os.listdir(path) and not is_native(path):
            raise DataError("exists and is not a balm dataset directory (no meta.json); refusing to overwrite", source=path)
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    clean_stale(path)  # what a killed earlier write of this path left beside it
    tmp = os.fspath(staging_dir(path))
    os.makedirs(tmp)
    try:
        for key, sp in ds.splits.items():
            with open(os.path.join(tmp, f"{key}.npz"), "wb") as f:
                np.savez(f, **_split_arrays(sp))
        with open(os.path.join(tmp, META), "w", encoding="utf-8") as f:
            json.dump(_meta(ds), f, indent=2)
        cache = os.path.join(path, "masks")
        if keep_masks_cache and os.path.isdir(cache):
            shutil.copytree(cache, os.path.join(tmp, "masks"))
        swap_in(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def _need(meta: dict, key: str, types, source: str):
    if key not in meta:
        raise DataError("missing key in meta.json", source=source, field=key)
    val = meta[key]
    if not isinstance(val, types):
        raise DataError(f"expected {types}, got {type(val).__name__}", source=source, field=key)
    return val


def read_meta(path: str | os.PathLike) -> dict:
    """The parsed ``meta.json`` of a native dataset directory, checked for format and version."""
    mpath = os.path.join(os.fspath(path), META)
    try:
        with open(mpath, encoding="utf-8") as f:
            meta = json.load(f)
    except FileNotFoundError:
        raise DataError("not a balm dataset directory: meta.json is missing", source=os.fspath(path)) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"corrupted meta.json ({exc})", source=mpath) from None
    if not isinstance(meta, dict):
        raise DataError("expected a JSON object", source=mpath)
    if meta.get("format") != FORMAT:
        raise DataError(f"expected format {FORMAT!r}, got {meta.get('format')!r}", source=mpath, field="format")
    if meta.get("version") != VERSION:
        raise DataError(f"unsupported version {meta.get('version')!r}; this library reads version {VERSION}", source=mpath, field="version")
    return meta


def load_dataset(path: str | os.PathLike) -> Dataset:
    """Read and validate a native dataset directory; clear errors for missing or damaged files."""
    path = os.fspath(path)
    meta = read_meta(path)
    mpath = os.path.join(path, META)
    mods = _need(meta, "modalities", list, mpath)
    try:
        names = [str(m["name"]) for m in mods]
        dims = {str(m["name"]): int(m["dim"]) for m in mods}
    except (KeyError, TypeError, ValueError):
        raise DataError("expected a list of {name, dim} objects", source=mpath, field="modalities") from None
    split_names = _need(meta, "splits", dict, mpath)
    splits = {}
    for key in split_names:
        if key not in SPLIT_NAMES:
            raise DataError(f"split names must be among {SPLIT_NAMES}, got {key!r}", source=mpath, field="splits")
        fpath = os.path.join(path, f"{key}.npz")
        if not os.path.exists(fpath):
            raise DataError(f"split file for {key!r} listed in meta.json is missing", source=fpath)
        try:
            arrays = read_arrays(fpath)
        except DataError as exc:
            raise DataError(f"corrupted split file: {exc.detail}", source=fpath) from None
        need = [f"features_{j}" for j in range(len(names))] + ["labels", "speakers", "lengths", "sequence_ids"]
        for k in need:
            if k not in arrays:
                raise DataError(f"missing array; the file has {sorted(arrays)}", source=fpath, field=k)
        feats = {}
        for j, m in enumerate(names):
            x = arrays[f"features_{j}"]
            if x.ndim != 2 or x.shape[1] != dims[m]:
                raise DataError(
                    f"modality {m!r} should have dimension {dims[m]} (meta.json), got shape {x.shape}",
                    source=fpath,
                    field=f"features_{j}",
                )
            feats[m] = x
        ids = arrays["sequence_ids"]
        if ids.dtype.kind != "U" or ids.ndim != 1:
            raise DataError(f"expected a 1-D unicode array, got {ids.dtype} {ids.shape}", source=fpath, field="sequence_ids")
        splits[key] = Split(
            name=key,
            features=feats,
            labels=arrays["labels"],
            speakers=arrays["speakers"],
            lengths=arrays["lengths"],
            sequence_ids=ids.tolist(),
            mask=arrays.get("mask"),
        )
    if not splits:
        raise DataError("lists no splits", source=mpath, field="splits")
    ds = Dataset(
        name=str(_need(meta, "name", str, mpath)),
        task=_need(meta, "task", str, mpath),
        splits=splits,
        num_classes=meta.get("num_classes"),
        label_names=meta.get("label_names"),
        speaker_names=meta.get("speaker_names"),
        mask_info=meta.get("mask_info"),
        metadata=meta.get("metadata") or {},
    )
    ds = validate_dataset(ds, source=path)
    if ds.mask_info is not None and ds.mask_info.get("rates") is not None and splits[next(iter(splits))].mask is None:
        raise DataError("meta.json records masks but the split files hold none", source=mpath, field="mask_info")
    return ds

"""Reader for the GCNet / SDR-GNN / MoMKE layout: a label pickle plus per-utterance feature folders.

The label pickle (``*_features_raw_*way.pkl``) is a 7-element list or tuple (CMU-MOSI,
CMU-MOSEI) or a 6-element one (IEMOCAP, no dev split)::

    videoIDs        {video id: utterance ids}
    videoLabels     {video id: per-utterance labels}   (float scores / class indices)
    videoSpeakers   {video id: per-utterance speakers} ('' for MOSI/MOSEI, 'F'/'M' for IEMOCAP)
    videoSentences  {video id: transcripts}            (ignored)
    trainVid, [valVid,] testVid                        (sets of video ids)

Each modality has its own folder (named by the user) holding, per utterance id ``u``,
either ``u.npy`` ((d,), (1, d) or (T, d) frames) or a folder ``u/`` of per-face ``.npy``
files. An utterance's vector is the mean over all rows of its file(s) (frames and faces).
When the utterance's speaker is 'F' or 'M', only the faces whose file name holds that
letter are used ('F' tested first, as in the public loaders, e.g. ``compress_F.npy``);
an utterance with no face of its speaker gets a zero vector, as in the public code
(counted in ``metadata["empty_features"]``). Videos are the sequences.
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Sequence as Seq

import numpy as np

from .balm_pickle import _ids
from .dataset import Dataset, Split
from .dialogues import encode_speakers
from .errors import DataError
from .label_space import build_dataset
from .safe_pickle import safe_load

FIELDS_7 = ("videoIDs", "videoLabels", "videoSpeakers", "videoSentences", "trainVid", "valVid", "testVid")
FIELDS_6 = ("videoIDs", "videoLabels", "videoSpeakers", "videoSentences", "trainVid", "testVid")
SPLIT_FIELDS = {"train": "trainVid", "dev": "valVid", "test": "testVid"}
# IEMOCAP four-way label order of these files (happy merged with excited)
IEMOCAP4_LABELS = ("hap", "sad", "neu", "ang")


def load_npy(path: str, *, field: str) -> np.ndarray:
    """One ``.npy`` (no pickles) as float rows ``(n, d)``: (d,), (1, d), (T, d) and squeezable shapes."""
    try:
        arr = np.load(path, allow_pickle=False)
    except ValueError as exc:
        raise DataError(f"not a numeric .npy array ({exc})", source=path, field=field) from None
    except (OSError, EOFError) as exc:
        raise DataError(f"not a readable .npy file ({type(exc).__name__}: {exc})", source=path, field=field) from None
    if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "biuf":
        raise DataError(f"expected numeric features, got dtype {getattr(arr, 'dtype', type(arr).__name__)}", source=path, field=field)
    sq = np.squeeze(arr)  # as the public loaders do: (1, d) -> (d,), (1, T, d) -> (T, d)
    if sq.ndim < 2:
        sq = sq.reshape(1, -1)
    if sq.ndim != 2 or sq.shape[1] == 0:
        raise DataError(f"expected a (dim,) vector or (frames, dim) array, got shape {arr.shape}", source=path, field=field)
    if not np.isfinite(sq).all():
        raise DataError("non-finite feature value (expected finite numbers)", source=path, field=field)
    return sq


def _utterance_rows(root: str, uid: str, speaker: str, modality: str) -> list[tuple[str, np.ndarray]]:
    """The (file, rows) arrays that make utterance ``uid`` (empty: no face of its speaker)."""
    npy = os.path.join(root, uid + ".npy")
    if os.path.isfile(npy):
        return [(npy, load_npy(npy, field=modality))]
    folder = os.path.join(root, uid)
    if not os.path.isdir(folder):
        raise DataError(
            f"no feature for utterance {uid!r}: expected the file {uid}.npy or a folder {uid}/ of face files",
            source=npy, field=modality,
        )
    out = []
    for face in sorted(os.listdir(folder)):
        if not face.endswith(".npy"):
            continue
        path = os.path.join(folder, face)
        if speaker in ("F", "M"):
            owner = "F" if "F" in face else "M" if "M" in face else None
            if owner is None:
                raise DataError(
                    f"face file name names no speaker ('F' or 'M'), which utterance {uid!r} of speaker {speaker!r} needs",
                    source=path, field=modality,
                )
            if owner != speaker:
                continue
        out.append((path, load_npy(path, field=modality)))
    return out


def _table(obj: Any, key: str, source: str | None) -> Mapping:
    if not isinstance(obj, Mapping):
        raise DataError(f"expected a mapping from video id to per-utterance values, got {type(obj).__name__}", source=source, field=key)
    return obj


def _per_video(table: Mapping, key: str, vid, n: int | None, source: str | None) -> list:
    try:
        vals = table[vid]
    except KeyError:
        raise DataError(f"no entry for video {vid!r}", source=source, field=key) from None
    if isinstance(vals, (str, bytes)) or not hasattr(vals, "__len__"):
        raise DataError(f"expected a per-utterance list, got {type(vals).__name__}", source=source, field=f"{key}[{vid!r}]")
    vals = list(vals)
    if n is not None and len(vals) != n:
        raise DataError(f"{len(vals)} entries, but videoIDs[{vid!r}] lists {n} utterances", source=source, field=f"{key}[{vid!r}]")
    return vals


def parse_label_pickle(obj: Any, *, source: str | None = None) -> dict:
    """The label pickle's fields by name (``valVid`` is None for the 6-element IEMOCAP variant)."""
    if not isinstance(obj, (tuple, list)) or len(obj) not in (6, 7):
        got = f"a {type(obj).__name__} of length {len(obj)}" if isinstance(obj, (tuple, list)) else type(obj).__name__
        raise DataError(f"expected a list/tuple of 7 elements {FIELDS_7} (or 6, without valVid), got {got}", source=source)
    f = dict(zip(FIELDS_7 if len(obj) == 7 else FIELDS_6, obj))
    f.setdefault("valVid", None)
    for key in ("videoIDs", "videoLabels", "videoSpeakers"):
        _table(f[key], key, source)
    return f


def from_gcnet(
    obj: Any,
    features: Mapping[str, str | os.PathLike],
    *,
    source: str | None = None,
    name: str | None = None,
    task: str | None = None,
    num_classes: int | None = None,
    label_names: Seq[str] | None = None,
) -> Dataset:
    """Build a validated :class:`Dataset` from an unpickled label tuple and ``{modality: feature folder}``."""
    if not isinstance(features, Mapping) or not features:
        raise DataError(
            "this layout keeps features in one folder per modality; pass features={modality: folder} "
            "(command line: --feature audio=DIR --feature text=DIR ...)", source=source, field="features",
        )
    roots = {str(m): os.fspath(d) for m, d in features.items()}
    for m, d in roots.items():
        if not os.path.isdir(d):
            raise DataError("feature folder not found", source=d, field=m)
    f = parse_label_pickle(obj, source=source)
    ids_t, lab_t, spk_t = f["videoIDs"], f["videoLabels"], f["videoSpeakers"]
    dims: dict[str, tuple[int, str]] = {}
    empty = {m: 0 for m in roots}
    splits, raw_spk = {}, {}
    for split, key in SPLIT_FIELDS.items():
        if f.get(key) is None:
            continue
        vids = _ids(f[key], key, source)
        if not vids:
            raise DataError(f"split {split!r} lists no videos", source=source, field=key)
        cols: dict[str, list[np.ndarray]] = {m: [] for m in roots}
        ys, spk, lengths, seq_ids = [], [], [], []
        for vid in vids:
            uids = [str(u) for u in _per_video(ids_t, "videoIDs", vid, None, source)]
            if not uids:
                raise DataError(f"video {vid!r} lists no utterances", source=source, field=f"videoIDs[{vid!r}]")
            labels = _per_video(lab_t, "videoLabels", vid, len(uids), source)
            speakers = [str(s) for s in _per_video(spk_t, "videoSpeakers", vid, len(uids), source)]
            for m, root in roots.items():
                for uid, s in zip(uids, speakers):
                    parts = _utterance_rows(root, uid, s, m)
                    for path, rows in parts:
                        want = dims.setdefault(m, (rows.shape[1], path))
                        if rows.shape[1] != want[0]:
                            raise DataError(
                                f"feature dimension {rows.shape[1]} differs from the modality's dimension {want[0]} "
                                f"(of {want[1]})", source=path, field=m,
                            )
                    if parts:
                        stacked = np.concatenate([r for _, r in parts], axis=0).astype(np.float64)
                        cols[m].append(stacked.mean(axis=0).astype(np.float32))
                    else:
                        empty[m] += 1
                        cols[m].append(None)  # zeros once the modality's width is known
            ys.extend(labels)
            spk.extend(speakers)
            lengths.append(len(uids))
            seq_ids.append(str(vid))
        feats = {}
        for m in roots:
            if m not in dims:
                raise DataError("no utterance has a feature file, so the dimension is unknown", source=roots[m], field=m)
            d = dims[m][0]
            feats[m] = np.stack([np.zeros(d, np.float32) if v is None else v for v in cols[m]])
        y = np.asarray(ys)
        if y.dtype == object or y.ndim != 1:
            raise DataError(f"expected one number per utterance, got {y.dtype} {y.shape}", source=source, field="videoLabels")
        splits[split] = Split(
            name=split, features=feats, labels=y, speakers=np.zeros(len(y), np.int64),
            lengths=np.asarray(lengths, np.int64), sequence_ids=seq_ids,
        )
        raw_spk[split] = np.asarray(spk, dtype=str)
    if all((c == "").all() for c in raw_spk.values()):
        spk_cols, spk_names = {k: np.zeros(len(c), np.int64) for k, c in raw_spk.items()}, None
    else:
        spk_cols, spk_names = encode_speakers(raw_spk, source=source, field="videoSpeakers")
    for k, sp in splits.items():
        sp.speakers = spk_cols[k]
    name = name or (os.path.splitext(os.path.basename(source))[0] if source else "dataset")
    if label_names is None and num_classes is None and "iemocap" in name.lower() and "4way" in name.lower():
        label_names = IEMOCAP4_LABELS
    ds = build_dataset(
        splits, name=name, fmt="gcnet", source=source, speaker_names=spk_names,
        task=task, num_classes=num_classes, label_names=label_names,
    )
    ds.metadata["feature_folders"] = {m: os.path.basename(os.path.normpath(d)) for m, d in roots.items()}
    ds.metadata["empty_features"] = empty
    return ds


def read_gcnet(path: str | os.PathLike, features: Mapping[str, str | os.PathLike] | None = None, **kwargs) -> Dataset:
    """Read a GCNet / SDR-GNN / MoMKE label pickle with its per-modality feature folders."""
    path = os.fspath(path)
    return from_gcnet(safe_load(path), features or {}, source=path, **kwargs)

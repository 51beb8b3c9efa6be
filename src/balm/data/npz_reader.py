"""Reader for a generic ``.npz`` file of utterance-level arrays.

Layout (all arrays share the first axis N, the utterances, in file order)::

    <modality>  (N, d_m) numbers   one 2-D array per modality, named after it, in file order
    labels      (N,)               integers -> classification, floats -> regression (``task=`` overrides)
    split       (N,) strings       optional: "train", "dev" or "test" (default: everything is train)
    dialogue    (N,)               optional sequence ids; without them each utterance is its own
                                   sequence of length 1
    speaker     (N,)               optional speaker ids (integers or names)

Utterances of one dialogue keep their file order; dialogues are ordered by first
appearance. The file is opened with ``allow_pickle=False``.
"""

from __future__ import annotations

import os
import zipfile
from typing import Sequence as Seq

import numpy as np

from .dataset import SPLIT_NAMES, Dataset, Split
from .dialogues import encode_speakers
from .errors import DataError
from .label_space import build_dataset

RESERVED = ("labels", "split", "dialogue", "speaker")


def check_npz_sizes(path: str) -> None:
    """Refuse an ``.npz`` whose member headers declare more bytes than the member holds (checked
    from the headers and the zip directory, before any array is allocated)."""
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            if not info.filename.endswith(".npy"):
                continue
            with zf.open(info) as fh:
                version = np.lib.format.read_magic(fh)
                if version == (1, 0):
                    shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
                else:
                    shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
                header = fh.tell()
            declared = int(np.prod(shape, dtype=object)) * dtype.itemsize
            if declared > info.file_size - header:
                raise DataError(f"array {info.filename[:-4]!r} declares shape {shape} of {dtype} ({declared} bytes), "
                                f"but the file holds {info.file_size - header} bytes for it", source=path)


def read_arrays(path: str) -> dict[str, np.ndarray]:
    """All arrays of an ``.npz`` (no pickles), or :class:`DataError` naming the file."""
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except FileNotFoundError:
        raise DataError("file not found", source=path) from None
    if magic[:2] != b"PK":
        raise DataError("not a readable .npz file (not a zip archive)", source=path)
    try:
        check_npz_sizes(path)
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except DataError:
        raise
    except MemoryError:
        raise DataError("an array is larger than the memory available", source=path) from None
    except ValueError as exc:
        raise DataError(f"holds an object array, which is not allowed ({exc})", source=path) from None
    except (OSError, zipfile.BadZipFile, EOFError, KeyError, NotImplementedError, RuntimeError) as exc:
        raise DataError(f"not a readable .npz file ({type(exc).__name__}: {exc})", source=path) from None


def _group(rows: np.ndarray, dialogue: np.ndarray | None):
    """Reorder ``rows`` so each dialogue is contiguous (file order kept); lengths and ids."""
    if dialogue is None:
        return rows, np.ones(len(rows), dtype=np.int64), [str(r) for r in rows]
    d = dialogue[rows]
    uniq, first, inverse = np.unique(d, return_index=True, return_inverse=True)
    by_first = np.argsort(first, kind="stable")
    rank = np.empty_like(by_first)
    rank[by_first] = np.arange(len(by_first))
    seq = rank[inverse.ravel()]
    perm = np.argsort(seq, kind="stable")
    lengths = np.bincount(seq, minlength=len(uniq)).astype(np.int64)
    return rows[perm], lengths, [str(u) for u in uniq[by_first]]


def from_arrays(
    arrays: dict[str, np.ndarray],
    *,
    source: str | None = None,
    name: str | None = None,
    task: str | None = None,
    num_classes: int | None = None,
    label_names: Seq[str] | None = None,
) -> Dataset:
    """Build a validated :class:`Dataset` from the arrays of a generic ``.npz``."""
    if "labels" not in arrays:
        raise DataError(f"missing array 'labels'; the file has {sorted(arrays)}", source=source, field="labels")
    labels = arrays["labels"]
    if labels.ndim != 1:
        raise DataError(f"expected shape (N,), got {labels.shape}", source=source, field="labels")
    n = labels.shape[0]
    mods = {}
    for k, v in arrays.items():
        if k in RESERVED:
            if v.shape != (n,):
                raise DataError(f"expected shape ({n},) (one per utterance), got {v.shape}", source=source, field=k)
            continue
        if v.ndim != 2:
            raise DataError(
                f"expected a modality array of shape ({n}, d) or one of {list(RESERVED)}, got shape {v.shape}", source=source, field=k
            )
        if v.shape[0] != n:
            raise DataError(f"{v.shape[0]} rows, but 'labels' has {n}", source=source, field=k)
        mods[k] = v
    if not mods:
        raise DataError("no modality arrays (2-D arrays named after their modality)", source=source)
    if "split" in arrays:
        split_col = arrays["split"].astype(str)
        bad = ~np.isin(split_col, SPLIT_NAMES)
        if bad.any():
            raise DataError(f"split values must be among {SPLIT_NAMES}, got {split_col[bad][0]!r}", source=source, field="split")
    else:
        split_col = np.full(n, "train")
    dialogue = arrays["dialogue"].astype(str) if "dialogue" in arrays else None
    speaker = arrays.get("speaker")
    if speaker is not None and speaker.dtype.kind == "S":
        speaker = speaker.astype(str)
    if speaker is not None and speaker.dtype.kind not in "Uiub":
        raise DataError(f"expected speaker names or integer ids, got dtype {speaker.dtype}", source=source, field="speaker")
    splits, raw_spk = {}, {}
    for s in SPLIT_NAMES:
        rows = np.flatnonzero(split_col == s)
        if not len(rows):
            continue
        rows, lengths, ids = _group(rows, dialogue)
        splits[s] = Split(
            name=s,
            features={m: x[rows] for m, x in mods.items()},
            labels=labels[rows],
            speakers=np.zeros(len(rows), dtype=np.int64),
            lengths=lengths,
            sequence_ids=ids,
        )
        raw_spk[s] = speaker[rows] if speaker is not None else np.zeros(len(rows), dtype=np.int64)
    if not splits:
        raise DataError("the file holds no utterances", source=source, field="labels")
    spk_cols, spk_names = encode_speakers(raw_spk, source=source, field="speaker")
    for s, sp in splits.items():
        sp.speakers = spk_cols[s]
    name = name or (os.path.splitext(os.path.basename(source))[0] if source else "dataset")
    return build_dataset(
        splits, name=name, fmt="npz", source=source, speaker_names=spk_names,
        task=task, num_classes=num_classes, label_names=label_names,
    )


def read_npz(path: str | os.PathLike, **kwargs) -> Dataset:
    """Read a generic utterance-level ``.npz`` (layout in the module docstring)."""
    path = os.fspath(path)
    return from_arrays(read_arrays(path), source=path, **kwargs)

"""One entry point for every data source: native directories, community files, synthetic sets."""

from __future__ import annotations

import os

from .dataset import Dataset
from .errors import DataError

FORMATS = ("native", "balm-pickle", "mmgcn-pickle", "npz")
SYNTHETIC = ("iemocap", "mosei")


def detect_format(path: str | os.PathLike) -> str:
    """The format of ``path`` where it is unambiguous: a native directory, ``.npz`` or a pickle
    (dict -> balm-pickle, 9/10-tuple -> mmgcn-pickle, told apart by reading it safely)."""
    path = os.fspath(path)
    if os.path.isdir(path):
        from .native import is_native

        if is_native(path):
            return "native"
        raise DataError("directory is not a balm dataset (no meta.json)", source=path)
    if not os.path.exists(path):
        raise DataError("file not found", source=path)
    ext = os.path.splitext(path)[1].lower()
    if ext == ".npz":
        return "npz"
    if ext in (".pkl", ".pickle", ".p"):
        from .safe_pickle import safe_load

        return _pickle_kind(safe_load(path), path)
    raise DataError(f"cannot tell the format from extension {ext!r}; pass format= one of {FORMATS}", source=path)


def _pickle_kind(obj, path: str) -> str:
    if isinstance(obj, dict):
        return "balm-pickle"
    if isinstance(obj, (tuple, list)):
        return "mmgcn-pickle"
    raise DataError(f"a pickle of {type(obj).__name__} is neither the dict nor the tuple layout", source=path)


def load(spec: str | os.PathLike, format: str | None = None, *, seed: int = 0, **kwargs) -> Dataset:
    """Load a validated :class:`Dataset` from ``spec``.

    ``spec`` is a native dataset directory, a file (``format`` one of ``FORMATS``,
    detected when omitted) or ``synthetic:iemocap`` / ``synthetic:mosei`` (generated
    with ``seed``). Extra keyword arguments (``name``, ``task``, ``num_classes``,
    ``label_names``) go to the file readers.
    """
    spec_s = os.fspath(spec)
    if spec_s.startswith("synthetic:"):
        like = spec_s.split(":", 1)[1]
        if like not in SYNTHETIC:
            raise DataError(f"unknown synthetic set {like!r}; expected one of {SYNTHETIC}", field="spec")
        from .synthetic import make_synthetic
        from .validation import validate_dataset

        return validate_dataset(make_synthetic(like=like, seed=seed), source=spec_s)
    if format is not None and format not in FORMATS:
        raise DataError(f"unknown format {format!r}; expected one of {FORMATS}", source=spec_s, field="format")
    fmt = format or detect_format(spec_s)
    if fmt == "native":
        from .native import load_dataset

        if kwargs:
            raise DataError(f"options {sorted(kwargs)} do not apply to a native dataset", source=spec_s)
        return load_dataset(spec_s)
    if fmt == "npz":
        from .npz_reader import read_npz

        return read_npz(spec_s, **kwargs)
    from .safe_pickle import safe_load

    obj = safe_load(spec_s)
    if fmt == "balm-pickle":
        from .balm_pickle import from_balm_dict

        return from_balm_dict(obj, source=spec_s, **kwargs)
    from .mmgcn_pickle import from_mmgcn_tuple

    return from_mmgcn_tuple(obj, source=spec_s, **kwargs)

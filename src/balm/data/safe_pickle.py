"""Restricted unpickling: only numpy arrays, dtypes, scalars and plain containers.

``pickle.load`` runs whatever callable a file names, so a feature file downloaded from
elsewhere could execute code. :class:`SafeUnpickler` resolves a global only if it is on
an explicit allow-list (the few numpy reconstruction helpers and builtin container
types); anything else is refused with an error naming the file and the global.
Python 2 pickles (the DialogueRNN / MMGCN feature files) are read with
``encoding="latin1"``, which also decodes numpy's byte payloads correctly.

Sizes are bounded by the file: a genuine pickle carries its payload, so an allowed constructor
asked to allocate more than the pickle's size plus :data:`SLACK_BYTES` (``bytearray(10**11)``
in a 43-byte file, an ``ndarray`` of a huge declared shape) is refused before it allocates.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
from typing import Any

import numpy as np

from .errors import DataError


def _numpy_attr(names: tuple[str, ...], attr: str):
    """``attr`` from the first importable numpy submodule among ``names`` (numpy 1 and 2)."""
    import importlib

    for mod in names:
        try:
            return getattr(importlib.import_module(mod), attr)
        except (ImportError, AttributeError):
            continue
    raise ImportError(f"numpy provides no {attr} in {names}")  # pragma: no cover


_MULTIARRAY = ("numpy._core.multiarray", "numpy.core.multiarray")
_NUMERIC = ("numpy._core.numeric", "numpy.core.numeric")


def _allowed() -> dict[tuple[str, str], Any]:
    reconstruct = _numpy_attr(_MULTIARRAY, "_reconstruct")
    scalar = _numpy_attr(_MULTIARRAY, "scalar")
    frombuffer = _numpy_attr(_NUMERIC, "_frombuffer")
    table: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): __import__("codecs").encode,  # bytes in protocol-2 pickles
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("collections", "defaultdict"): collections.defaultdict,
    }
    # both spellings: numpy 1 writes numpy.core.*, numpy 2 writes numpy._core.*
    for prefix in ("numpy.core", "numpy._core"):
        table[(f"{prefix}.multiarray", "_reconstruct")] = reconstruct
        table[(f"{prefix}.multiarray", "scalar")] = scalar
        table[(f"{prefix}.numeric", "_frombuffer")] = frombuffer
    for builtin in ("builtins", "__builtin__"):  # __builtin__: Python 2 pickles
        for t in (list, dict, tuple, set, frozenset, str, bytes, bytearray, int, float, complex, bool):
            table[(builtin, t.__name__)] = t
    table[("__builtin__", "unicode")] = str
    table[("__builtin__", "long")] = int
    # numpy dtype classes (numpy >= 2 may name them when pickling dtypes of new style)
    for name in dir(np.dtypes) if hasattr(np, "dtypes") else ():
        obj = getattr(np.dtypes, name)
        if isinstance(obj, type) and issubclass(obj, np.dtype):
            table[("numpy.dtypes", name)] = obj
    return table


_ALLOWED: dict[tuple[str, str], Any] | None = None
SLACK_BYTES = 1 << 20  # allocations a pickle may declare beyond its own size


def _declared_bytes(func: Any, args: tuple) -> int:
    """Bytes a call of an allowed constructor would allocate from its arguments alone."""
    try:
        if func in (bytes, bytearray) and args and isinstance(args[0], int) and not isinstance(args[0], bool):
            return int(args[0])
        if func is np.ndarray or getattr(func, "__name__", "") == "_reconstruct":
            shape = args[1] if func is not np.ndarray else args[0]
            dtype = args[2] if func is not np.ndarray and len(args) > 2 else (args[1] if len(args) > 1 else float)
            shape = (shape,) if isinstance(shape, int) else tuple(shape)
            n = 1
            for d in shape:
                n *= max(int(d), 0)
            return n * max(np.dtype(dtype if not isinstance(dtype, bytes) else dtype.decode("latin1")).itemsize, 1)
    except (TypeError, ValueError, IndexError):
        return 0
    return 0


def _guarded(func: Any, limit: int, source: str | None) -> Any:
    def call(*args, **kwargs):
        n = _declared_bytes(func, args)
        if n > limit:
            raise DataError(f"the pickle asks {getattr(func, '__name__', func)} for {n} bytes, more than its own size "
                            f"allows ({limit} bytes); refusing to allocate", source=source)
        return func(*args, **kwargs)

    return call


class SafeUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` whose ``find_class`` admits only an allow-list of globals."""

    def __init__(self, file, *, source: str | None = None, encoding: str = "ASCII", size: int | None = None):
        super().__init__(file, encoding=encoding)
        self.source = source
        self.limit = (size if size is not None else 0) + SLACK_BYTES

    def find_class(self, module: str, name: str):
        global _ALLOWED
        if _ALLOWED is None:
            _ALLOWED = _allowed()
        try:
            found = _ALLOWED[(module, name)]
        except KeyError:
            raise DataError(
                f"refused to unpickle global '{module}.{name}': only numpy arrays, dtypes, scalars "
                "and plain containers (dict, list, tuple, set, str, bytes, numbers) are allowed",
                source=self.source,
            ) from None
        if found in (bytes, bytearray) or getattr(found, "__name__", "") == "_reconstruct":
            return _guarded(found, self.limit, self.source)
        return found

    def persistent_load(self, pid):  # noqa: D401 - pickle hook
        raise DataError(f"refused persistent id {pid!r} in pickle", source=self.source)


def safe_loads(data: bytes, *, source: str | None = None) -> Any:
    """Unpickle bytes with :class:`SafeUnpickler` (see :func:`safe_load`)."""
    return _load(io.BytesIO(data), source)


def safe_load(path: str | os.PathLike) -> Any:
    """Read a pickle file admitting only numpy data and plain containers.

    Tries the default encoding first and falls back to ``latin1`` for Python 2 pickles.
    Raises :class:`DataError` naming the file for a refused global or a damaged file.
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise DataError("file not found", source=path) from None
    return _load(io.BytesIO(data), path)


def _load(buf: io.BytesIO, source: str | None) -> Any:
    with buf.getbuffer() as view:  # released at once: an exported buffer would pin the BytesIO
        size = view.nbytes
    try:
        try:
            return SafeUnpickler(buf, source=source, size=size).load()
        except UnicodeDecodeError:
            # a Python 2 pickle holding non-ASCII str/bytes (e.g. numpy payloads)
            buf.seek(0)
            return SafeUnpickler(buf, source=source, encoding="latin1", size=size).load()
    except DataError:
        raise
    except MemoryError:
        raise DataError("not a readable pickle (it asks for more memory than is available)", source=source) from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            RecursionError, OverflowError, LookupError, UnicodeError, SystemError, RuntimeError) as exc:
        raise DataError(f"not a readable pickle ({type(exc).__name__}: {exc})", source=source) from None

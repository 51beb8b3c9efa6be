"""File helpers every layer uses: atomic writes (a temporary file in the target's folder, then
``os.replace``), staged folders (built beside the target, swapped in when complete), strict JSON,
JSON lines and file digests.

Every file and folder written here gets the mode the process umask gives a new file (``0666 &
~umask``) or folder (``0777 & ~umask``), as ``open()`` and ``mkdir`` would; ``mkstemp`` alone
would make them private (0600 / 0700), which colleagues on a shared file system cannot read.

JSON written here is strict (RFC 8259): a non-finite float (NaN, ±Infinity) is written as
``null``, never as the ``NaN`` / ``Infinity`` tokens strict parsers reject.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np


def _to_plain(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON-serialisable: {type(obj).__name__}")


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of the file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def umask() -> int:
    """The process umask (read without changing it for longer than one call)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode ``open(path, "w")`` gives a new file: ``0o666 & ~umask``."""
    return 0o666 & ~umask()


def dir_mode() -> int:
    """The mode ``mkdir`` gives a new folder: ``0o777 & ~umask``."""
    return 0o777 & ~umask()


def atomic_write(path: str | Path, write: Callable[[str], None], *, fsync: bool = True) -> None:
    """Call ``write(tmp_path)`` then move the temporary file onto ``path`` in one step.

    The file gets the umask's mode (:func:`file_mode`); a temporary file left by a killed
    process (``.<name>.*.tmp``) is removed by the next write of the same path. ``fsync=False``
    skips flushing to the disk: the file still survives the process being killed (the rename is
    atomic), not a crash of the machine; for files rewritten often, like a resume checkpoint.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{glob_escape(path.name)}.*.tmp"):
        with contextlib.suppress(OSError):
            stale.unlink()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        os.chmod(tmp, file_mode())
        write(tmp)
        if fsync:
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)

    atomic_write(path, write)


def glob_escape(name: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


def finite_json(obj: Any) -> Any:
    """``obj`` with every non-finite float (NaN, ±inf, also in numpy scalars and arrays) as None."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_json(v) for v in obj]
    if isinstance(obj, (np.generic, np.ndarray)):
        return finite_json(_to_plain(obj))
    return obj


def dumps_json(obj: Any, **kw: Any) -> str:
    """Strict JSON text: non-finite floats become ``null`` (:func:`finite_json`)."""
    return json.dumps(finite_json(obj), default=_to_plain, allow_nan=False, **kw)


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """``obj`` as strict, indented JSON (non-finite floats as ``null``), written atomically."""
    atomic_write_text(path, dumps_json(obj, indent=2) + "\n")


def dumps_line(obj: Any) -> str:
    """One strict JSON line (non-finite floats as ``null``)."""
    return dumps_json(obj, separators=(",", ":"))


# --------------------------------------------------------------------------- staged folders


def _stage_names(target: Path) -> tuple[Path, Path]:
    """(the folder a new version of ``target`` is built in, the name the old version is moved to
    during the swap): hidden siblings of ``target``, fixed names so the next run finds them."""
    return target.parent / f".{target.name}.partial", target.parent / f".{target.name}.old"


def staging_dir(target: str | Path) -> Path:
    """The hidden sibling folder in which a new version of ``target`` is built."""
    return _stage_names(Path(target))[0]


def clean_stale(target: str | Path, *, keep_partial: bool = False) -> None:
    """Remove what an interrupted build of ``target`` left beside it.

    A ``.<name>.old`` left between the two renames of :func:`swap_in` is moved back when
    ``target`` is missing (it is the last complete version), else removed; ``.<name>.partial``
    is removed unless ``keep_partial`` (a resumable run keeps it).
    """
    target = Path(target)
    partial, old = _stage_names(target)
    if old.exists():
        if not target.exists() and not target.is_symlink():
            os.rename(old, target)
        else:
            shutil.rmtree(old, ignore_errors=True)
    if partial.exists() and not keep_partial:
        shutil.rmtree(partial, ignore_errors=True)


def make_dir(path: str | Path) -> Path:
    """``mkdir -p`` with the umask's mode on the new folders (``os.makedirs`` honours it already)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    return path


def swap_in(partial: str | Path, target: str | Path) -> None:
    """Make the complete folder ``partial`` the new ``target``: the old ``target`` (if any) is
    renamed aside, ``partial`` renamed onto ``target``, then the old one removed. At every moment
    one complete version exists under ``target`` or (between the renames) ``.<name>.old``, which
    :func:`clean_stale` puts back."""
    partial, target = Path(partial), Path(target)
    old = _stage_names(target)[1]
    if old.exists():
        shutil.rmtree(old)
    if target.is_symlink() or target.is_file():
        target.unlink()
    elif target.exists():
        os.rename(target, old)
    os.rename(partial, target)
    if old.exists():
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def staged_dir(target: str | Path):
    """Build a new version of the folder ``target`` beside it and swap it in on success.

    Yields the (fresh, empty) staging folder; when the block raises, ``target`` is untouched and
    the staging folder removed. Leftovers of a killed build are removed on the next call.
    """
    target = Path(target)
    clean_stale(target)
    partial = staging_dir(target)
    partial.mkdir(parents=True)
    try:
        yield partial
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    swap_in(partial, target)

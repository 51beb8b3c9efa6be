"""Input files of the builders: pinned SHA-256 sums, verification, and fetching a release.

Every builder reads only files whose SHA-256 is pinned in its module; a file that differs
from the published one is named in the error before anything is read or written.
"""

from __future__ import annotations

import glob
import hashlib
import os
import shutil
import tempfile
import urllib.request
from dataclasses import dataclass
from typing import Callable, Iterable

from balm.io import dir_mode, sha256_file  # noqa: F401 (the builders import sha256_file from here)

from ..errors import DataError

CHUNK = 1 << 20


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check_sha256(path: str, expected: str, actual: str | None = None) -> None:
    """Raise :class:`DataError` naming ``path`` when its SHA-256 is not ``expected``."""
    got = actual if actual is not None else sha256_file(path)
    if got != expected:
        raise DataError(
            f"SHA-256 {got} differs from the published file's {expected}: the file is damaged or not the release "
            "this builder reads",
            source=path,
            field="sha256",
        )


def verify_inputs(source: str | os.PathLike, sums: dict[str, str]) -> dict[str, str]:
    """Check that every file named in ``sums`` exists under ``source`` with that SHA-256.

    Returns name -> path. The first missing or differing file raises :class:`DataError`.
    """
    source = os.fspath(source)
    if not os.path.isdir(source):
        raise DataError("source folder not found", source=source)
    paths = {}
    for name, expected in sums.items():
        path = os.path.join(source, name)
        if not os.path.isfile(path):
            raise DataError(f"input file {name!r} is missing from the source folder", source=path)
        check_sha256(path, expected)
        paths[name] = path
    return paths


@dataclass(frozen=True)
class RemoteFile:
    """One file of a public release: its local name, where it is published and its SHA-256."""

    name: str
    url: str
    sha256: str
    repo_path: str = ""  # the path inside the published repository (also looked up in a mirror)


def _download(url: str, dest: str, timeout: float) -> None:
    with urllib.request.urlopen(url, timeout=timeout) as resp, open(dest, "wb") as fh:
        shutil.copyfileobj(resp, fh, CHUNK)


def _from_mirror(mirror: str, f: RemoteFile, dest: str) -> None:
    for rel in (f.name, f.repo_path):
        if rel and os.path.isfile(os.path.join(mirror, rel)):
            shutil.copyfile(os.path.join(mirror, rel), dest)
            return
    raise DataError(f"file {f.name!r} is not in the mirror (looked for {f.name!r} and {f.repo_path!r})", source=mirror)


def fetch_files(
    files: Iterable[RemoteFile],
    out: str | os.PathLike,
    *,
    mirror: str | os.PathLike | None = None,
    timeout: float = 60.0,
    download: Callable[[str, str, float], None] = _download,
    progress: Callable[[str], None] | None = None,
) -> str:
    """Download ``files`` (or copy them from ``mirror``) into folder ``out``, checksums verified.

    Everything goes to a temporary folder beside ``out`` first; only when every file has its
    published SHA-256 is a ``SHA256SUMS`` written and the folder renamed to ``out``. Any failure
    (network, a missing file in the mirror, a differing checksum) removes the temporary folder
    and leaves ``out`` as it was. An existing non-empty ``out`` is refused.
    """
    files = list(files)
    out = os.path.abspath(os.fspath(out))
    if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
        raise DataError("exists and is not an empty folder; refusing to overwrite", source=out)
    if mirror is not None and not os.path.isdir(mirror):
        raise DataError("mirror folder not found", source=os.fspath(mirror))
    parent = os.path.dirname(out)
    os.makedirs(parent, exist_ok=True)
    for stale in glob.glob(os.path.join(parent, f".{glob.escape(os.path.basename(out))}.fetch-*")):
        shutil.rmtree(stale, ignore_errors=True)  # left by a killed fetch
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.fetch-", dir=parent)
    os.chmod(tmp, dir_mode())
    try:
        for f in files:
            dest = os.path.join(tmp, f.name)
            if progress is not None:
                progress(f.name if mirror is not None else f.url)
            if mirror is not None:
                _from_mirror(os.fspath(mirror), f, dest)
            else:
                try:
                    download(f.url, dest, timeout)
                except OSError as exc:
                    raise DataError(f"download failed: {exc}", source=f.url) from None
            got = sha256_file(dest)
            if got != f.sha256:
                where = os.path.join(os.fspath(mirror), f.name) if mirror is not None else f.url
                raise DataError(f"SHA-256 {got} differs from the published file's {f.sha256}", source=where,
                                field="sha256")
        with open(os.path.join(tmp, "SHA256SUMS"), "w", encoding="utf-8") as fh:
            fh.writelines(f"{f.sha256}  {f.name}\n" for f in sorted(files, key=lambda f: f.name))
        if os.path.isdir(out):
            os.rmdir(out)
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out

"""Named builders: a public release's files -> a checked native balm dataset.

Each builder is a module listed in :data:`BUILDERS` that defines

- ``SUMMARY``: one line for ``balm data build --help``;
- ``add_arguments(parser)`` and ``options(args) -> dict``: its command-line options;
- ``build(source, **options) -> Dataset``: verify the inputs' pinned SHA-256 sums, read, join,
  split and validate (nothing is written; the caller saves with :func:`balm.data.save_dataset`);
- optionally ``REMOTE_FILES`` (:class:`~balm.data.builders.sources.RemoteFile` list) for
  ``balm data fetch``.

``build_dataset(name, source, out, **options)`` builds and writes atomically.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

from ..errors import DataError

BUILDERS = {
    "cmu-mosi": "balm.data.builders.cmu_mosi",
    "av-digits": "balm.data.builders.av_digits",
}


def get_builder(name: str) -> ModuleType:
    """The builder module registered as ``name``."""
    if name not in BUILDERS:
        raise DataError(f"unknown builder {name!r}; expected one of {sorted(BUILDERS)}", field="builder")
    return importlib.import_module(BUILDERS[name])


def fetchable() -> list[str]:
    """Names of the builders whose inputs ``balm data fetch`` can download."""
    return [n for n in BUILDERS if getattr(get_builder(n), "REMOTE_FILES", None)]


def build_dataset(name: str, source: str | os.PathLike, out: str | os.PathLike, **options) -> str:
    """Build dataset ``name`` from ``source`` and write it to ``out`` (temporary folder, then rename)."""
    from ..native import save_dataset

    ds = get_builder(name).build(source, **options)
    return save_dataset(ds, out)


__all__ = ["BUILDERS", "get_builder", "fetchable", "build_dataset"]

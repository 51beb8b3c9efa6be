"""A training run's output folder: ownership, staging and the last-epoch checkpoint for resume.

``train(cfg, DIR)`` never writes into ``DIR`` itself while it runs. It builds the run in the
hidden sibling ``.DIR.partial/`` (marked as a balm run by the file :data:`MARKER`) and swaps it
in for ``DIR`` only when the run has a result (finished or diverged): a rerun that fails or is
killed leaves the earlier run in ``DIR`` exactly as it was. ``DIR`` must be missing, empty or a
balm run folder (the marker, or a ``result.json`` of schema ``balm-result/*``); any other
non-empty folder is refused unless ``overwrite``.

While it runs, ``.DIR.partial/last.pt`` holds everything the next epoch depends on (model,
optimizer, the rebalancer's state including its heads' optimizer, numpy and torch RNG states,
early-stopping counter, the best state so far, the run log's history and the length of
``stats.jsonl``); it is replaced atomically after every epoch and removed when the run ends.
``train(..., resume=True)`` continues from it to the same result, bit for bit, as a run that
was never interrupted; without ``resume`` a leftover ``.DIR.partial`` is removed.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from balm.io import atomic_write, atomic_write_text, clean_stale, staging_dir, swap_in

from .config import ConfigError

MARKER = ".balm-run"
LAST = "last.pt"
LAST_FORMAT = "balm-last/1"


def is_run_folder(path: Path) -> bool:
    """Whether ``path`` is a folder balm wrote (its marker, or a balm ``result.json``)."""
    if (path / MARKER).is_file():
        return True
    try:
        res = json.loads((path / "result.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(res, dict) and str(res.get("schema", "")).startswith("balm-result/")


def check_target(target: Path, *, overwrite: bool) -> Path:
    """``target`` as the folder to swap the run into; raises :class:`ConfigError` when it is not
    ours to replace (a file, a dangling link, a non-empty folder balm did not write)."""
    if target.is_symlink() and not target.exists():
        raise ConfigError("is a symbolic link to a path that does not exist; expected a folder or a new path",
                          source=str(target))
    if target.exists():
        target = target.resolve()
        if not target.is_dir():
            if not overwrite:
                raise ConfigError("exists and is not a folder; refusing to replace it (--overwrite replaces it)",
                                  source=str(target))
        elif any(target.iterdir()) and not overwrite and not is_run_folder(target):
            raise ConfigError("is a non-empty folder that balm did not write (no balm result.json or "
                              f"{MARKER}); refusing to replace it (--overwrite replaces it)", source=str(target))
    return target


def open_work_dir(target: Path, *, resume: bool) -> tuple[Path, dict | None]:
    """(the staging folder of ``target``, the last-epoch checkpoint to resume from or None)."""
    work = staging_dir(target)
    clean_stale(target, keep_partial=resume)
    if resume:
        state = read_last(work / LAST)
        if state is not None:
            return work, state
        clean_stale(target)  # nothing resumable: start afresh
    work.mkdir(parents=True)
    atomic_write_text(work / MARKER, "balm run folder\n")
    return work, None


def read_last(path: Path) -> dict | None:
    """The last-epoch checkpoint at ``path``, or None when it is missing or unreadable."""
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - a damaged checkpoint means: start again
        return None
    return state if isinstance(state, dict) and state.get("format") == LAST_FORMAT else None


def write_last(work: Path, state: dict) -> None:
    """Replace ``work/last.pt`` atomically with ``state`` (plus its format tag)."""
    payload = {"format": LAST_FORMAT, **state}
    atomic_write(work / LAST, lambda tmp: torch.save(payload, tmp), fsync=False)  # survives a kill; cheap


def finish(work: Path, target: Path) -> None:
    """Remove the resume checkpoint and swap the complete run folder in for ``target``."""
    (work / LAST).unlink(missing_ok=True)
    swap_in(work, target)

"""Task and label space of data read from files that do not state them.

Rule (documented in docs/data.md):
- task: integer (or boolean) labels mean classification, floating-point labels mean
  regression; ``task=`` overrides.
- classes: ``label_names`` if given, else ``num_classes`` if given, else the IEMOCAP
  six classes when the dataset name contains "iemocap" and every label is in 0..5,
  else ``max(label) + 1`` over all splits with no names, provided the values are dense (at most about half of 0..max absent)
  (a stray label of 10**9 is an error naming the values, not 10**9 + 1 classes).
"""

from __future__ import annotations

from typing import Sequence as Seq

import numpy as np

import os

from .dataset import TASKS, Dataset, Split
from .errors import DataError

# the class order every public IEMOCAP feature file uses (DialogueRNN, MMGCN, CORECT, Ada2I, BALM)
IEMOCAP_LABELS = ("hap", "sad", "neu", "ang", "exc", "fru")


def infer_task(labels: Seq[np.ndarray], task: str | None = None, *, source: str | None = None) -> str:
    """``task`` if given, else classification for integer labels and regression for floats."""
    if task is not None:
        if task not in TASKS:
            raise DataError(f"task must be one of {TASKS}, got {task!r}", source=source, field="task")
        return task
    kinds = {np.asarray(y).dtype.kind for y in labels}
    if kinds <= set("iub"):
        return "classification"
    if kinds <= set("iubf"):
        return "regression"
    raise DataError(
        f"labels must be integers (classification) or floats (regression), got dtype kinds {sorted(kinds)}",
        source=source,
        field="labels",
    )


def label_space(
    name: str,
    task: str,
    labels: Seq[np.ndarray],
    num_classes: int | None = None,
    label_names: Seq[str] | None = None,
    *,
    source: str | None = None,
) -> tuple[int | None, list[str] | None]:
    """``(num_classes, label_names)`` following the module rule; ``(None, None)`` for regression."""
    if task == "regression":
        if label_names is not None or num_classes is not None:
            raise DataError("regression data takes no classes or label names", source=source, field="label_names")
        return None, None
    if label_names is not None:
        names = [str(s) for s in label_names]
        if num_classes is not None and num_classes != len(names):
            raise DataError(f"{len(names)} label names for {num_classes} classes", source=source, field="label_names")
        return len(names), names
    if num_classes is not None:
        return int(num_classes), None
    arrays = [np.asarray(y) for y in labels if np.asarray(y).size]
    if not arrays:
        raise DataError("no labels to infer the number of classes from", source=source, field="labels")
    hi = max(float(np.max(y)) for y in arrays)
    lo = min(float(np.min(y)) for y in arrays)
    if "iemocap" in name.lower() and lo >= 0 and hi <= len(IEMOCAP_LABELS) - 1:
        return len(IEMOCAP_LABELS), list(IEMOCAP_LABELS)
    present = np.unique(np.concatenate([y.astype(np.int64, copy=False).ravel() for y in arrays]))
    if lo >= 0 and int(hi) + 1 > 2 * present.size + 1:  # sparse: a stray label, not a few unseen classes
        absent = int(hi) + 1 - present.size
        shown = ", ".join(str(v) for v in present[:8]) + (" ..." if present.size > 8 else "")
        what = f"{absent} of the values 0..{int(hi)} never occur"
        raise DataError(f"the labels are not a dense range 0..K-1 (values present: {shown}; {what}); state the "
                        "classes with num_classes= or label_names=, or renumber the labels", source=source, field="labels")
    return int(hi) + 1, None


def build_dataset(
    splits: dict[str, Split],
    *,
    name: str,
    fmt: str,
    source: str | None,
    speaker_names: list[str] | None,
    task: str | None = None,
    num_classes: int | None = None,
    label_names: Seq[str] | None = None,
) -> Dataset:
    """A validated :class:`Dataset` from a reader's splits, with task and classes by the rule above."""
    from .validation import validate_dataset

    labels = [sp.labels for sp in splits.values()]
    task = infer_task(labels, task, source=source)
    n_cls, names = label_space(name, task, labels, num_classes, label_names, source=source)
    ds = Dataset(
        name=name,
        task=task,
        splits=splits,
        num_classes=n_cls,
        label_names=names,
        speaker_names=speaker_names,
        metadata={"format": fmt, "source": os.path.basename(source) if source else None},
    )
    return validate_dataset(ds, source=source)

"""Reader for the DialogueRNN / DialogueGCN / MMGCN tuple pickle (``IEMOCAP_features.pkl``).

The file is a Python 2 pickle of a 9-tuple, in this order::

    videoIDs       {dialogue id: utterance ids}          (ignored)
    videoSpeakers  {dialogue id: per-utterance speaker}  ('M'/'F' for IEMOCAP; one-hot rows elsewhere)
    videoLabels    {dialogue id: per-utterance class}
    videoText      {dialogue id: per-utterance text vectors}
    videoAudio     {dialogue id: per-utterance audio vectors}
    videoVisual    {dialogue id: per-utterance visual vectors}
    videoSentence  {dialogue id: transcripts}            (ignored)
    trainVid       train dialogue ids
    testVid        test dialogue ids

The MELD file of the same projects appends a tenth element, which is ignored. There is
no dev split. Reading uses the restricted unpickler with the latin1 fallback for
Python 2 pickles.
"""

from __future__ import annotations

import os
from typing import Any, Sequence as Seq

from .balm_pickle import from_balm_dict
from .dataset import Dataset
from .errors import DataError
from .safe_pickle import safe_load

FIELDS = (
    "videoIDs",
    "videoSpeakers",
    "videoLabels",
    "videoText",
    "videoAudio",
    "videoVisual",
    "videoSentence",
    "trainVid",
    "testVid",
)


def from_mmgcn_tuple(
    obj: Any,
    *,
    source: str | None = None,
    name: str | None = None,
    task: str | None = None,
    num_classes: int | None = None,
    label_names: Seq[str] | None = None,
) -> Dataset:
    """Build a validated :class:`Dataset` from an already unpickled MMGCN-style tuple."""
    if not isinstance(obj, (tuple, list)) or len(obj) not in (len(FIELDS), len(FIELDS) + 1):
        got = f"a {type(obj).__name__} of length {len(obj)}" if isinstance(obj, (tuple, list)) else type(obj).__name__
        raise DataError(f"expected a tuple of {len(FIELDS)} elements {FIELDS}, got {got}", source=source)
    f = dict(zip(FIELDS, obj))
    # same content as the dict layout, under the dict layout's keys; field names in errors stay the tuple's
    as_dict = {
        "text": f["videoText"],
        "audio": f["videoAudio"],
        "visual": f["videoVisual"],
        "label": f["videoLabels"],
        "speaker": f["videoSpeakers"],
        "trainVid": f["trainVid"],
        "testVid": f["testVid"],
    }
    try:
        ds = from_balm_dict(
            as_dict, source=source, name=name, task=task, num_classes=num_classes, label_names=label_names
        )
    except DataError as exc:
        raise _renamed(exc, source) from None
    ds.metadata["format"] = "mmgcn-pickle"
    return ds


_NAMES = {
    "text": "videoText",
    "audio": "videoAudio",
    "visual": "videoVisual",
    "label": "videoLabels",
    "speaker": "videoSpeakers",
}


def _renamed(exc: DataError, source: str | None) -> DataError:
    field = exc.field
    if field:
        head, sep, tail = field.partition("[")
        field = _NAMES.get(head, head) + sep + tail
    return DataError(exc.detail, source=source, field=field)


def read_mmgcn_pickle(path: str | os.PathLike, **kwargs) -> Dataset:
    """Read ``IEMOCAP_features.pkl``-style tuple pickles (Python 2 pickles included)."""
    path = os.fspath(path)
    return from_mmgcn_tuple(safe_load(path), source=path, **kwargs)

"""CMU-MOSI utterance features (bc-LSTM's CSVs) with GCNet's continuous sentiment labels.

Inputs (``SHA256``, all checked before anything is read):

- ``{audio,text,video}_{train,test}0.csv`` (declare-lab/multimodal-deep-learning, ``bc-LSTM/data``):
  one row per utterance, features then the binary label; audio 73-d, text 100-d, video 100-d;
- ``text_{train,test}.csv``: row i is the utterance of row i above; column 0 its row index in
  ``transcripts.csv``, then the same 100 text features (the join key);
- ``transcripts.csv``: ``utterance_id, transcript, <int>, binary label``; id = ``<video>_<n>``;
- ``CMUMOSI_features_raw_2way.pkl`` (zeroQiaoba/GCNet): video -> utterance ids, video -> scores in
  [-3, 3], and the standard 52 / 10 / 31 train / valid / test video sets.

Join: CSV row -> ``transcripts.csv`` row (``text_*.csv`` column 0) -> utterance id -> video and
score (pickle). Videos are the sequences, utterances in the pickle's order, videos sorted by id.
Split (default ``csv``): the CSVs' own 62 training and 31 test videos, the ones the text and video
features were learnt on, with a seeded dev split carved from the training videos. ``standard``
(the pickle's 52 / 10 / 31) leaks test labels with these features and warns.
"""

from __future__ import annotations

import argparse
import os
import re
import warnings

import numpy as np

from ..dataset import Dataset, Split
from ..errors import DataError
from .sources import RemoteFile, verify_inputs

SUMMARY = "CMU-MOSI: 93 videos, 2199 utterances, audio 73-d / text 100-d (or 384-d) / visual 100-d"
VERSION = 1

SHA256 = {
    "CMUMOSI_features_raw_2way.pkl": "931ee50f3a77b2eb18786840a880a439f3ae6542bf2dfb5e14ecc9690702af84",
    "audio_test0.csv": "ddd17eeefd3d951d51d4e2ef8a0d132652d8161e1886f71eb7262b7a14bffff6",
    "audio_train0.csv": "5435398a54664e7b00304587dc59ae84a438852be033c2a2fba779588624a2a1",
    "text_test.csv": "f3b735070bf07ceff7a6ef6c8f4c32757e988de484e35bd6d38b2aecef851a59",
    "text_test0.csv": "a343e22272919d1384c2075dbcdd5fef5aa9f9366b0552a83f7c3147b64b047a",
    "text_train.csv": "73770b6302ad0f7a51f4eddcae6788efde4d0b6802e09f78249d5b538d1c1d67",
    "text_train0.csv": "cc327045db6cc361a08b4037b97bb24de4ddb5efb381468c4835cc4a60674668",
    "transcripts.csv": "e7689e6d70720addd2a6b316419d245a68839c32b014ff426c406063ee777466",
    "video_test0.csv": "cab836253d81100f59d533fa2ff65cd53c486be3ec9fd82203c5e25a7a77265f",
    "video_train0.csv": "b6efc0413132d627efd06f67f1706830e775e90af9a75696f535c48dbc73f12f",
}

BC_LSTM = ("declare-lab/multimodal-deep-learning", "111b401d867c14a1dcd930fd2b2ab58a5eca3f70")
GCNET = ("zeroQiaoba/GCNet", "8cce4a0c9a50172abfa79971e77c71c40c1d733d")


def _repo_path(name: str) -> tuple[tuple[str, str], str]:
    if name.endswith(".pkl"):
        return GCNET, f"dataset/CMUMOSI/{name}"
    m = re.fullmatch(r"(audio|text|video)_(train|test)0\.csv", name)
    return BC_LSTM, f"bc-LSTM/data/{m.group(1)}/{name}" if m else f"bc-LSTM/data/{name}"


def _remote(name: str) -> RemoteFile:
    (repo, commit), path = _repo_path(name)
    return RemoteFile(name, f"https://raw.githubusercontent.com/{repo}/{commit}/{path}", SHA256[name], path)


REMOTE_FILES = [_remote(n) for n in SHA256]

DIMS = {"audio": 73, "text": 100, "video": 100}
MODALITIES = ("audio", "text", "visual")  # the paper's (A, L, V) order; video is stored as "visual"
NUM_UTTERANCES, NUM_VIDEOS, CSV_TRAIN_VIDEOS, CSV_TEST_VIDEOS = 2199, 93, 62, 31
SPLITS = ("csv", "standard")
TEXT_FEATURES = ("shipped", "minilm")


class LeakWarning(UserWarning):
    """The chosen split puts test videos among those the features were learnt on."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", choices=("binary", "regression"), default="binary",
                   help="binary: sentiment >= 0 (2 classes); regression: the score in [-3, 3] (default binary)")
    p.add_argument("--split", choices=SPLITS, default="csv",
                   help="csv: the CSVs' 62 / 31 videos, dev carved from train (default); standard: 52 / 10 / 31, "
                        "leaks test labels with these features")
    p.add_argument("--dev-ratio", type=float, default=0.15, metavar="R",
                   help="share of the training videos moved to dev with --split csv (default 0.15: 9 videos)")
    p.add_argument("--seed", type=int, default=0, help="seed of the dev split (default 0)")
    p.add_argument("--text-features", choices=TEXT_FEATURES, default="shipped",
                   help="shipped: the CSVs' 100-d text features; minilm: a 384-d sentence-encoder embedding of the "
                        "transcripts (needs the 'features' extra)")
    p.add_argument("--text-model", default="all-MiniLM-L6-v2", metavar="NAME_OR_PATH",
                   help="sentence-transformers model for --text-features minilm (default all-MiniLM-L6-v2, offline)")
    p.add_argument("--no-standardize", dest="standardize", action="store_false",
                   help="keep raw feature values (default: z-score with the training split's mean and std)")
    p.add_argument("--cache", default=None, metavar="DIR", help="feature cache folder for --text-features minilm")


def options(args) -> dict:
    return {k: getattr(args, k) for k in ("task", "split", "dev_ratio", "seed", "text_features", "text_model",
                                          "standardize", "cache")}


def _read_pickle(path: str):
    from ..safe_pickle import safe_load

    obj = safe_load(path)
    if not isinstance(obj, (tuple, list)) or len(obj) != 7:
        raise DataError("expected a 7-tuple (ids, labels, speakers, sentences, train, valid, test)", source=path)
    ids, labels, _speakers, _sentences, trn, val, tst = obj
    for f, v in (("ids", ids), ("labels", labels)):
        if not isinstance(v, dict):
            raise DataError(f"expected a dict, got {type(v).__name__}", source=path, field=f)
    scores, video_utts = {}, {}
    for vid, utts in ids.items():
        if vid not in labels or len(labels[vid]) != len(utts):
            raise DataError("utterance ids and labels differ in length", source=path, field=f"labels[{vid!r}]")
        video_utts[str(vid)] = [str(u) for u in utts]
        for u, s in zip(utts, labels[vid]):
            s = float(s)
            if not (-3.0 <= s <= 3.0):
                raise DataError(f"score {s} of utterance {u!r} is outside [-3, 3]", source=path, field="labels")
            scores[str(u)] = s
    standard = {k: sorted(str(v) for v in s) for k, s in (("train", trn), ("dev", val), ("test", tst))}
    return video_utts, scores, standard


def _read_part(paths: dict[str, str], part: str, uids: list[str]) -> dict:
    """The utterance ids, features and CSV labels of one CSV part (train or test), in row order."""
    from ._common import read_csv_matrix

    mats = {m: read_csv_matrix(paths[f"{m}_{part}0.csv"], d + 1) for m, d in DIMS.items()}
    key_name = f"text_{part}.csv"
    key = read_csv_matrix(paths[key_name], DIMS["text"] + 1)
    n = key.shape[0]
    for m, x in mats.items():
        if x.shape[0] != n:
            raise DataError(f"{x.shape[0]} rows, but {key_name} has {n}", source=paths[f"{m}_{part}0.csv"])
    label = mats["text"][:, -1]
    for m in ("audio", "video"):
        bad = np.flatnonzero(mats[m][:, -1] != label)
        if bad.size:
            raise DataError(f"label column differs from text_{part}0.csv at row {bad[0]}",
                            source=paths[f"{m}_{part}0.csv"], field=f"row {bad[0]}")
    # the key file repeats the text features of the same row: this pins row i <-> transcript row
    diff = np.abs(key[:, 1:] - mats["text"][:, :-1]).max(axis=1)
    bad = np.flatnonzero(diff > 1e-6)
    if bad.size:
        raise DataError(f"row {bad[0]}'s text features differ from text_{part}0.csv row {bad[0]}; the rows do "
                        "not describe the same utterance", source=paths[key_name], field=f"row {bad[0]}")
    idx = key[:, 0]
    if not np.all((idx == np.round(idx)) & (idx >= 0) & (idx < len(uids))):
        i = int(np.flatnonzero(~((idx == np.round(idx)) & (idx >= 0) & (idx < len(uids))))[0])
        raise DataError(f"column 0 must be a row index of transcripts.csv (0..{len(uids) - 1}), got {idx[i]}",
                        source=paths[key_name], field=f"row {i}")
    return {
        "ids": [uids[int(i)] for i in idx],
        "features": {m: x[:, :-1] for m, x in mats.items()},
        "label": label,
    }


def _text_embeddings(texts: list[str], model: str, cache: str | None) -> np.ndarray:
    from balm.features.text import encode_texts

    return encode_texts(texts, model, cache=cache)


def build(source, *, task: str = "binary", split: str = "csv", dev_ratio: float = 0.15, seed: int = 0,
          text_features: str = "shipped", text_model: str = "all-MiniLM-L6-v2", standardize: bool = True,
          cache: str | None = None) -> Dataset:
    """The CMU-MOSI dataset from the release files in folder ``source`` (validated, not written).

    ``task``: ``binary`` (label = score >= 0, checked equal to the CSVs' label column for every
    utterance) or ``regression`` (label = score). ``split``: ``csv`` (62 / 31 videos, dev =
    ``floor(dev_ratio * 62)`` training videos drawn with ``seed``) or ``standard`` (52 / 10 / 31,
    warns :class:`LeakWarning`). ``text_features``: ``shipped`` (100-d) or ``minilm`` (the
    sentence encoder ``text_model`` on the transcripts). ``standardize``: z-score with train stats.
    """
    if task not in ("binary", "regression"):
        raise DataError(f"task must be 'binary' or 'regression', got {task!r}", field="task")
    if split not in SPLITS:
        raise DataError(f"split must be one of {SPLITS}, got {split!r}", field="split")
    if text_features not in TEXT_FEATURES:
        raise DataError(f"text_features must be one of {TEXT_FEATURES}, got {text_features!r}", field="text_features")
    source = os.fspath(source)
    paths = verify_inputs(source, SHA256)

    from ._common import read_csv_rows

    trows = read_csv_rows(paths["transcripts.csv"])
    if len(trows) != NUM_UTTERANCES or any(len(r) != 4 for r in trows):
        raise DataError(f"expected {NUM_UTTERANCES} rows of 4 columns", source=paths["transcripts.csv"])
    uids = [r[0] for r in trows]
    transcript = {r[0]: r[1] for r in trows}
    tlabel = {r[0]: r[3] for r in trows}
    video_utts, scores, standard = _read_pickle(paths["CMUMOSI_features_raw_2way.pkl"])

    rows: dict[str, tuple[str, int]] = {}  # utterance id -> (CSV part, row)
    parts = {p: _read_part(paths, p, uids) for p in ("train", "test")}
    for p, part in parts.items():
        for i, u in enumerate(part["ids"]):
            if u in rows:
                raise DataError(f"utterance {u!r} appears twice (also in the {rows[u][0]} CSVs)",
                                source=paths[f"text_{p}.csv"], field=f"row {i}")
            rows[u] = (p, i)
    if set(rows) != set(scores) or len(rows) != NUM_UTTERANCES:
        missing = sorted(set(scores) - set(rows))[:3] or sorted(set(rows) - set(scores))[:3]
        raise DataError(f"the CSVs hold {len(rows)} utterances, the pickle {len(scores)}; they differ e.g. at "
                        f"{missing}", source=paths["CMUMOSI_features_raw_2way.pkl"], field="ids")

    # binary target = score >= 0 must equal the CSVs' (and transcripts.csv's) label column
    wrong = [u for u, (p, i) in rows.items()
             if (scores[u] >= 0) != (parts[p]["label"][i] == 1) or tlabel[u] != str(int(parts[p]["label"][i]))]
    if wrong:
        raise DataError(f"{len(wrong)} utterance(s) whose binary label is not score >= 0, e.g. {wrong[:3]}",
                        source=source, field="label")

    video_part: dict[str, str] = {}
    for vid, utts in video_utts.items():
        ps = {rows[u][0] for u in utts}
        if len(ps) != 1:
            raise DataError(f"video {vid!r} has utterances in both the train and the test CSVs", source=source)
        video_part[vid] = ps.pop()
    if len(video_utts) != NUM_VIDEOS:
        raise DataError(f"expected {NUM_VIDEOS} videos, got {len(video_utts)}",
                        source=paths["CMUMOSI_features_raw_2way.pkl"], field="ids")

    if text_features == "minilm":
        emb = _text_embeddings([transcript[u] for u in uids], text_model, cache)
        text_of = {u: emb[j] for j, u in enumerate(uids)}

    def make_split(name: str, videos: list[str]) -> Split:
        utts = [u for v in videos for u in video_utts[v]]
        feats = {}
        for m_out, m_in in zip(MODALITIES, ("audio", "text", "video")):
            if m_in == "text" and text_features == "minilm":
                feats[m_out] = np.stack([text_of[u] for u in utts]).astype(np.float32)
            else:
                feats[m_out] = np.stack([parts[rows[u][0]]["features"][m_in][rows[u][1]] for u in utts]).astype(
                    np.float32)
        y = np.array([scores[u] for u in utts], dtype=np.float64)
        labels = (y >= 0).astype(np.int64) if task == "binary" else y.astype(np.float32)
        return Split(name=name, features=feats, labels=labels, speakers=np.zeros(len(utts), dtype=np.int64),
                     lengths=np.array([len(video_utts[v]) for v in videos], dtype=np.int64), sequence_ids=list(videos))

    meta = {
        "builder": "cmu-mosi",
        "builder_version": VERSION,
        "options": {"task": task, "split": split, "seed": seed, "dev_ratio": dev_ratio if split == "csv" else None,
                    "text_features": text_features,
                    "text_model": text_model if text_features == "minilm" else None, "standardize": standardize},
        "source_sha256": dict(SHA256),
        "source": [f"github.com/{BC_LSTM[0]}@{BC_LSTM[1]}", f"github.com/{GCNET[0]}@{GCNET[1]}"],
    }
    if split == "csv":
        train = sorted(v for v, p in video_part.items() if p == "train")
        test = sorted(v for v, p in video_part.items() if p == "test")
        ds = Dataset(name="cmu-mosi", task="classification" if task == "binary" else "regression",
                     splits={"train": make_split("train", train), "test": make_split("test", test)}, metadata=meta)
        from ..dev_split import ensure_dev

        ds = ensure_dev(ds, ratio=dev_ratio, seed=seed)
    else:
        leaked = sorted(v for v in standard["test"] if video_part[v] == "train")
        warnings.warn(
            f"the standard 52/10/31 split puts {len(leaked)} of its {len(standard['test'])} test videos among the 62 "
            "videos the text and video features were learnt on (with their labels): test scores are inflated; use "
            "the default --split csv to compare methods", LeakWarning, stacklevel=2)
        meta["leaked_test_videos"] = len(leaked)
        ds = Dataset(name="cmu-mosi", task="classification" if task == "binary" else "regression",
                     splits={k: make_split(k, standard[k]) for k in ("train", "dev", "test")}, metadata=meta)
    if task == "binary":
        ds.num_classes, ds.label_names = 2, ["negative", "positive"]
    if standardize:
        from ._common import standardize as zscore

        ds.metadata["standardization"] = zscore(ds.splits)
    from ..validation import validate_dataset

    return validate_dataset(ds, source=source)

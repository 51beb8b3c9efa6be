"""Tiny hand-built inputs in the community layouts, shared by the data-layer tests."""

from __future__ import annotations

import numpy as np
from balm.data.dataset import Dataset, Split

DIMS = {"audio": 4, "text": 3, "visual": 2}
TRAIN = {"d1": 3, "d2": 2, "d3": 4}
TEST = {"t1": 2}


def build_balm_dict(seed: int = 0, *, with_dev: bool = False, regression: bool = False) -> dict:
    """A BALM-style dict with three train dialogues and one test dialogue.

    Text is stored as a list of 1-D float64 arrays, audio as a 2-D array and visual as
    nested Python lists, as different public files do.
    """
    rng = np.random.default_rng(seed)
    lengths = {**TRAIN, **TEST}
    if with_dev:
        lengths["v1"] = 2
    out = {k: {} for k in ("text", "audio", "visual", "label", "speaker", "sentence")}
    for vid, n in lengths.items():
        out["text"][vid] = [rng.standard_normal(DIMS["text"]) for _ in range(n)]
        out["audio"][vid] = rng.standard_normal((n, DIMS["audio"]))
        out["visual"][vid] = rng.standard_normal((n, DIMS["visual"])).tolist()
        if regression:
            out["label"][vid] = list(np.round(rng.uniform(-3, 3, n), 3))
        else:
            out["label"][vid] = [int(v) for v in rng.integers(0, 6, n)]
        out["speaker"][vid] = ["M" if v else "F" for v in rng.integers(0, 2, n)]
        out["sentence"][vid] = [f"utterance {i}" for i in range(n)]
    out["trainVid"] = list(TRAIN)
    out["testVid"] = list(TEST)
    if with_dev:
        out["valVid"] = ["v1"]
    return out


def expected_columns(d: dict, vids: list[str]) -> dict:
    """The column-wise view of dialogues ``vids``, computed independently of the library."""
    spk = {"M": 0, "F": 1}
    return {
        "audio": np.concatenate([np.asarray(d["audio"][v], dtype=np.float32) for v in vids]),
        "text": np.concatenate([np.stack(d["text"][v]).astype(np.float32) for v in vids]),
        "visual": np.concatenate([np.asarray(d["visual"][v], dtype=np.float32) for v in vids]),
        "labels": np.concatenate([np.asarray(d["label"][v]) for v in vids]),
        "speakers": np.array([spk[s] for v in vids for s in d["speaker"][v]], dtype=np.int64),
        "lengths": np.array([len(d["label"][v]) for v in vids]),
    }


def tiny_dataset(seed: int = 0, *, num_train: int = 10, with_mask: bool = False) -> Dataset:
    """A small classification dataset built directly in the data model."""
    rng = np.random.default_rng(seed)
    splits = {}
    for name, S in (("train", num_train), ("test", 3)):
        lengths = rng.integers(1, 5, S)
        n = int(lengths.sum())
        mask = None
        if with_mask:
            mask = rng.random((n, 3)) < 0.6
            mask[~mask.any(axis=1), 0] = True
        splits[name] = Split(
            name=name,
            features={m: rng.standard_normal((n, d)).astype(np.float32) for m, d in DIMS.items()},
            labels=rng.integers(0, 3, n),
            speakers=rng.integers(0, 2, n),
            lengths=lengths.astype(np.int64),
            sequence_ids=[f"{name}{s}" for s in range(S)],
            mask=mask,
        )
    return Dataset(name="tiny", task="classification", splits=splits, num_classes=3, label_names=["a", "b", "c"],
                   speaker_names=["M", "F"], metadata={"origin": "test"})


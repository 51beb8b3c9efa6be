"""Loading an IEMOCAP-sized dataset: balm's native format vs a BALM-style dict pickle.

Both files are written to a temporary directory from the synthetic IEMOCAP-like set
(7433 utterances, dims 1582/1024/342). Timed, best of ``--repeats``:
- native:       ``load_dataset(dir)`` (np.load of uncompressed .npz + full validation);
- balm-pickle:  ``read_balm_pickle(file)`` (restricted unpickler + per-dialogue assembly
                + the same validation);
- raw pickle:   plain ``pickle.load`` of the same file, for reference (unsafe, no checks,
                still per-utterance lists rather than arrays).

    python benchmarks/bench_loading.py [--like iemocap|mosei] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import pickle
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))

from balm.data.balm_pickle import read_balm_pickle  # noqa: E402
from balm.data.native import load_dataset, save_dataset  # noqa: E402
from balm.data.synthetic import make_synthetic  # noqa: E402


def to_balm_dict(ds) -> dict:
    """The dataset in the public dict layout: per dialogue, lists of 1-D per-utterance vectors."""
    names = ds.speaker_names or ["M", "F"]
    out = {k: {} for k in ("text", "audio", "visual", "label", "speaker", "sentence")}
    for sp in ds:
        off = sp.offsets
        for s, vid in enumerate(sp.sequence_ids):
            a, b = off[s], off[s + 1]
            for m in ("text", "audio", "visual"):
                out[m][vid] = list(sp.features[m][a:b])
            out["label"][vid] = sp.labels[a:b].tolist()
            out["speaker"][vid] = [names[i] for i in sp.speakers[a:b]]
            out["sentence"][vid] = [""] * (b - a)
    out["trainVid"] = list(ds["train"].sequence_ids)
    out["testVid"] = list(ds["test"].sequence_ids)
    if "dev" in ds.splits:
        out["valVid"] = list(ds["dev"].sequence_ids)
    return out


def best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--like", choices=("iemocap", "mosei"), default="iemocap")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    ds = make_synthetic(like=args.like, seed=0)
    with tempfile.TemporaryDirectory(prefix="bench_loading-") as tmp:
        native_dir = os.path.join(tmp, "native")
        pkl = os.path.join(tmp, f"{args.like}.pkl")
        save_dataset(ds, native_dir)
        with open(pkl, "wb") as f:
            pickle.dump(to_balm_dict(ds), f, protocol=pickle.HIGHEST_PROTOCOL)
        size_native = sum(os.path.getsize(os.path.join(native_dir, f)) for f in os.listdir(native_dir))
        size_pkl = os.path.getsize(pkl)
        # the two loaders must agree before they are timed
        a, b = load_dataset(native_dir), read_balm_pickle(pkl, name=ds.name)
        for k in ds.splits:
            for m in ds.modalities:
                assert np.array_equal(a[k].features[m], b[k].features[m])
        t_native = best(lambda: load_dataset(native_dir), args.repeats)
        t_pickle = best(lambda: read_balm_pickle(pkl, name=ds.name), args.repeats)

        def raw():
            with open(pkl, "rb") as f:
                pickle.load(f)

        t_raw = best(raw, args.repeats)
    n = sum(sp.num_utterances for sp in ds)
    print(f"{args.like}-like: {n} utterances, dims {ds.dims()}, best of {args.repeats}")
    print(f"{'native directory (' + format(size_native / 2**20, '.0f') + ' MiB)':<40}{t_native:8.3f} s")
    print(f"{'balm-pickle, safe (' + format(size_pkl / 2**20, '.0f') + ' MiB)':<40}{t_pickle:8.3f} s")
    print(f"{'raw pickle.load (unsafe, no checks)':<40}{t_raw:8.3f} s")
    print(f"ratio balm-pickle / native: {t_pickle / t_native:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())

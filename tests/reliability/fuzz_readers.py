"""Fuzz the readers and the config loader (run as a script in a memory-limited subprocess).

``python fuzz_readers.py SECONDS SEED MEMORY_BYTES WORKDIR`` feeds random bytes and random
mutations of valid files to the npz reader, the restricted unpickler (and the BALM pickle
reader behind it), the native dataset loader and the config loader until SECONDS have passed,
under ``RLIMIT_AS = MEMORY_BYTES``. It prints one JSON line: the number of inputs tried and
every input that raised something other than a ValueError subclass with a message.
"""

from __future__ import annotations

import json
import pickle
import resource
import sys
import time
from pathlib import Path

import numpy as np


def _mutate(data: bytes, rng: np.random.Generator) -> bytes:
    b = bytearray(data)
    for _ in range(int(rng.integers(1, 9))):
        op = rng.integers(4)
        i = int(rng.integers(len(b))) if b else 0
        if op == 0 and b:
            b[i] = int(rng.integers(256))
        elif op == 1:
            b[i:i] = rng.bytes(int(rng.integers(1, 16)))
        elif op == 2 and b:
            del b[i:i + int(rng.integers(1, 64))]
        else:
            b = b[: i]  # truncate
    return bytes(b)


def main() -> None:
    seconds, seed, memory, work = float(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4])
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    from balm.data.native import load_dataset
    from balm.data.npz_reader import read_npz
    from balm.data.balm_pickle import read_balm_pickle
    from balm.experiments.config import load_config

    rng = np.random.default_rng(seed)
    n = 8
    arrays = {"labels": np.arange(n) % 3, "audio": rng.normal(size=(n, 4)).astype(np.float32),
              "text": rng.normal(size=(n, 3)).astype(np.float32), "split": np.array(["train"] * 4 + ["dev"] * 2 + ["test"] * 2),
              "dialogue": np.repeat(np.arange(4), 2), "speaker": np.arange(n) % 2}
    npz = work / "valid.npz"
    np.savez(npz, **arrays)
    pkl = pickle.dumps({"features": {"audio": arrays["audio"]}, "labels": arrays["labels"].tolist()}, protocol=2)
    yaml_text = (b"data: synthetic:iemocap\nmethod: balm\nepochs: 2\nrates: {audio: 0.5, text: 0.3, visual: 0.7}\n"
                 b"backbone_options: &b {hidden: 8}\nmethod_options: {}\nsweep_base: *b\n")
    json_text = json.dumps({"data": "synthetic:iemocap", "method": "none", "lr": 0.01, "backbone_options": {"hidden": 8}}).encode()
    seeds = {"npz": npz.read_bytes(), "pkl": pkl, "yaml": yaml_text, "json": json_text}
    targets = {
        "npz": lambda p: read_npz(p),
        "pkl": lambda p: read_balm_pickle(p),
        "yaml": lambda p: load_config(p),
        "json": lambda p: load_config(p),
        "native": lambda p: load_dataset(p.parent),
    }
    for kind in ("npz", "pkl", "yaml", "json"):  # warm up (first calls import what they need)
        warm = work / f"warm.{kind}"
        warm.write_bytes(seeds[kind])
        try:
            targets[kind](warm)
        except ValueError:
            pass
    bad, tried = [], 0
    t_end = time.monotonic() + seconds
    while time.monotonic() < t_end:
        kind = ["npz", "pkl", "yaml", "json", "native"][tried % 5]
        base = seeds["npz" if kind == "native" else kind]
        data = rng.bytes(int(rng.integers(0, 256))) if rng.random() < 0.25 else _mutate(base, rng)
        if kind == "native":
            d = work / f"ds{tried}"
            d.mkdir()
            (d / "meta.json").write_bytes(_mutate(b'{"format": "balm-dataset", "version": 1}', rng))
            path = d / "train.npz"
        else:
            path = work / f"in{tried}.{ 'pkl' if kind == 'pkl' else kind}"
        path.write_bytes(data)
        tried += 1
        try:
            targets[kind](path)
        except ValueError as exc:
            if not str(exc).strip():
                bad.append({"kind": kind, "error": f"{type(exc).__name__} without a message", "input": data.hex()})
        except Exception as exc:  # noqa: BLE001 - what the test is looking for
            bad.append({"kind": kind, "error": f"{type(exc).__name__}: {exc}"[:300], "input": data.hex()[:2000]})
    print(json.dumps({"tried": tried, "bad": bad[:20], "n_bad": len(bad)}))


if __name__ == "__main__":
    main()

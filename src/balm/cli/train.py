"""``balm train``: train one configuration and write its result folder."""

from __future__ import annotations

import json
import sys


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train",
        help="train one configuration (backbone + balancing method) and evaluate it",
        description="Train one configuration. Writes DIR/result.json (last), checkpoint.pt, stats.jsonl, "
        "tsne.npz and TensorBoard events in DIR/tb. The run is built in DIR's hidden sibling .DIR.partial and "
        "replaces DIR only when it ends; a failed or interrupted run leaves DIR as it was. Epochs are numbered "
        "from 0. Exit status: 0 finished, 2 error, 3 diverged (non-finite loss or gradient), 130 interrupted. "
        "Keys: docs/experiments.md or --list-keys.",
    )
    p.add_argument("--config", metavar="FILE", help="YAML or JSON config file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a key (value parsed as YAML; dotted keys reach into mappings); repeatable")
    p.add_argument("--out", metavar="DIR", help="output folder")
    p.add_argument("--resume", action="store_true",
                   help="continue the interrupted run of DIR from its last completed epoch (same result as an "
                   "uninterrupted run); without an interrupted run, train from the start")
    p.add_argument("--overwrite", action="store_true",
                   help="replace DIR when it holds another finished run or is a non-empty folder balm did not write")
    p.add_argument("--quiet", action="store_true", help="no progress bar or per-epoch lines")
    p.add_argument("--print-config", action="store_true", help="print the resolved config as JSON and exit")
    p.add_argument("--list-keys", action="store_true", help="list every config key with type, default and meaning")
    p.set_defaults(func=run)


def run(args) -> int:
    from balm.experiments.config import ConfigError, config_reference, load_config, with_source

    if args.list_keys:
        for row in config_reference():
            print(f"{row['key']:<18} {row['type']:<28} default {json.dumps(row['default'])}\n    {row['doc']}")
        return 0
    cfg = load_config(args.config, args.overrides)
    if args.print_config:
        print(json.dumps(cfg.to_dict(), indent=2))
        return 0
    if not args.out:
        raise ConfigError("--out DIR is required")
    from pathlib import Path

    from balm.experiments.runfolder import LAST, is_run_folder
    from balm.experiments.trainer import train
    from balm.io import staging_dir

    out = Path(args.out)
    resumable = args.resume and (staging_dir(out) / LAST).is_file()
    if out.is_dir() and any(out.iterdir()) and not args.overwrite and not resumable and is_run_folder(out):
        raise ConfigError("already holds a run; pass --overwrite to replace it when the new run ends (or another "
                          "--out)", source=str(out))
    log = None if args.quiet else (lambda s: print(s, file=sys.stderr, flush=True))
    try:  # the dataset checks and the model construction fail before anything is written
        result = train(cfg, args.out, quiet=args.quiet, log=log, resume=args.resume, overwrite=args.overwrite)
    except ConfigError as exc:
        raise with_source(exc, args.config) from None
    if result["status"] == "diverged":
        dv = result["diverged"]
        print(f"balm train: diverged at epoch {dv['epoch']} step {dv['step']}: {dv['what']} is not finite; "
              f"recorded in {args.out}/result.json (status diverged)", file=sys.stderr)
        return 3
    t, d = result["test"], result["dev"]
    print(f"best epoch {result['best_epoch']} (of 0-{result['epochs_run'] - 1}): dev acc {d['acc']:.4f} "
          f"w-f1 {d['wf1']:.4f} | test acc {t['acc']:.4f} w-f1 {t['wf1']:.4f}")
    print(f"results in {args.out}/result.json")
    return 0

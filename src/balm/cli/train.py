"""``balm train``: train one configuration and write its result folder."""

from __future__ import annotations

import json
import sys


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train",
        help="train one configuration (backbone + balancing method) and evaluate it",
        description="Train one configuration. Writes DIR/result.json (last), checkpoint.pt, stats.jsonl, "
        "tsne.npz and TensorBoard events in DIR/tb. Keys: docs/experiments.md or --list-keys.",
    )
    p.add_argument("--config", metavar="FILE", help="YAML or JSON config file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a key (value parsed as YAML; dotted keys reach into mappings); repeatable")
    p.add_argument("--out", metavar="DIR", help="output folder")
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
    from balm.experiments.trainer import train

    log = None if args.quiet else (lambda s: print(s, file=sys.stderr, flush=True))
    try:  # the dataset checks and the model construction fail before DIR is created
        result = train(cfg, args.out, quiet=args.quiet, log=log)
    except ConfigError as exc:
        raise with_source(exc, args.config) from None
    t, d = result["test"], result["dev"]
    print(f"best epoch {result['best_epoch'] + 1}: dev acc {d['acc']:.4f} w-f1 {d['wf1']:.4f} | "
          f"test acc {t['acc']:.4f} w-f1 {t['wf1']:.4f}")
    print(f"results in {args.out}/result.json")
    return 0

"""The ``balm`` command line: one sub-command module per concept."""

from __future__ import annotations

import argparse
import importlib
import sys

from balm.features.deps import MissingDependency

# sub-command modules; each defines ``register(subparsers)``
COMMANDS = ["balm.cli.data", "balm.cli.features", "balm.cli.train", "balm.cli.sweep", "balm.cli.report",
            "balm.cli.demo"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="balm", description="Balanced multimodal learning under imbalanced missing rates.")
    sub = parser.add_subparsers(dest="command", required=True)
    for mod in COMMANDS:
        importlib.import_module(mod).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, KeyError, MissingDependency) as exc:
        print(f"balm {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

"""The ``balm`` command line: one sub-command module per concept.

Exit status: 0 done; 2 an error (one line on stderr naming the file, key or run and what was
expected; ``--debug`` or ``BALM_DEBUG=1`` shows the traceback instead); 3 a run diverged
(``balm train``, ``balm sweep``); 1 a sweep run failed; 130 interrupted (Ctrl-C); 141 the
reader of stdout went away (``balm data info | head``), as for a shell command killed by SIGPIPE.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from balm.features.deps import MissingDependency

# sub-command modules; each defines ``register(subparsers)``
COMMANDS = ["balm.cli.data", "balm.cli.features", "balm.cli.train", "balm.cli.sweep", "balm.cli.report",
            "balm.cli.demo"]

# errors that are about the input or the environment: their message is the whole story
_PLAIN = (ValueError, OSError, MissingDependency)


def build_parser() -> argparse.ArgumentParser:
    import balm

    parser = argparse.ArgumentParser(prog="balm", description="Balanced multimodal learning under imbalanced missing rates.")
    parser.add_argument("--version", action="version", version=f"balm {balm.__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of an error (also BALM_DEBUG=1); may follow the sub-command")
    sub = parser.add_subparsers(dest="command", required=True)
    for mod in COMMANDS:
        importlib.import_module(mod).register(sub)
    return parser


def error_line(exc: BaseException) -> str:
    """One line saying what went wrong: the message of an input error, else the type and message."""
    text = str(exc) if isinstance(exc, _PLAIN) else f"{type(exc).__name__}: {exc}"
    if isinstance(exc, KeyError) and not isinstance(exc, _PLAIN):
        text = f"missing key {exc}"
    text = " ".join(text.split()) or type(exc).__name__
    return text


def _debug_requested(argv: list[str]) -> bool:
    return "--debug" in argv or os.environ.get("BALM_DEBUG", "") not in ("", "0")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = _debug_requested(argv)
    argv = [a for a in argv if a != "--debug"]
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"balm {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader of stdout is gone: point stdout at /dev/null so the final flush is silent
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), sys.stdout.fileno())
        return 141
    except Exception as exc:  # noqa: BLE001 - every error ends as one line (and exit 2) unless --debug
        if debug:
            raise
        hint = "" if isinstance(exc, _PLAIN) else " (run with --debug for the traceback)"
        print(f"balm {args.command}: error: {error_line(exc)}{hint}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

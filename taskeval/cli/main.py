"""The ``taskeval`` command: ``taskeval COMMAND [options] [key=value ...]``.

Each command lives in its own module of this package with a ``register(subparsers)`` function.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from taskeval import __version__
from taskeval.errors import TaskevalError

COMMAND_MODULES = (
    "taskeval.cli.data_cmd",
    "taskeval.cli.models_cmd",
    "taskeval.cli.fuse_cmd",
    "taskeval.cli.detect_cmd",
    "taskeval.cli.segment_cmd",
    "taskeval.cli.quality_cmd",
    "taskeval.cli.joint_cmd",
    "taskeval.cli.benchmark_cmd",
    "taskeval.cli.report_cmd",
    "taskeval.cli.status_cmd",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="taskeval",
        description="Downstream-task evaluation of infrared-visible image fusion.",
        epilog="Options of the form key=value after a command override its configuration (e.g. det.epochs=3).",
    )
    parser.add_argument("--version", action="version", version=f"taskeval {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--plugin", action="append", default=[], metavar="FILE.py",
                        help="import a Python file that registers fusion models (repeatable)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


# two-word commands spelled as in the docs ("taskeval fuse train ...") map to their parser names
ALIASES = {("fuse", "train"): "fuse-train"}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    for (a, b), name in ALIASES.items():
        if argv[:2] == [a, b]:
            argv = [name, *argv[2:]]
    parser = build_parser()
    # key=value overrides may also follow the options (`benchmark quick --out x det.epochs=3`): argparse
    # stops filling a positional list at the first option, so the rest arrive as unknown arguments
    args, unknown = parser.parse_known_args(argv)
    stray = [a for a in unknown if a.startswith("-") or "=" not in a or not hasattr(args, "overrides")]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    if unknown:
        args.overrides = list(args.overrides) + unknown
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    if args.command is None:
        parser.print_help()
        return 2
    try:
        from taskeval.registry import load_plugin_file

        for plugin in args.plugin:
            load_plugin_file(plugin)
        return int(args.func(args) or 0)
    except TaskevalError as exc:
        print(f"taskeval {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        how = "with --resume" if hasattr(args, "resume") else "again"
        print(f"taskeval {args.command}: interrupted; finished work is kept, run the same command {how} to "
              "continue", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""Helpers shared by the CLI command modules."""

from __future__ import annotations

import argparse
import json
import sys

from taskeval.errors import TaskevalError


def planned(sub, name: str, help_text: str, what: str, issue: int) -> argparse.ArgumentParser:
    """Register a command that is not implemented yet: it says what it will do and exits with status 2."""
    p = sub.add_parser(name, help=f"{help_text} (not yet implemented)", description=what)
    p.add_argument("rest", nargs=argparse.REMAINDER)

    def run(args) -> int:
        raise TaskevalError(f"'{name}' is not implemented yet (tracked in issue {issue}). It will: {what}")

    p.set_defaults(func=run)
    return p


def add_overrides(p: argparse.ArgumentParser) -> None:
    p.add_argument("overrides", nargs="*", metavar="key=value", help="configuration overrides")


def print_json(obj) -> None:
    json.dump(obj, sys.stdout, indent=1, default=str)
    sys.stdout.write("\n")

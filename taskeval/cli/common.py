"""Helpers shared by the CLI command modules."""

from __future__ import annotations

import argparse
import json
import math
import sys

from taskeval.errors import ConfigError

DEVICE_HELP = "auto (the GPU where there is one, else cpu), cpu, cuda, cuda:N or N (default auto)"


def add_overrides(p: argparse.ArgumentParser) -> None:
    p.add_argument("overrides", nargs="*", metavar="key=value", help="configuration overrides")


def _json_safe(obj):
    """NaN and infinities (a class absent everywhere, the std of one seed) become null: valid JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


def print_json(obj) -> None:
    """Print ``obj`` as strict JSON (NaN -> null; unknown objects as strings)."""
    json.dump(_json_safe(obj), sys.stdout, indent=1, default=str, allow_nan=False)
    sys.stdout.write("\n")


def parse_seeds(text: str | None, default: int) -> list[int]:
    """``--seeds 0,1,2`` -> [0, 1, 2]; empty -> [default]; ConfigError for non-integers or repeats."""
    if not text:
        return [default]
    try:
        seeds = [int(s) for s in str(text).replace(",", " ").split()]
    except ValueError:
        raise ConfigError(f"--seeds expects integers like 0,1,2, got {text!r}") from None
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds lists a seed twice: {text!r}")
    return seeds


def parse_pairs(items: list[str] | None, flag: str) -> dict[str, str]:
    """Repeated ``--flag NAME=VALUE`` -> {NAME: VALUE}; ConfigError for an item without ``=``."""
    out = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"{flag} expects NAME=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        out[k.strip()] = v.strip()
    return out

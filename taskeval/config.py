"""Typed configuration: frozen dataclasses merged as defaults < YAML file < ``key=value`` overrides.

Unknown keys are rejected with a suggestion, values are converted to the field's type (int, float, bool,
str, Path, tuples from ``a,b,c``, Literal choices, Optional), and nested dataclasses are addressed with
dots (``det.epochs=3``). Below the CLI, functions take the resulting plain objects.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

import yaml

from taskeval.errors import ConfigError
from taskeval.registry import suggest

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _convert(value: Any, tp: Any, key: str) -> Any:
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = get_args(tp)
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null", "")):
            if type(None) in args:
                return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{key}: invalid value {value!r}")
    if origin is Literal:
        choices = get_args(tp)
        if value not in choices:
            hint = suggest(str(value), [str(c) for c in choices])
            raise ConfigError(f"{key}: {value!r} is not one of {list(choices)}{hint}")
        return value
    if origin in (tuple, list):
        (item,) = get_args(tp)[:1] or (str,)
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        elif not isinstance(value, (list, tuple)):
            value = [value]
        return tuple(_convert(v, item, key) for v in value)
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if str(value).lower() in _TRUE:
            return True
        if str(value).lower() in _FALSE:
            return False
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    if tp in (int, float):
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected {tp.__name__}, got {value!r}")
        try:
            converted = tp(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: expected {tp.__name__}, got {value!r}") from None
        if tp is int and isinstance(value, float) and value != converted:
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return converted
    if tp is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return str(value)
    if tp is Path:
        return Path(str(value))
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return build(tp, value, prefix=f"{key}.")
    return value


def build(cls, values: dict, prefix: str = ""):
    """Instantiate dataclass ``cls`` from a (nested) dict, checking keys and types."""
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = [k for k in values if k not in fields]
    if unknown:
        k = unknown[0]
        raise ConfigError(f"unknown key {prefix}{k!r}{suggest(k, fields)}; valid keys: "
                          f"{', '.join(prefix + f for f in fields)}")
    kwargs = {k: _convert(v, hints[k], prefix + k) for k, v in values.items()}
    return cls(**kwargs)


def _parse_scalar(text: str) -> Any:
    try:
        return yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        return text


def parse_overrides(items: list[str]) -> dict:
    """``["a=1", "det.epochs=3"]`` -> ``{"a": 1, "det": {"epochs": 3}}``.

    Values are parsed as YAML: ``seeds=[0,1]`` and ``seeds=0,1`` (a string the dataclass fields split at
    commas) both give seeds 0 and 1; ``{...}`` gives a mapping."""
    out: dict = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        key, raw = item.split("=", 1)
        if not key:
            raise ConfigError(f"override {item!r} has no key")
        node = out
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r} conflicts with another override of {p!r}")
        node[parts[-1]] = _parse_scalar(raw)
    return out


def deep_merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for k, v in update.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def to_dict(obj) -> Any:
    """Dataclass (nested) -> plain YAML/JSON-able dict."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj


def read_yaml_mapping(path: str | Path, what: str = "config") -> dict:
    """The top-level mapping of a YAML file (empty file -> ``{}``); ConfigError if missing or not a mapping."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} file not found: {path}")
    try:
        loaded = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML ({exc})") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return loaded


def load_config(cls, path: str | Path | None = None, overrides: list[str] | None = None,
                base: dict | None = None):
    """defaults (``cls``) < ``base`` < YAML file < ``key=value`` overrides -> instance of ``cls``."""
    values: dict = dict(base or {})
    if path is not None:
        values = deep_merge(values, read_yaml_mapping(path))
    values = deep_merge(values, parse_overrides(overrides or []))
    return build(cls, values)


def load_preset(cls, presets: dict, spec: str | Path, overrides: list[str] | None = None, what: str = "protocol",
                default_base: str | None = None):
    """A named preset, or a YAML file of ``cls`` fields, then ``key=value`` overrides.

    A YAML file may name its base with ``preset: NAME`` (default ``default_base``, else the class
    defaults); its ``name`` defaults to the file's stem. Overrides keep the preset's name (result rows
    tell overridden presets apart by their protocol hash, not by the name).

    Raises:
        ConfigError: unknown preset (with a suggestion), missing or invalid file, unknown key, wrong type.
    """
    from dataclasses import asdict

    from taskeval.registry import suggest

    text = str(spec)
    if text in presets:
        return load_config(cls, None, overrides, base=asdict(presets[text]))
    path = Path(text)
    if path.suffix not in (".yaml", ".yml") and not path.is_file():
        raise ConfigError(f"unknown {what} {text!r}{suggest(text, presets)}; presets: {', '.join(presets)}, "
                          "or a YAML file")
    raw = read_yaml_mapping(path, what)
    base_name = raw.pop("preset", default_base)
    if base_name is not None and base_name not in presets:
        raise ConfigError(f"{path}: unknown preset {base_name!r}{suggest(str(base_name), presets)}")
    base = asdict(presets[base_name]) if base_name is not None else {}
    return load_config(cls, None, overrides, base={**base, "name": path.stem, **raw})

"""Dataset cards: YAML files naming a dataset's format, root, classes, palette, splits and expected counts.

Built-in cards live in the repository's ``data/`` folder (installed as the package ``taskeval_data``);
a card can also be any YAML path. ``root`` may use ``${VAR}`` or ``${VAR:-default}`` environment
expansion, and relative roots are resolved against the card file's folder.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path

import yaml

from taskeval.errors import ConfigError
from taskeval.registry import suggest

FORMATS = ("msrs", "mfnet", "m3fd", "llvip", "fmb", "folders")
CARD_KEYS = {
    "name", "format", "description", "root", "tasks", "det_classes", "seg_classes", "palette",
    "ignore_index", "split_files", "expected_counts", "options", "source", "licence", "notes",
    "size_policy", "box_policy",
}
SIZE_POLICIES = ("error", "resize-ir")
BOX_POLICIES = ("clip", "error")

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_env(text: str) -> str:
    """Expand ``${VAR}`` and ``${VAR:-default}``; an unset variable without default is an error."""

    def sub(m: re.Match) -> str:
        val = os.environ.get(m.group(1))
        if val:
            return val
        if m.group(2) is not None:
            return m.group(2)
        raise ConfigError(f"environment variable {m.group(1)} is not set (needed by {text!r})")

    return _ENV.sub(sub, text)


@dataclass(frozen=True)
class DatasetCard:
    """What taskeval knows about a dataset before reading it.

    Attributes:
        name: short name ("msrs", "m3fd", ...).
        format: reader name, one of :data:`FORMATS`.
        root: dataset folder on disk (None until the user sets it).
        tasks: subset of ("detection", "segmentation").
        det_classes: detection class names; the YOLO class id is the index.
        seg_classes: segmentation class names; the mask pixel value is the index.
        palette: RGB colour per segmentation class.
        ignore_index: mask value that is not scored.
        split_files: split name -> text file of ids (one per line). Relative paths are looked up in
            the card's folder; ``@root/...`` is relative to the dataset root.
        expected_counts: split name -> number of pairs the full public dataset has.
        options: reader-specific settings (folder names, label layout...).
        size_policy: IR and visible of different sizes: "error" (default) or "resize-ir" (IR resized to the
            visible size, logged). Every command that reads the dataset honours it.
        box_policy: boxes past the image border: "clip" (default, logged) or "error".
    """

    name: str
    format: str
    root: Path | None = None
    description: str = ""
    tasks: tuple[str, ...] = ()
    det_classes: tuple[str, ...] = ()
    seg_classes: tuple[str, ...] = ()
    palette: tuple[tuple[int, int, int], ...] = ()
    ignore_index: int = 255
    split_files: dict = field(default_factory=dict)
    expected_counts: dict = field(default_factory=dict)
    options: dict = field(default_factory=dict)
    source: str = ""
    licence: str = ""
    notes: str = ""
    size_policy: str = "error"
    box_policy: str = "clip"
    card_dir: Path | None = None

    def with_root(self, root: str | Path | None) -> "DatasetCard":
        return self if root is None else replace(self, root=Path(root).expanduser())

    def split_file(self, split: str) -> Path | None:
        rel = self.split_files.get(split)
        if rel is None:
            return None
        if rel.startswith("@root/"):
            if self.root is None:
                raise ConfigError(f"card {self.name!r}: split file {rel} needs a dataset root")
            return self.root / rel[len("@root/"):]
        return (self.card_dir or builtin_card_dir()) / rel

    def require_root(self) -> Path:
        if self.root is None:
            raise ConfigError(
                f"dataset card {self.name!r} has no root: pass --root DIR or data.root=DIR"
            )
        if not self.root.is_dir():
            raise ConfigError(f"dataset root for {self.name!r} not found: {self.root}")
        return self.root


def builtin_card_dir() -> Path:
    return Path(str(resources.files("taskeval_data")))


def builtin_cards() -> list[str]:
    return sorted(p.stem for p in builtin_card_dir().glob("*.yaml"))


def parse_card(raw: dict, card_dir: Path | None, origin: str) -> DatasetCard:
    if not isinstance(raw, dict):
        raise ConfigError(f"{origin}: a dataset card must be a YAML mapping")
    unknown = sorted(set(raw) - CARD_KEYS)
    if unknown:
        raise ConfigError(f"{origin}: unknown card key(s) {unknown}{suggest(unknown[0], CARD_KEYS)}")
    for key in ("name", "format"):
        if key not in raw:
            raise ConfigError(f"{origin}: card needs {key!r}")
    if raw["format"] not in FORMATS:
        raise ConfigError(f"{origin}: unknown format {raw['format']!r}{suggest(raw['format'], FORMATS)}; "
                          f"known: {', '.join(FORMATS)}")
    seg = tuple(raw.get("seg_classes") or ())
    palette = tuple(tuple(int(c) for c in rgb) for rgb in (raw.get("palette") or ()))
    if seg and palette and len(palette) != len(seg):
        raise ConfigError(f"{origin}: palette has {len(palette)} colours for {len(seg)} classes")
    for key, allowed in (("size_policy", SIZE_POLICIES), ("box_policy", BOX_POLICIES)):
        if key in raw and raw[key] not in allowed:
            raise ConfigError(f"{origin}: {key} must be one of {list(allowed)}, got {raw[key]!r}")
    root = raw.get("root")
    if root is not None:
        root = expand_env(str(root)).strip()
        root = Path(root).expanduser() if root else None
    if root is not None:
        if not root.is_absolute() and card_dir is not None:
            root = (card_dir / root).resolve()
    return DatasetCard(
        name=str(raw["name"]), format=raw["format"], root=root, description=raw.get("description", ""),
        tasks=tuple(raw.get("tasks") or ()), det_classes=tuple(raw.get("det_classes") or ()),
        seg_classes=seg, palette=palette, ignore_index=int(raw.get("ignore_index", 255)),
        split_files=dict(raw.get("split_files") or {}), expected_counts=dict(raw.get("expected_counts") or {}),
        options=dict(raw.get("options") or {}), source=raw.get("source", ""), licence=raw.get("licence", ""),
        notes=raw.get("notes", ""), size_policy=raw.get("size_policy", "error"),
        box_policy=raw.get("box_policy", "clip"), card_dir=card_dir,
    )


SYNTH = "synth"  # the embedded synthetic dataset (see taskeval.data.synth)


def load_card(name_or_path: str | Path, root: str | Path | None = None) -> DatasetCard:
    """Load a built-in card by name (``"msrs"``) or a YAML file; ``root`` overrides the card's root.

    ``"synth"`` is the embedded synthetic dataset with default settings: generated (deterministically,
    once) into ``root``, else ``$TASKEVAL_SYNTH_DIR``, else ``runs/data/synth``.
    """
    if str(name_or_path) == SYNTH:
        from taskeval.data.synth import generate

        out = Path(root or os.environ.get("TASKEVAL_SYNTH_DIR", "runs/data/synth"))
        return load_card(generate(out, progress=False))
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        if not path.is_file():
            raise ConfigError(f"dataset card not found: {path}")
        card_dir = path.resolve().parent
    else:
        path = builtin_card_dir() / f"{name_or_path}.yaml"
        if not path.is_file():
            raise ConfigError(f"unknown dataset card {str(name_or_path)!r}"
                              f"{suggest(str(name_or_path), builtin_cards() + [SYNTH])}; built-in cards: "
                              f"{', '.join(builtin_cards() + [SYNTH])}; or give a path to a YAML card")
        card_dir = builtin_card_dir()
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML ({exc})") from None
    return parse_card(raw, card_dir, str(path)).with_root(root)

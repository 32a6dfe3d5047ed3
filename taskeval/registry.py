"""One small registry used for fusion models, task networks and metrics.

Factories are registered under an explicit name with metadata; duplicates raise, typos get a
"did you mean", :meth:`Registry.list` filters with shell wildcards, and third-party plug-ins are
loaded from a Python entry-point group or from a ``.py`` file.
"""

from __future__ import annotations

import difflib
import fnmatch
import hashlib
import importlib
import importlib.util
import sys
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Generic, TypeVar

from taskeval.errors import RegistryError

T = TypeVar("T")


def suggest(name: str, choices) -> str:
    """Return `` (did you mean 'x'?)`` for the closest choice, or an empty string."""
    close = difflib.get_close_matches(name, list(choices), n=3, cutoff=0.5)
    if not close:
        return ""
    return " (did you mean " + " or ".join(repr(c) for c in close) + "?)"


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    factory: Callable[..., T]
    meta: Any = None
    source: str = "builtin"


@dataclass
class Registry(Generic[T]):
    """A named collection of factories.

    Args:
        kind: what is registered, used in messages ("fusion model").
        entry_point_group: the ``importlib.metadata`` group scanned once for plug-ins.
    """

    kind: str
    entry_point_group: str | None = None
    builtin_modules: tuple[str, ...] = ()
    _entries: dict[str, Entry[T]] = field(default_factory=dict)
    _plugins_loaded: bool = False

    def register(self, name: str, factory: Callable[..., T], meta: Any = None, source: str = "builtin") -> None:
        if not name or any(c.isspace() for c in name):
            raise RegistryError(f"invalid {self.kind} name {name!r}: must be non-empty without spaces")
        if name in self._entries:
            raise RegistryError(
                f"{self.kind} {name!r} is already registered (from {self._entries[name].source}); "
                "choose another name"
            )
        self._entries[name] = Entry(name, factory, meta, source)

    def unregister(self, name: str) -> None:
        self._entries.pop(name, None)

    def get(self, name: str) -> Entry[T]:
        self.load_entry_points()
        try:
            return self._entries[name]
        except KeyError:
            raise RegistryError(
                f"unknown {self.kind} {name!r}{suggest(name, self._entries)}; "
                f"known: {', '.join(sorted(self._entries)) or 'none'}"
            ) from None

    def __contains__(self, name: str) -> bool:
        self.load_entry_points()
        return name in self._entries

    def list(self, pattern: str = "*") -> list[str]:
        self.load_entry_points()
        return sorted(n for n in self._entries if fnmatch.fnmatchcase(n, pattern))

    def load_entry_points(self) -> None:
        """Import the built-in modules, then every module advertised under the entry-point group (once).

        Built-ins are imported lazily so that ``import fusion_models`` stays cheap.
        """
        if self._plugins_loaded:
            return
        self._plugins_loaded = True
        for module in self.builtin_modules:
            importlib.import_module(module)
        if self.entry_point_group is None:
            return
        for ep in metadata.entry_points(group=self.entry_point_group):
            try:
                ep.load()
            except Exception as exc:  # a broken plug-in must not hide the built-ins
                raise RegistryError(f"plug-in {ep.name!r} ({ep.value}) failed to load: {exc}") from exc


def load_plugin_file(path: str | Path) -> None:
    """Import a user's ``.py`` file so that its ``@register_...`` decorators run."""
    path = Path(path)
    if not path.is_file():
        raise RegistryError(f"plug-in file not found: {path}")
    mod_name = f"taskeval_plugin_{path.stem}_{hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:6]}"
    if mod_name in sys.modules:
        return
    spec = importlib.util.spec_from_file_location(mod_name, path)
    if spec is None or spec.loader is None:
        raise RegistryError(f"cannot import plug-in file {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception:
        del sys.modules[mod_name]
        raise

"""Collecting dataset problems: raise at once (loading) or gather all of them (``taskeval data check``)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from taskeval.errors import DataError


@dataclass(frozen=True)
class Problem:
    kind: str          # short machine-readable category, e.g. "missing-partner"
    path: str          # the offending file (or folder)
    message: str
    severity: str = "error"   # "error" or "warning"

    def __str__(self) -> str:
        return f"[{self.severity}] {self.kind}: {self.path}: {self.message}"


@dataclass
class Problems:
    """Either raises :class:`DataError` on the first error (``collect=False``) or records everything."""

    collect: bool = False
    items: list[Problem] = field(default_factory=list)

    def error(self, kind: str, path: str | Path, message: str) -> None:
        p = Problem(kind, str(path), message, "error")
        if not self.collect:
            raise DataError(f"{path}: {message}")
        self.items.append(p)

    def warning(self, kind: str, path: str | Path, message: str) -> None:
        self.items.append(Problem(kind, str(path), message, "warning"))

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.items if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.items if p.severity == "warning"]

    def counts(self) -> Counter:
        return Counter((p.severity, p.kind) for p in self.items)

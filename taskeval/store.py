"""The benchmark's results store: one folder per finished cell, merged into one results table.

Layout of a run directory::

    RUN/config.yaml, provenance.json, taskeval.log
    RUN/cells/<cell-id>/cell.json     metadata, written LAST (its presence marks the cell finished)
    RUN/cells/<cell-id>/rows.csv      the cell's result rows (taskeval.results.Row)
    RUN/cells/<cell-id>/...           artefacts: detection gt.json + predictions.json (COCO);
                                      segmentation pred/<id>.png + per_image_confmat.npz;
                                      quality per_image.csv
    RUN/results.csv                   every row of every finished cell (rebuilt by merge())

A cell is (method, task, dataset, protocol, seed); its id is readable and ends with a hash of those
fields, so a re-run finds finished cells and skips them, a changed protocol makes new cells, and
several machines (``--shard i/n``) can write into one shared store without touching each other's files.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from taskeval.results import Row, read_rows, rows_to_csv
from taskeval.rundir import atomic_write_json, atomic_write_text


@dataclass(frozen=True)
class Cell:
    method: str
    task: str          # "detection" | "segmentation" | "quality"
    dataset: str
    protocol: str      # protocol id (name-hash); "-" for quality
    seed: int | None

    @property
    def id(self) -> str:
        digest = hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:8]
        safe = re.sub(r"[^A-Za-z0-9_.+-]", "_", self.method)
        seed = "" if self.seed is None else f"__s{self.seed}"
        return f"{self.task}__{safe}{seed}__{digest}"


class ResultsStore:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.cells_dir = self.root / "cells"

    def cell_dir(self, cell: Cell) -> Path:
        d = self.cells_dir / cell.id
        d.mkdir(parents=True, exist_ok=True)
        return d

    def is_done(self, cell: Cell) -> bool:
        return (self.cells_dir / cell.id / "cell.json").is_file()

    def finish(self, cell: Cell, rows: list[Row], meta: dict | None = None) -> None:
        """Record a finished cell: rows first, then ``cell.json`` (atomic), so a crash leaves no half cell."""
        d = self.cell_dir(cell)
        atomic_write_text(d / "rows.csv", rows_to_csv(rows))
        atomic_write_json(d / "cell.json", {**asdict(cell), "id": cell.id, "status": "done", **(meta or {})})

    def record_failure(self, cell: Cell, trace: str, line: str) -> None:
        """A cell that raised: ``error.txt`` (the traceback) and ``failed.json`` in its folder; its rows are
        never written, so it is computed again on the next run."""
        d = self.cell_dir(cell)
        atomic_write_text(d / "error.txt", trace)
        atomic_write_json(d / "failed.json", {**asdict(cell), "id": cell.id, "status": "failed", "error": line})

    def clear_failure(self, cell: Cell) -> None:
        d = self.cells_dir / cell.id
        for name in ("failed.json", "error.txt"):
            (d / name).unlink(missing_ok=True)

    def failed_cells(self) -> list[dict]:
        """``failed.json`` records of cells that raised and are not done since (with ``"dir"``)."""
        if not self.cells_dir.is_dir():
            return []
        out = []
        for p in sorted(self.cells_dir.glob("*/failed.json")):
            if (p.parent / "cell.json").is_file():
                continue
            meta = json.loads(p.read_text())
            meta["dir"] = str(p.parent)
            out.append(meta)
        return out

    def meta(self, cell: Cell) -> dict | None:
        """The ``cell.json`` record of a finished cell, None while it is not finished."""
        path = self.cells_dir / cell.id / "cell.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def stale(self, cells: list[Cell], inputs_of) -> list[tuple[Cell, dict, dict]]:
        """(cell, recorded inputs, inputs now) of every finished cell whose recorded ``inputs`` differ from
        ``inputs_of(cell)`` (what the cell would be computed from now); cells recorded without inputs are
        not judged."""
        out = []
        for cell in cells:
            meta = self.meta(cell)
            recorded = meta.get("inputs") if meta else None
            now = json.loads(json.dumps(inputs_of(cell)))
            if recorded is not None and recorded != now:
                out.append((cell, recorded, now))
        return out

    def stale_message(self, stale: list[tuple[Cell, dict, dict]], manifests=()) -> str:
        """Why finished cells cannot be reused, naming what changed per method (files, weights, settings)."""
        from taskeval.fingerprint import explain

        by_method: dict[str, str] = {}
        for cell, recorded, now in stale:
            by_method.setdefault(cell.method, explain(recorded, now, manifests))
        lines = "\n".join(f"  {m}: {why}" for m, why in by_method.items())
        return (f"{len(stale)} finished cell(s) in {self.root} were computed from other inputs than this command "
                f"gives:\n{lines}\nresults are never mixed or overwritten silently: choose another --out, or "
                f"delete those cells (e.g. {self.cells_dir / stale[0][0].id})")

    def done_cells(self) -> list[dict]:
        if not self.cells_dir.is_dir():
            return []
        out = []
        for p in sorted(self.cells_dir.glob("*/cell.json")):
            meta = json.loads(p.read_text())
            meta["dir"] = str(p.parent)
            out.append(meta)
        return out

    def rows(self) -> list[Row]:
        rows: list[Row] = []
        for meta in self.done_cells():
            rows.extend(read_rows(Path(meta["dir"]) / "rows.csv"))
        return rows

    def merge(self) -> Path:
        """Rebuild ``results.csv`` from every finished cell (also those written by other shards)."""
        path = self.root / "results.csv"
        atomic_write_text(path, rows_to_csv(self.rows()))
        return path


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``"2/4"`` -> (1, 4) zero-based; None -> None."""
    if not text:
        return None
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not m or not 1 <= int(m.group(1)) <= int(m.group(2)):
        raise ValueError(f"--shard must be i/n with 1 <= i <= n, got {text!r}")
    return int(m.group(1)) - 1, int(m.group(2))


def shard_cells(cells: list[Cell], shard: tuple[int, int] | None) -> list[Cell]:
    """The cells this machine computes: every n-th of the deterministic cell list."""
    if shard is None:
        return cells
    i, n = shard
    return [c for k, c in enumerate(cells) if k % n == i]

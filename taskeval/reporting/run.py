"""The run reader: what a run directory holds, read from the results store alone.

Layout (written by the runner, :mod:`taskeval.store`)::

    RUN/cells/<id>/cell.json     method, task, dataset, protocol, seed, id, status ("done" | "failed"), ...
    RUN/cells/<id>/rows.csv      the rows of a finished cell (never read for a failed one)
    RUN/cells/<id>/error.txt     why a failed cell failed
    RUN/tasks.json               {task name: TaskSpec.to_dict()} of every task of the run
    RUN/dataset.json             card, root, train_split, test_split of the run's dataset
    RUN/inputs/<hex>.json        the file manifest a cell's ``inputs.dataset`` names as ``files:<hex>``
    RUN/protocols.json, config.yaml (+ config.resumeK.yaml), provenance.json

A task's spec comes from ``RUN/tasks.json``; a run written before that file existed takes it from the
task registry (:func:`taskeval.tasks.get_task`, ``run_spec`` with the metric names its rows carry). A
task that is in neither is an error naming it: reporting never guesses what a metric means.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from taskeval.errors import ConfigError, DataError, RegistryError, TaskevalError
from taskeval.results import Row, read_rows
from taskeval.rundir import latest_config
from taskeval.stats import REFERENCE_METHODS
from taskeval.tasks.base import TaskSpec

LEGACY_HINT = ("it was written by `taskeval segment` before the results store (cells/<method>/<protocol>/"
               "seed<k>/rows.csv, no cell.json), a layout reports cannot read. Convert it by running the "
               "same `taskeval segment` command again with --out {path} --resume: its cells are computed "
               "again into the store (cells/<id>/cell.json); the old files are left as they are")


@dataclass(frozen=True)
class FailedCell:
    """A cell whose computation failed: listed in the report, its rows never read."""

    id: str
    method: str
    task: str
    dataset: str
    protocol: str
    seed: int | None
    error: str  # the last non-empty line of error.txt ("" when there is none)
    dir: str


@dataclass
class RunData:
    """What the reporting layer reads from a run directory.

    Attributes:
        path: the run directory.
        cells: metadata of every finished cell (``cell.json`` plus ``"dir"``).
        rows: every result row of the finished cells.
        method_order: methods in the order of ``config.yaml``'s ``methods`` (others appended, references
            first).
        specs: task name -> its spec in this run, in the run's task order.
        failed: the failed cells.
    """

    path: Path
    cells: list[dict]
    rows: list[Row]
    method_order: list[str]
    specs: dict[str, TaskSpec] = field(default_factory=dict)
    failed: list[FailedCell] = field(default_factory=list)
    _dataset: object = field(default=None, repr=False)
    cache: dict = field(default_factory=dict, repr=False)  # what later modules derive once per run

    @classmethod
    def open(cls, run_dir: str | Path) -> RunData:
        """Read a run directory.

        Raises:
            DataError: not a run directory, a run in the layout before the results store (with how to
                convert it), an unreadable ``cell.json`` / ``rows.csv`` / ``tasks.json``, or a task that
                is neither in ``tasks.json`` nor registered.
        """
        path = Path(run_dir)
        cells_dir = path / "cells"
        if not cells_dir.is_dir():
            raise DataError(f"{path} is not a run directory (no cells/ folder)")
        metas = sorted(cells_dir.glob("*/cell.json"))
        if not metas and any(cells_dir.glob("*/*/*/rows.csv")):
            raise DataError(f"{path}: " + LEGACY_HINT.format(path=path))
        cells, failed, rows = [], [], []
        for p in metas:
            meta = _read_json(p, "a cell record")
            meta["dir"] = str(p.parent)
            status = meta.get("status", "done")
            if status == "done":
                cells.append(meta)
                try:
                    rows.extend(read_rows(p.parent / "rows.csv"))
                except (OSError, KeyError, TypeError, ValueError) as exc:
                    raise DataError(f"{p.parent / 'rows.csv'}: cannot read the rows of a finished cell "
                                    f"({type(exc).__name__}: {exc})") from None
            elif status == "failed":
                failed.append(_failed(meta))
        for p in sorted(cells_dir.glob("*/failed.json")):  # the runner's record of a cell that raised
            if not (p.parent / "cell.json").is_file():
                meta = _read_json(p, "a failed-cell record")
                meta["dir"] = str(p.parent)
                failed.append(_failed(meta))
        configured: list[str] = []
        for m in latest_config(path).get("methods") or ():
            configured.append(str(m["name"]) if isinstance(m, dict) else str(m))
        seen = {c["method"] for c in cells} | {r.method for r in rows}
        rest = sorted(seen - set(configured), key=lambda m: (m not in REFERENCE_METHODS, m))
        order = [m for m in configured if m in seen] + rest
        return cls(path, cells, rows, order, load_specs(path, cells, rows), failed)

    # ---------------------------------------------------------------------------------------------- tasks
    @property
    def tasks(self) -> list[str]:
        """The tasks with finished cells or rows, in the run's task order."""
        have = {c["task"] for c in self.cells} | {r.task for r in self.rows}
        return [t for t in self.specs if t in have]

    def spec(self, task: str) -> TaskSpec:
        """The spec of ``task`` in this run.

        Raises:
            DataError: the run has no such task.
        """
        try:
            return self.specs[task]
        except KeyError:
            raise DataError(f"{self.path}: no task {task!r} in this run "
                            f"(tasks: {', '.join(self.specs) or 'none'})") from None

    # -------------------------------------------------------------------------------------------- methods
    def ordered(self, methods: Iterable[str]) -> list[str]:
        methods = set(methods)
        return [m for m in self.method_order if m in methods] + sorted(methods - set(self.method_order))

    def task_cells(self, task: str, protocol: str | None = None, seed: int | None = None,
                   methods: Sequence[str] | None = None) -> dict[str, dict]:
        """method -> the one finished cell of ``task`` an image grid shows, in method order: the
        :func:`default_protocol` unless ``protocol`` is given, the lowest seed unless ``seed`` is given."""
        cells = [c for c in self.cells if c["task"] == task]
        if not cells:
            return {}
        protocol = protocol if protocol is not None else default_protocol(c["protocol"] for c in cells)
        by_method: dict[str, dict] = {}
        for c in sorted(cells, key=lambda c: (c["seed"] is None, c["seed"] or 0)):
            if c["protocol"] == protocol and (seed is None or c["seed"] == seed):
                by_method.setdefault(c["method"], c)
        if methods is not None:
            unknown = [m for m in methods if m not in by_method]
            if unknown:
                raise ConfigError(f"no finished {task} cell for method(s) {unknown} (protocol {protocol}"
                                  f"{'' if seed is None else f', seed {seed}'}); have: {sorted(by_method)}")
            return {m: by_method[m] for m in methods}
        return {m: by_method[m] for m in self.ordered(by_method)}

    def group_cells(self, task: str, dataset: str, protocol: str) -> list[dict]:
        """The finished cells of one table group (task, dataset, protocol), in cell-id order."""
        group = (task, dataset, protocol)
        return [c for c in self.cells if (c["task"], c["dataset"], c["protocol"]) == group]

    # ------------------------------------------------------------------------------------------- dataset
    @property
    def dataset_record(self) -> dict:
        """``RUN/dataset.json`` (card, root, train_split, test_split); empty when absent."""
        if "dataset.json" not in self.cache:
            f = self.path / "dataset.json"
            self.cache["dataset.json"] = _read_json(f, "the dataset record") if f.is_file() else {}
        return self.cache["dataset.json"]

    def test_fingerprints(self, task: str, dataset: str, protocol: str) -> list[str]:
        """The ``files:<hex>`` digests of the test split that the group's cells record (``inputs.dataset``
        under ``dataset.json``'s ``test_split``), sorted; empty when not recorded."""
        split = self.dataset_record.get("test_split")
        found = {((c.get("inputs") or {}).get("dataset") or {}).get(split)
                 for c in self.group_cells(task, dataset, protocol)} if split else set()
        return sorted(str(f) for f in found if f)

    def manifest(self, fingerprint: str) -> dict | None:
        """The file manifest ``RUN/inputs/<hex>.json`` of a ``files:<hex>`` digest (None when not kept)."""
        from taskeval.fingerprint import MANIFEST_PREFIX

        if not fingerprint.startswith(MANIFEST_PREFIX):
            return None
        f = self.path / "inputs" / f"{fingerprint[len(MANIFEST_PREFIX):]}.json"
        try:
            out = json.loads(f.read_text())
        except (OSError, json.JSONDecodeError):
            return None
        return out if isinstance(out, dict) else None

    def card(self):
        """The dataset card named by ``RUN/dataset.json`` (:class:`taskeval.data.DatasetCard`), None when
        there is no record or the card cannot be loaded here (a card file of another machine)."""
        if "card" not in self.cache:
            from taskeval.data import load_card

            name = self.dataset_record.get("card")
            try:  # "synth" alone would generate the dataset: runs record the generated card's path instead
                self.cache["card"] = load_card(name) if name and name != "synth" else None
            except (TaskevalError, OSError, ValueError):
                self.cache["card"] = None
        return self.cache["card"]

    def dataset(self):
        """The test split named by ``RUN/dataset.json`` (:class:`taskeval.data.PairedDataset`, IR resized to
        the visible size for display)."""
        if self._dataset is None:
            from taskeval.data import PairedDataset, load_card

            spec_path = self.path / "dataset.json"
            if not spec_path.is_file():
                raise DataError(f"{spec_path}: missing; the image grids need the dataset of the run")
            spec = _read_json(spec_path, "the dataset record")
            root = spec.get("root")
            try:
                card = load_card(spec["card"], None if root in (None, "None") else root)
                self._dataset = PairedDataset(card, spec.get("test_split", "test"), size_policy="resize-ir")
            except (ConfigError, KeyError) as exc:  # e.g. a report made on a machine without the dataset
                raise DataError(f"the dataset of the run ({spec_path}) is not available: {exc}") from None
        return self._dataset


def default_protocol(protocols: Iterable[str]) -> str:
    """The protocol figures show by default: not a ``fixed:`` screening, most cells, then by name."""
    counts: dict[str, int] = {}
    for p in protocols:
        counts[p] = counts.get(p, 0) + 1
    if not counts:
        raise DataError("no protocol to choose from (no rows or cells)")
    return min(counts, key=lambda p: (p.startswith("fixed:"), -counts[p], p))


# ------------------------------------------------------------------------------------------------ specs
def load_specs(path: Path, cells: Sequence[dict], rows: Sequence[Row]) -> dict[str, TaskSpec]:
    """Task name -> spec for every task of ``RUN/tasks.json`` and of the cells and rows.

    Order: that of ``tasks.json``, then the registry's (built-ins first), then first appearance.

    Raises:
        DataError: an unreadable or invalid ``tasks.json``, or a task of the cells/rows that is neither
            in it nor registered in this process.
    """
    specs: dict[str, TaskSpec] = {}
    f = path / "tasks.json"
    if f.is_file():
        raw = _read_json(f, "the task specs")
        for name, d in raw.items():
            try:
                specs[name] = TaskSpec.from_dict(d)
            except (TypeError, KeyError, ValueError, AttributeError) as exc:
                raise DataError(f"{f}: the spec of task {name!r} is not valid "
                                f"({type(exc).__name__}: {exc})") from None
            if specs[name].name != name:
                raise DataError(f"{f}: the spec under {name!r} is called {specs[name].name!r}")
    found = list(dict.fromkeys([c["task"] for c in cells] + [r.task for r in rows]))
    missing = [t for t in found if t not in specs]
    if missing:
        from taskeval.tasks import list_tasks

        registered = list_tasks()
        for name in sorted(missing, key=lambda t: (t not in registered, registered.index(t) if t in registered
                                                   else found.index(t))):
            specs[name] = registered_spec(path, name, cells, rows)
    return specs


def registered_spec(path: Path, task: str, cells: Sequence[dict], rows: Sequence[Row]) -> TaskSpec:
    """The spec of ``task`` from the registry, for a run without ``tasks.json``: ``run_spec`` with the
    metric names its cells and rows carry, in the order of the task's default spec."""
    from taskeval.tasks import get_task, list_tasks

    try:
        adapter = get_task(task)
    except RegistryError:
        raise DataError(f"{path}: task {task!r} of its cells is neither in {path / 'tasks.json'} nor "
                        f"registered in this process (registered: {', '.join(list_tasks())}); load its "
                        "plug-in (--plugin FILE or its entry point) to report this run") from None
    names = [m for c in cells if c["task"] == task for m in c.get("metrics") or ()]
    names = list(dict.fromkeys(names + [r.metric for r in rows if r.task == task]))
    try:
        default = adapter.run_spec({})
        position = {m.name: k for k, m in enumerate(default.metrics)}
        names.sort(key=lambda m: position.get(m, len(position)))  # stable: unknown names keep their order
        return adapter.run_spec({"metrics": names}) if names else default
    except (ConfigError, RegistryError) as exc:
        raise DataError(f"{path}: the {task} rows do not fit the registered task {task!r}: {exc}") from None


# ---------------------------------------------------------------------------------------------- helpers
def _read_json(path: Path, what: str) -> dict:
    try:
        out = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: cannot read {what} ({exc})") from None
    if not isinstance(out, dict):
        raise DataError(f"{path}: {what} must be a JSON object, got {type(out).__name__}")
    return out


def _failed(meta: dict) -> FailedCell:
    error = ""
    path = Path(meta["dir"]) / "error.txt"
    if path.is_file():
        lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
        error = lines[-1] if lines else ""
    error = error or str(meta.get("error") or "")
    field_ = {k: str(meta.get(k, "?")) for k in ("method", "task", "dataset", "protocol")}
    return FailedCell(str(meta.get("id", Path(meta["dir"]).name)), field_["method"], field_["task"],
                      field_["dataset"], field_["protocol"], meta.get("seed"), error, meta["dir"])

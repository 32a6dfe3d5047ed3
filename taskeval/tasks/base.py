"""What a downstream task is to the harness: a :class:`TaskSpec` (data) and a :class:`Task` (behaviour).

The runner (:mod:`taskeval.runner`) calls only the :class:`Task` methods; tables, figures, statistics and
the report ask only the :class:`TaskSpec`, which the runner also writes into the run directory
(``RUN/tasks.json``), so a run can be reported in a process where a plug-in task is not imported.

Contract of a cell's evaluation (:meth:`Task.evaluate`): it writes its artefacts into the cell folder
and returns result rows (:class:`taskeval.results.Row`) whose ``metric`` names are among the spec's
metrics (``cls == ""`` for overall values, a class name for per-class values). :meth:`Task.evaluation` reads those artefacts back as per-image scores for
the paired bootstrap (:mod:`taskeval.stats`).
"""

from __future__ import annotations

import difflib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Protocol, Sequence

import numpy as np

from taskeval.errors import ConfigError


@dataclass(frozen=True)
class Metric:
    """One metric of a task.

    Attributes:
        name: the ``Row.metric`` value.
        higher_is_better: direction for ranks (bold / underline), radar axes and comparisons.
        percent: rows store a fraction in [0, 1]; tables and figures print 100x with one decimal.
        header: table header (default: ``name``).
        definition: one sentence for captions and the report.
        decimals: decimals printed when not ``percent``.
    """

    name: str
    higher_is_better: bool = True
    percent: bool = True
    header: str = ""
    definition: str = ""
    decimals: int = 3

    @property
    def label(self) -> str:
        return self.header or self.name


@dataclass(frozen=True)
class TaskSpec:
    """Everything the reporting layer needs to know about a task.

    Attributes:
        name: the ``Row.task`` value (``"detection"``).
        short: short name for config keys (``det_protocol``, ``det:``) and ``joint --task``.
        labels: label kind the dataset must provide (``"boxes"``, ``"masks"``) or None.
        grid: the example grid its cells' artefacts can be drawn as (``"boxes"``: COCO ``gt.json`` and
            ``predictions.json``; ``"masks"``: ``pred/<id>.png`` and ``per_image_confmat.npz``), or None.
        metrics: every metric its rows carry (overall rows have ``cls == ""``, per-class rows a class name).
        headline: summary-table columns; the first is the task's headline metric (comparisons,
            learned-nothing guard).
        per_class: the metric of the per-class breakdown (tables, bars), or None.
        class_columns: overall metrics shown after the per-class columns.
        radar: metrics drawn on the radar chart.
        trains: a network is trained per (method, seed); False: one cell per method, no seed.
        paired: metrics that have a paired bootstrap over test images (:meth:`Task.evaluation`).
        n_boot: default number of bootstrap replicates.
        distributed: training runs on every process under ``torchrun`` (DDP); otherwise rank 0 alone.
        caption: what the per-class table shows (definitions), for its caption.
        summary: what the summary table's columns of this task are, for its caption.
    """

    name: str
    short: str
    labels: str | None
    metrics: tuple[Metric, ...]
    headline: tuple[str, ...]
    per_class: str | None = None
    class_columns: tuple[str, ...] = ()
    radar: tuple[str, ...] = ()
    trains: bool = True
    paired: tuple[str, ...] = ()
    n_boot: int = 1000
    distributed: bool = False
    caption: str = ""
    summary: str = ""
    grid: str | None = None

    def __post_init__(self):
        names = [m.name for m in self.metrics]
        named = (*self.headline, *self.class_columns, *self.radar, *self.paired,
                 *((self.per_class,) if self.per_class else ()))
        unknown = [m for m in named if m not in names]
        if unknown:
            raise ConfigError(f"task {self.name!r}: metrics {unknown} are named but not among its metrics {names}")
        if not self.headline:
            raise ConfigError(f"task {self.name!r} needs a headline metric")

    @property
    def headline_metric(self) -> str:
        return self.headline[0]

    def metric(self, name: str) -> Metric:
        """The :class:`Metric` called ``name``; ConfigError with a suggestion."""
        for m in self.metrics:
            if m.name == name:
                return m
        known = [m.name for m in self.metrics]
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"task {self.name!r} has no metric {name!r}{hint} (metrics: {', '.join(known)})")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping) -> "TaskSpec":
        d = dict(d)
        d["metrics"] = tuple(Metric(**m) for m in d["metrics"])
        for key in ("headline", "class_columns", "radar", "paired"):
            d[key] = tuple(d.get(key) or ())
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in known})


@dataclass(frozen=True)
class ChanceLevel:
    """What a task network that learned nothing scores on one cell's test data, for the reports'
    learned-nothing guard: a table whose every cell scores at most :attr:`threshold` ranks no method.

    Attributes:
        metric: the metric compared (the spec's headline metric).
        value: the score of such a network, in the rows' units (a fraction for a percent metric).
        margin: how far above ``value`` a score still counts as having learned nothing (same units).
        what: what ``value`` is, a phrase for captions and the report ("predicting 'unlabeled' everywhere").
    """

    metric: str
    value: float
    margin: float
    what: str

    @property
    def threshold(self) -> float:
        return self.value + self.margin


class Evaluation(Protocol):
    """Per-image scores of one cell, for the paired bootstrap.

    ``ids`` are the test images in the order of ``scores``; ``scores(idx)`` takes (B, N) indices into
    them (each row one resampled test set) and returns metric -> (B,) values; ``same_images(other)``
    raises :class:`taskeval.errors.DataError` when two cells were not scored on the same images and
    ground truth.
    """

    ids: list[str]

    def scores(self, idx: np.ndarray) -> dict[str, np.ndarray]: ...

    def same_images(self, other: "Evaluation") -> None: ...


@dataclass(frozen=True)
class Cost:
    """What one cell of a task costs, for ``taskeval benchmark --plan`` (:mod:`taskeval.estimate`).

    Attributes:
        train_gflop: forward GFLOP per training image (a training step counts 3x).
        infer_gflop: forward GFLOP per test image.
        epochs, batch, drop_last: passes over the training split, and whether each pass drops the last
            partial batch (see :meth:`train_images`).
        cpu_seconds_per_gflop: measured CPU seconds per forward GFLOP of this network family (2 cores).
        cpu_seconds_per_test_image: CPU time per test image that is not a network (e.g. quality metrics).
        checkpoint_bytes: size of one trained network on disk.
        bytes_per_test_image: artefacts written per test image (predicted label maps...).
        source: where the figures come from (printed beside them).
    """

    train_gflop: float = 0.0
    infer_gflop: float = 0.0
    epochs: int = 0
    batch: int = 1
    drop_last: bool = False
    cpu_seconds_per_gflop: float = 0.0
    cpu_seconds_per_test_image: float = 0.0
    checkpoint_bytes: float = 0.0
    bytes_per_test_image: float = 0.0
    source: str = ""

    def train_images(self, n: int) -> int:
        """Training images one training run sees for ``n`` training pairs."""
        per_epoch = (n // self.batch) * self.batch if self.drop_last else n
        return self.epochs * per_epoch


@dataclass
class Execution:
    """Where and how cells run; none of it changes a number on a given machine.

    Attributes:
        device: ``"cpu"``, ``"cuda:0"``, or a device list ``"0,1"`` (ultralytics' own DDP).
        tensor_device: the first device, for everything that is not ultralytics.
        threads: CPU threads (None: torch's default).
        workers: data-loader worker processes.
        progress: show progress bars of the task's own loops.
        state_dir: third-party state (ultralytics settings and font) of the run.
        backend: COCO scorer (``auto``, ``pycocotools``, ``faster-coco-eval``).
        rank, world: this process under ``torchrun`` (0 and 1 otherwise).
    """

    device: Any = "cpu"
    tensor_device: Any = "cpu"
    threads: int | None = None
    workers: int = 0
    progress: bool = False
    state_dir: Path | None = None
    backend: str = "auto"
    rank: int = 0
    world: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


@dataclass
class TrainContext:
    """What :meth:`Task.train` gets: the fused training images of one method, the split, a work folder."""

    method: str
    seed: int | None
    protocol: Any
    fused: Any              # taskeval.fusedset.FusedSet
    ds: Any                 # taskeval.data.PairedDataset
    work: Path
    exe: Execution


@dataclass
class EvalContext:
    """What :meth:`Task.evaluate` gets: the cell, its folder, the fused test images and the test split."""

    cell: Any               # taskeval.store.Cell
    cell_dir: Path
    protocol: Any
    fused: Any
    ds: Any
    exe: Execution
    note: str = ""
    options: dict = field(default_factory=dict)


class Task:
    """Base class of a task adapter; subclasses set :attr:`spec` and implement train/evaluate.

    Protocols are frozen dataclasses with a ``name``; :meth:`load_protocol` resolves a preset name or a
    YAML file plus overrides, :meth:`protocol_id` gives the ``Row.protocol`` string (name + hash of
    every result-relevant field), :meth:`with_seed` sets the training seed.
    """

    spec: TaskSpec

    # ---- protocols
    def load_protocol(self, preset: str | None, overrides: Mapping[str, Any] | None = None):
        raise NotImplementedError

    def protocol_id(self, protocol) -> str:
        raise NotImplementedError

    def with_seed(self, protocol, seed: int | None):
        return protocol

    def describe_protocol(self, protocol) -> dict:
        """Every field of a protocol, JSON-able (``RUN/protocols.json``, the report)."""
        from taskeval.config import to_dict

        return to_dict(protocol)

    def run_spec(self, options: Mapping[str, Any]) -> TaskSpec:
        """The spec of this task in a run with these task options (default: :attr:`spec`)."""
        return self.spec

    def cell_meta(self, options: Mapping[str, Any]) -> dict:
        """What a finished cell records about the task options it was computed with (``cell.json``)."""
        return {}

    def outdated(self, meta: Mapping[str, Any], options: Mapping[str, Any]) -> bool:
        """Whether a finished cell (its ``cell.json``) must be computed again for these options."""
        return False

    # ---- data and networks
    def check_data(self, ds) -> None:
        """Raise ConfigError/DataError before any training when ``ds`` cannot serve this task."""
        if self.spec.labels == "boxes" and not ds.has_boxes:
            raise ConfigError(f"task {self.spec.name!r} needs detection labels, but {ds.card.name}/{ds.split} "
                              "has none")
        if self.spec.labels == "masks" and not ds.has_masks:
            raise ConfigError(f"task {self.spec.name!r} needs segmentation masks, but {ds.card.name}/{ds.split} "
                              "has none")

    def train(self, ctx: TrainContext) -> Path:
        """Train the task network on ``ctx.fused`` (resumable inside ``ctx.work``); returns its checkpoint."""
        raise NotImplementedError

    def check_checkpoint(self, checkpoint: Path, ds, exe: Execution) -> None:
        """Raise ConfigError when a given checkpoint cannot be evaluated on ``ds`` (e.g. other classes)."""

    def evaluate(self, ctx: EvalContext, checkpoint: Path | None) -> list:
        """Predict and score ``ctx.fused`` (test split), write artefacts into ``ctx.cell_dir``, return rows."""
        raise NotImplementedError

    def cost(self, protocol, card, test_hw: tuple[int, int], options: Mapping[str, Any], costs: Mapping) -> Cost | None:
        """The cost of one cell (:class:`Cost`) under ``protocol`` on images of ``test_hw``; None: unknown.
        ``costs`` is the cost table (``taskeval/benchmarks/costs.yaml``) with measured reference figures."""
        return None

    def evaluation(self, cell_dir: str | Path) -> Evaluation:
        """Per-image scores of a finished cell (for :attr:`TaskSpec.paired`)."""
        raise NotImplementedError(f"task {self.spec.name!r} has no per-image evaluation")

    def chance_level(self, cell_dir: str | Path) -> ChanceLevel | None:
        """The headline score of a network that learned nothing, on the test data of a finished cell (its
        artefacts); None: the task has no such level and its tables are never flagged."""
        return None


def check_fractions(spec: TaskSpec, rows: Sequence) -> None:
    """Rows of percent metrics must hold fractions in [0, 1] (catches percentages stored by mistake)."""
    import math

    from taskeval.errors import DataError

    for r in rows:
        m = spec.metric(r.metric)
        if m.percent and math.isfinite(r.value) and not -1e-9 <= r.value <= 1 + 1e-9:
            raise DataError(f"{r.task} {r.metric} {r.cls or ''} of {r.method} is {r.value}: rows store fractions "
                            "in [0, 1] (a percentage stored by mistake?)")

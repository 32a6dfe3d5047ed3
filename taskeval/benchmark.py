"""The configuration of a run: dataset, methods, tasks, seeds, protocols (``BenchmarkConfig``).

Every run command builds one: ``taskeval benchmark`` from a YAML file (a built-in name such as ``quick``,
or a path) plus ``key=value`` overrides; ``detect``, ``segment``, ``quality`` and ``joint`` from their
options. :mod:`taskeval.runner` plans its cells and runs them.

Per task, ``protocols`` names a preset or YAML file and ``options`` overrides fields of it (or, for the
quality task, sets ``metrics``). The keys of earlier configs keep working and are read as those:
``<short>_protocol: NAME`` and ``<short>: {field: value}`` for every task (``det_protocol``, ``det``,
``seg_protocol``, ``seg``), and ``quality_metrics: [...]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from fusion_models import get_fusion_spec
from taskeval.config import build, deep_merge, parse_overrides, read_yaml_mapping
from taskeval.data.synth import SynthConfig
from taskeval.errors import ConfigError
from taskeval.fusion_train import FusionTrainConfig
from taskeval.reporting.options import FigureOptions

DEFAULT_TASKS = ("detection", "segmentation", "quality")


@dataclass(frozen=True)
class MethodEntry:
    """One method (a column of the benchmark).

    Attributes:
        name: a registered fusion method, or (with ``folder``) the display name of external results.
        weights: checkpoint path, ``"official"`` ($TASKEVAL_WEIGHTS_DIR), or ``"train"`` (train it here with
            the unsupervised fusion loss on the training split; reported as such).
        folder: precomputed fused images: a folder with one sub-folder per split (``<folder>/train``,
            ``<folder>/test``) holding ``<id>.png``; or a pattern containing ``{split}``.
        text_dir: per-image text embeddings for methods that take text.
        seed_weights: seed -> checkpoint, for weights trained once per seed (``joint``); a cell of seed s
            uses ``seed_weights[s]``.
        seeds: the seeds this method runs with (default: the config's).
        io: ``"official"`` or ``"float"`` for this method alone (default: the config's ``io``). With a
            derived name it puts both in one run, e.g. ``[seafusion, {name: seafusion@float, weights:
            official, io: float}]``: does the official 8-bit step change the task scores?
    """

    name: str
    weights: str | None = None
    folder: str | None = None
    text_dir: str | None = None
    seed_weights: dict = field(default_factory=dict)
    seeds: tuple[int, ...] | None = None
    io: str | None = None

    def weights_for(self, seed: int | None) -> str | None:
        if self.seed_weights:
            if seed not in self.seed_weights:
                raise ConfigError(f"method {self.name!r} has weights for seeds {sorted(self.seed_weights)}, not {seed}")
            return str(self.seed_weights[seed])
        return self.weights


@dataclass(frozen=True)
class DataEntry:
    card: str = "synth"
    root: str | None = None
    train_split: str = "train"
    test_split: str = "test"
    synth: SynthConfig = SynthConfig()


@dataclass(frozen=True)
class BenchmarkConfig:
    """A run: ``methods`` x ``tasks`` x ``seeds`` on one dataset.

    Attributes:
        protocols: task -> protocol preset or YAML file (default: each task's ``quick``).
        options: task -> protocol field overrides (quality: ``{"metrics": [...]}``).
        fixed: the fixed-network protocol: one task network per seed trained on this method's images and
            evaluated on every method (a screening; the papers retrain per method).
        fixed_checkpoint: task -> a given checkpoint evaluated on every method (no training, no seeds).
        cache: fusion cache folder (default ``RUN/fused``).
        launcher: launcher settings (``slurm: {...}``; see ``taskeval benchmark --launcher``).
        jobs: on a CPU, compute the cells in this many local processes, each with ``threads / jobs`` threads
            (:mod:`taskeval.launchers.local_jobs`; capped by the threads; never part of a result).
        io: how ports make their images (:mod:`taskeval.fusing`): ``"official"`` (default; the official
            test script's 8-bit image, a grey one recoloured with the visible chroma (luminance kept) for the
            task networks) or ``"float"`` (the harness's float pipeline, rounded once). Methods without
            official code use the float pipeline either way. Recorded in the cells of ports.
    """

    name: str = "benchmark"
    data: DataEntry = DataEntry()
    methods: tuple[MethodEntry, ...] = (MethodEntry("ir"), MethodEntry("vis"))
    tasks: tuple[str, ...] = DEFAULT_TASKS
    seeds: tuple[int, ...] = (0,)
    protocols: dict = field(default_factory=dict)
    options: dict = field(default_factory=dict)
    fusion_train: FusionTrainConfig = FusionTrainConfig()
    fixed: str | None = None
    fixed_checkpoint: dict = field(default_factory=dict)
    cache: str | None = None
    device: str = "auto"           # auto: the GPU where there is one (taskeval.devices)
    jobs: int = 1                  # local CPU processes side by side (taskeval.launchers.local_jobs)
    figures: FigureOptions = FigureOptions()
    launcher: dict = field(default_factory=dict)
    io: str = "official"

    def io_of(self, entry: MethodEntry) -> str:
        """The io of one method: its own, else the config's."""
        return entry.io or self.io

    def protocol_name(self, task: str) -> str | None:
        return self.protocols.get(task)

    def task_options(self, task: str) -> dict:
        return dict(self.options.get(task) or {})


def builtin_configs() -> dict[str, Path]:
    folder = Path(__file__).parent / "benchmarks"
    return {p.stem: p for p in sorted(folder.glob("*.yaml"))}


def _fold_task_keys(raw: dict) -> dict:
    """Read the per-task keys of earlier configs (``det_protocol``, ``det``, ``quality_metrics``...) into
    ``protocols`` and ``options``."""
    from taskeval.tasks import get_task, list_tasks

    raw = dict(raw)
    protocols = dict(raw.pop("protocols", None) or {})
    options = {k: dict(v or {}) for k, v in dict(raw.pop("options", None) or {}).items()}
    for name in list_tasks():
        short = get_task(name).spec.short
        if f"{short}_protocol" in raw:
            protocols.setdefault(name, raw.pop(f"{short}_protocol"))
        if short != name and isinstance(raw.get(short), dict):
            options[name] = {**raw.pop(short), **options.get(name, {})}
        elif short != name and short in raw:
            raise ConfigError(f"{short!r} must be a mapping of {name} protocol fields, got {raw[short]!r}")
    if "quality_metrics" in raw:
        metrics = raw.pop("quality_metrics")
        if isinstance(metrics, str):  # quality_metrics=EN,SD on the command line
            metrics = [m.strip() for m in metrics.split(",") if m.strip()]
        if metrics:
            options.setdefault("quality", {}).setdefault("metrics", list(metrics))
    raw["protocols"], raw["options"] = protocols, options
    return raw


def config_from_mapping(raw: dict, source: str = "config") -> BenchmarkConfig:
    """A :class:`BenchmarkConfig` from a (YAML) mapping, with the checks every run needs."""
    from taskeval.tasks import TASKS, list_tasks

    raw = _fold_task_keys(raw)
    methods = raw.get("methods")
    if isinstance(methods, str):
        methods = [m.strip() for m in methods.split(",") if m.strip()]
    if methods is not None:
        raw["methods"] = [m if isinstance(m, dict) else {"name": str(m)} for m in methods]
    cfg = build(BenchmarkConfig, raw)
    for t in (*cfg.tasks, *cfg.protocols, *cfg.options, *cfg.fixed_checkpoint):
        if t not in TASKS:
            from taskeval.registry import suggest

            raise ConfigError(f"{source}: unknown task {t!r}{suggest(t, list_tasks())}; tasks are "
                              f"{', '.join(list_tasks())}")
    if len(set(cfg.tasks)) != len(cfg.tasks):
        raise ConfigError(f"{source}: tasks listed twice: {list(cfg.tasks)}")
    names = [m.name for m in cfg.methods]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(f"{source}: methods listed twice: {dup}")
    if not cfg.methods or not cfg.tasks:
        raise ConfigError(f"{source}: a run needs at least one method and one task")
    if len(set(cfg.seeds)) != len(cfg.seeds) or not cfg.seeds:
        raise ConfigError(f"{source}: seeds must be distinct and at least one, got {list(cfg.seeds)}")
    for m in cfg.methods:
        if m.folder is None:
            get_fusion_spec(m.name)  # unknown names fail here, with a suggestion
        if m.seeds is not None and not set(m.seeds) <= set(cfg.seeds):
            raise ConfigError(f"{source}: method {m.name!r} names seeds {list(m.seeds)} outside the run's "
                              f"{list(cfg.seeds)}")
    from taskeval.fusing import IO_MODES

    for where, io in (("io", cfg.io), *((f"method {m.name!r}: io", m.io) for m in cfg.methods if m.io is not None)):
        if io not in IO_MODES:
            raise ConfigError(f"{source}: {where} must be one of {list(IO_MODES)}, got {io!r}")
    if cfg.fixed is not None and cfg.fixed not in names:
        raise ConfigError(f"{source}: fixed reference {cfg.fixed!r} is not one of the methods {names}")
    return cfg


def load_benchmark_config(source: str | Path, overrides: list[str] | None = None) -> BenchmarkConfig:
    """A YAML path or a built-in config name (``quick``), plus ``key=value`` overrides.

    ``methods`` may list plain names (``[ir, vis, average]``) or mappings (``{name: seafusion,
    weights: train}``); ``methods=ir,vis,max`` on the command line replaces the list.
    """
    path = builtin_configs().get(str(source), Path(source))
    if not path.is_file():
        from taskeval.registry import suggest

        raise ConfigError(f"benchmark config not found: {source}{suggest(str(source), builtin_configs())}; "
                          f"built-in: {', '.join(builtin_configs())}")
    raw = read_yaml_mapping(path, "benchmark config")
    raw.setdefault("name", path.stem)  # the default run folder is runs/benchmark-<name>
    # relative paths in the YAML are relative to the YAML's folder; on the command line, to the current one
    data = raw.get("data")
    if isinstance(data, dict) and data.get("root") and not Path(str(data["root"])).is_absolute():
        data["root"] = str((path.parent / data["root"]).resolve())
    # old-style task keys are read on each side first, so that command-line overrides win over the file
    raw = deep_merge(_fold_task_keys(raw), _fold_task_keys(parse_overrides(overrides or [])))
    return config_from_mapping(raw, str(path))

"""What every run command shares: its options, the run folder, the runner call, the closing summary.

``detect``, ``segment``, ``quality``, ``joint`` and ``benchmark`` only build a
:class:`~taskeval.benchmark.BenchmarkConfig` from their own options and hand it to :func:`execute`.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

from taskeval.benchmark import BenchmarkConfig, config_from_mapping
from taskeval.cli.common import DEVICE_HELP, parse_pairs, parse_seeds
from taskeval.config import to_dict
from taskeval.errors import ConfigError, TaskevalError
from taskeval.rundir import RunDir, atomic_write_text

log = logging.getLogger(__name__)
REFERENCE_METHODS = ("ir", "vis")


# ------------------------------------------------------------------------------------------- options
def add_execution_options(p, threads_help: str | None = None, device_default: str | None = "auto") -> None:
    """``--device --threads --workers --quiet --fail-fast``: how cells run (never part of a result)."""
    p.add_argument("--device", default=device_default, help=DEVICE_HELP + "; a list 0,1 trains detectors with "
                   "ultralytics' DDP" + ("" if device_default else "; default: the config's device"))
    p.add_argument("--threads", type=int, help=threads_help or "CPU threads (default: torch's default); use 1 on a "
                   "machine busy with other jobs (two threads on two busy cores trained 11x slower than one)")
    p.add_argument("--workers", type=int, default=0, help="data-loader worker processes (default 0)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--fail-fast", action="store_true",
                   help="stop at the first cell that raises (default: record it as failed and go on)")


IO_HELP = ("how ports make their images: 'official' (default) the official test script's 8-bit image (its "
           "truncation, min-max, colour round trip; a grey one recoloured with the visible chroma for the task "
           "networks, its luminance kept), 'float' the harness's float pipeline rounded once (what taskeval wrote "
           "before io existed); methods without official code use the float pipeline either way")


def add_io_option(p, default: str | None = "official") -> None:
    """``--io official|float`` (see :mod:`taskeval.fusing`); part of what the run's cells record."""
    from taskeval.fusing import IO_MODES

    p.add_argument("--io", choices=IO_MODES, default=default, help=IO_HELP)


def add_task_command_options(p, task: str, protocol_help: str) -> None:
    """The options of the one-task commands (``detect``, ``segment``)."""
    p.add_argument("--data", required=True, help="dataset card (built-in name, 'synth', or YAML path)")
    p.add_argument("--root", help="dataset folder (overrides the card's root)")
    p.add_argument("--methods", help="comma-separated fusion methods (ir and vis are always added)")
    p.add_argument("--no-refs", action="store_true", help="do not add the ir and vis reference rows")
    p.add_argument("--weights", action="append", metavar="METHOD=PATH",
                   help="fusion weights of a learned method: a file or 'official' (repeatable)")
    p.add_argument("--fused", action="append", metavar="NAME=DIR",
                   help="precomputed fused images (DIR/<split>/<id>.png, or all in DIR); adds NAME to the methods")
    p.add_argument("--protocol", default="quick", help=protocol_help)
    p.add_argument("--seeds", help="comma-separated training seeds (default: the protocol's seed, 0)")
    p.add_argument("--fixed", metavar="REF", help="fixed-network screening: train once per seed on REF's "
                   "fused images, evaluate every method with that network")
    p.add_argument("--fixed-checkpoint", metavar="PATH",
                   help="fixed-network screening with a given checkpoint (no training, no seeds)")
    p.add_argument("--train-split", default="train")
    p.add_argument("--test-split", default="test")
    p.add_argument("--cache", help="fusion cache folder (default <out>/fused)")
    p.add_argument("--out", help=f"run directory (default runs/{task}/<time>)")
    p.add_argument("--resume", action="store_true", help="continue --out; finished cells are kept")
    p.add_argument("--json", action="store_true", help="print the summary (mean and std over seeds) as JSON")
    add_io_option(p)
    add_execution_options(p)


def method_list(methods: str | None, no_refs: bool = False, extra: list[str] | None = None) -> list[str]:
    """Table order: ``ir``, ``vis`` (unless ``no_refs``), ``methods`` (comma-separated), then the names of
    ``extra`` (``--fused NAME=DIR``) that ``methods`` does not list already.

    Raises:
        ConfigError: a method listed twice in ``methods``, or no method at all.
    """
    listed = [t.strip() for t in (methods or "").split(",") if t.strip()]
    dup = sorted({m for m in listed if listed.count(m) > 1})
    if dup:
        raise ConfigError(f"--methods lists {dup} twice")
    out = [] if no_refs else list(REFERENCE_METHODS)
    out = list(dict.fromkeys(out + listed + list(extra or [])))
    if not out:
        raise ConfigError("no methods: give --methods A,B (ir and vis are added unless --no-refs)")
    return out


def task_command_config(args, task: str, name: str) -> BenchmarkConfig:
    """The run configuration of ``taskeval detect|segment`` options."""
    from taskeval.tasks import get_task

    if args.fixed and args.fixed_checkpoint:
        raise ConfigError("give --fixed REF or --fixed-checkpoint PATH, not both")
    fused = parse_pairs(args.fused, "--fused")
    weights = parse_pairs(args.weights, "--weights")
    methods = method_list(args.methods, args.no_refs, list(fused))
    unknown = sorted(set(weights) - set(methods))
    if unknown:
        raise ConfigError(f"--weights names method(s) {unknown} that are not among the methods {methods}")
    from taskeval.config import parse_overrides

    short = get_task(task).spec.short  # "epochs=3" and "det.epochs=3" both set a protocol field
    options = parse_overrides([o[len(short) + 1:] if o.startswith(f"{short}.") else o for o in args.overrides])
    root = args.root
    if args.data == "synth" and not root:
        root = os.environ.get("TASKEVAL_SYNTH_DIR", "runs/data/synth")
    seeds = parse_seeds(args.seeds, 0)
    raw = {"name": name,
           "data": {"card": args.data, "root": root, "train_split": args.train_split, "test_split": args.test_split},
           "methods": [{"name": m, **({"weights": weights[m]} if m in weights else {}),
                        **({"folder": str(Path(fused[m]).resolve())} if m in fused else {})} for m in methods],
           "tasks": [task], "seeds": seeds, "protocols": {task: args.protocol}, "options": {task: options},
           "fixed": args.fixed, "cache": args.cache, "device": args.device, "io": args.io}
    if args.fixed_checkpoint:
        if not Path(args.fixed_checkpoint).is_file():
            raise ConfigError(f"--fixed-checkpoint not found: {args.fixed_checkpoint}")
        raw["fixed_checkpoint"] = {task: str(Path(args.fixed_checkpoint).resolve())}
    if args.fixed and args.fixed not in methods:
        raw["methods"].append({"name": args.fixed})
    return config_from_mapping(raw, "command line")


# --------------------------------------------------------------------------------------------- runs
def start_run(cfg: BenchmarkConfig, out: str | Path | None, command: str, resume: bool, args,
              extra: dict | None = None) -> RunDir:
    """Create (or continue) the run folder, record the configuration and provenance, attach the log."""
    from taskeval.distributed import world_from_env

    run = RunDir.create(out, command, resume=resume)
    # matplotlib's font cache (figures, ultralytics) inside the run, set before anything imports matplotlib
    os.environ.setdefault("MPLCONFIGDIR", str(run.third_party_dir() / "matplotlib"))
    if (int(os.environ.get("RANK", "0")) == 0 or world_from_env() == 1) and not getattr(args, "local_job", False):
        run.write_provenance(to_dict(cfg), seeds=cfg.seeds,
                             extra={"run_command": command, "weight_hashes": weight_hashes(cfg), **(extra or {})},
                             threads=getattr(args, "threads", None))
    run.attach_log()
    quiet_terminal_log(args)
    return run


def quiet_terminal_log(args) -> None:
    """The terminal shows progress bars and warnings; INFO goes to the run's log (unless ``--verbose``)."""
    if not getattr(args, "verbose", False):
        for h in logging.getLogger().handlers:
            if type(h) is logging.StreamHandler:
                h.setLevel(logging.WARNING)


def weight_hashes(cfg: BenchmarkConfig) -> dict[str, str]:
    """method (``method@seed<k>`` for per-seed weights) -> sha256 of its weight files, for the provenance."""
    from fusion_models import get_fusion_spec
    from fusion_models.weights import weights_digest

    out = {}
    for m in cfg.methods:
        given = {f"{m.name}@seed{s}": w for s, w in m.seed_weights.items()} or {m.name: m.weights}
        for key, w in given.items():
            if w and w != "train" and m.folder is None:
                out[key] = weights_digest(get_fusion_spec(m.name), w)
    return out


def execute(cfg: BenchmarkConfig, run: RunDir, args, shard=None, cells=None):
    """Plan the run, compute its missing cells (``shard`` of them), return ``(plan, runner, report)``."""
    plan, runner = make_runner(cfg, run, args)
    report = runner.execute(shard, cells, keep_going=not getattr(args, "fail_fast", False))
    return plan, runner, report


def make_runner(cfg: BenchmarkConfig, run: RunDir, args):
    """The run's ``(plan, runner)`` with this process's execution settings (``--threads``, ``--device``...)."""
    from taskeval.runner import Plan, Runner, make_execution

    progress = not getattr(args, "quiet", False) and not getattr(args, "json", False)
    exe = make_execution(cfg.device, getattr(args, "threads", None), getattr(args, "workers", 0), progress,
                         getattr(args, "backend", "auto"), run.third_party_dir())
    if any(t == "detection" for t in cfg.tasks):
        from detectors.ultralytics_env import prepare

        prepare(exe.state_dir, exe.threads)  # before anything else imports ultralytics
    plan = Plan(cfg, run.path, progress=progress)
    return plan, Runner(plan, exe)


def failure_lines(report, runner) -> list[str]:
    if not report.failed:
        return []
    lines = [f"{len(report.failed)} cell(s) failed (the others are done; run the same command again to retry them):"]
    for cid, line in report.failed.items():
        lines.append(f"  {cid}: {line}  [{runner.store.cells_dir / cid / 'error.txt'}]")
    return lines


def write_summary(rows, path: Path) -> list[dict]:
    """``summary.csv``: mean and sample std over seeds per (method, dataset, protocol, metric, class)
    (:func:`taskeval.stats.seed_summary`: NaN values left out); returns the records."""
    from taskeval.stats import seed_summary

    records = []
    for (method, task, dataset, protocol, metric, cls), s in seed_summary(rows).items():
        records.append({"method": method, "task": task, "dataset": dataset, "protocol": protocol, "metric": metric,
                        "cls": cls, "n": s.n, "mean": s.mean, "std": None if math.isnan(s.std) else s.std})
    keys = ["method", "task", "dataset", "protocol", "metric", "cls", "n", "mean", "std"]
    lines = [",".join(keys)]
    for r in records:
        lines.append(",".join("" if r[k] is None else repr(r[k]) if isinstance(r[k], float) else str(r[k])
                              for k in keys))
    atomic_write_text(path, "\n".join(lines) + "\n")
    return records


def finish_task_command(cfg: BenchmarkConfig, run: RunDir, args, runner, report, task: str) -> int:
    """Write ``results.json`` and ``summary.csv``, print the task's table (or JSON), name failed cells."""
    from taskeval.cli.common import print_json
    from taskeval.results import write_rows

    store = runner.store
    every = store.rows()
    wanted = {(c.method, c.protocol, c.seed) for c in runner.plan.cells()}
    write_rows(every, run.path / "results.json")
    summary = write_summary(every, run.path / "summary.csv")
    if getattr(args, "json", False):
        mine = [s for s in summary if (s["method"], s["protocol"]) in {(m, p) for m, p, _ in wanted}]
        print_json({"run": str(run.path), "protocol": runner.plan.protocol_id(task), "summary": mine,
                    "failed": report.failed})
        return 1 if report.failed else 0
    print_task_tables(run.path, task)
    for line in failure_lines(report, runner):
        print(line)
    print(f"results: {run.path / 'results.csv'}, {run.path / 'summary.csv'}; report: taskeval report {run.path}")
    return 1 if report.failed else 0


def print_task_tables(run_path: Path, task: str) -> None:
    """The run's tables of ``task`` (per class, or its metrics table) in the terminal, as the report has them."""
    from taskeval.console import print_table
    from taskeval.reporting.run import RunData
    from taskeval.reporting.tables import run_tables, to_rich

    for stem, table in run_tables(RunData.open(run_path)):
        if stem == task or stem.startswith(f"{task}_per_class"):
            print_table(to_rich(table))


def check_out_matches(out: Path, cfg: BenchmarkConfig) -> None:
    """An existing run folder of another dataset is never continued with this one."""
    import json

    previous = json.loads((out / "dataset.json").read_text()) if (out / "dataset.json").is_file() else {}
    if previous and cfg.data.card != "synth" and previous.get("card") != cfg.data.card:
        raise TaskevalError(f"{out} holds a run of dataset {previous.get('card')!r}, not {cfg.data.card!r}; "
                            "choose another --out")

"""``taskeval joint``: semantic-guided joint training, then the task metrics of the jointly trained fusion
against the same fusion trained with the fusion loss alone, under the same protocol and seeds.

Two ways to call it:

* one arm: ``taskeval joint --fusion seafusion --task seg --data msrs --root DIR schedule=alternating``
  (``--config`` then holds :class:`~taskeval.joint.JointConfig` fields, overrides set them);
* an experiment (:mod:`taskeval.joint_experiment`): ``taskeval joint --config joint-synth`` (built-in) or a
  YAML with ``seg:`` and/or ``det:`` arms, references and protocols; overrides set its keys
  (``seeds=0,1``, ``seg.lam=2``, ``data.synth.variant=default``).

Per seed s, ``joint-<task>-s<s>/`` holds a joint training and ``fusion-only-s<s>/`` the baseline; the
evaluation is a run of :mod:`taskeval.runner` in the same folder with the methods ``<fusion>@fusion-only``
and ``<fusion>@joint-<task>``, whose weights differ per seed, so ``taskeval report RUN`` renders it. The
paired comparison of each arm with the baseline is printed and kept in ``RUN/stats/joint.{json,txt}``.
"""

from __future__ import annotations

import time
from pathlib import Path

from rich.table import Table

from taskeval.cli.common import add_overrides, parse_seeds
from taskeval.cli.run_common import add_execution_options, execute, failure_lines, quiet_terminal_log
from taskeval.config import load_config, to_dict
from taskeval.console import print_table
from taskeval.errors import ConfigError
from taskeval.rundir import RunDir, atomic_write_json, atomic_write_text


def experiment_from_args(args):
    """The :class:`~taskeval.joint_experiment.JointExperiment` of the command line."""
    from taskeval.joint import JointConfig
    from taskeval.joint_experiment import TASK_NAMES, experiment_from_mapping, is_experiment, load_experiment

    if args.task is None:
        if not args.config or not is_experiment(args.config):
            raise ConfigError("give --task seg|det with --fusion and --data, or --config EXPERIMENT (a built-in "
                              "experiment such as joint-synth, or a YAML with seg:/det: arms)")
        exp = load_experiment(args.config, args.overrides)
        given = {"fusion": args.fusion, "weights": args.weights, "device": args.device, "jobs": args.jobs,
                 "seeds": parse_seeds(args.seeds, 0) if args.seeds else None,
                 "baseline": False if args.no_baseline else None}
        raw = {**to_dict(exp), **{k: v for k, v in given.items() if v is not None}}
        if args.data:
            raw["data"] = {**raw["data"], "card": args.data}
        if args.root:
            raw["data"] = {**raw["data"], "root": str(Path(args.root).resolve())}
        return experiment_from_mapping(raw, str(args.config))
    if not args.fusion or not args.data:
        raise ConfigError("--task needs --fusion and --data")
    cfg = load_config(JointConfig, args.config, args.overrides)
    task = TASK_NAMES[args.task]
    return experiment_from_mapping({
        "name": f"{args.fusion}-{args.task}", "fusion": args.fusion, "weights": args.weights,
        "data": {"card": args.data, "root": args.root, "train_split": args.train_split,
                 "test_split": args.test_split},
        "seeds": parse_seeds(args.seeds, 0), args.task: to_dict(cfg), "baseline": not args.no_baseline,
        "protocols": {task: args.protocol}, "device": args.device or "auto", "jobs": args.jobs or 1}, "command line")


def _dataset(exp, run_path: Path):
    """The experiment's data entry with its root resolved (a synthetic dataset is generated into the run
    unless a root is given), and its card."""
    from dataclasses import replace

    from taskeval.data import load_card
    from taskeval.data.synth import generate

    data = exp.data
    if data.card == "synth":
        root = Path(data.root) if data.root else run_path / "data" / "synth"
        card = load_card(generate(root, data.synth, progress=True))
        return replace(data, root=str(root.resolve())), card
    card = load_card(data.card, data.root)
    return replace(data, root=str(card.root) if data.root is None and card.root else data.root), card


def run(args) -> int:
    from taskeval.data import PairedDataset
    from taskeval.devices import resolve_device
    from taskeval.joint import joint_name
    from taskeval.joint_experiment import (
        compare,
        comparison_lines,
        evaluation_config,
        fusion_updates,
        train_arms,
    )
    from taskeval.launchers.local_jobs import effective_jobs, execute_jobs, job_threads

    exp = experiment_from_args(args)
    device = str(resolve_device(exp.device))
    # an experiment has one run folder and resumes like a benchmark; one arm gets a new folder per call
    experiment = args.task is None
    out = args.out or (Path("runs") / f"joint-{exp.name}" if experiment else None)
    run_dir = RunDir.create(out, f"joint-{exp.name}", resume=args.resume or experiment)
    run_dir.attach_log()
    quiet_terminal_log(args)
    data, card = _dataset(exp, run_dir.path)
    train_ds = PairedDataset(card, data.train_split)
    updates = {t: fusion_updates(c, len(train_ds)) for t, c in exp.arms().items()}
    for t, u in updates.items():
        print(f"fusion-network updates / training images: joint-{t} {u['joint']['updates']} / "
              f"{u['joint']['images']}, fusion-only {u['fusion-only']['updates']} / {u['fusion-only']['images']}")
    jobs = effective_jobs(exp.jobs, args.threads, device, None)
    per_job = job_threads(args.threads, jobs)
    if jobs > 1:
        print(f"{jobs} local jobs x {per_job} thread(s): fusion trainings and evaluation cells side by side "
              "(--jobs 1: one process)")
    started = time.monotonic()
    base, joint = train_arms(exp, train_ds, run_dir.path, device, progress=not args.quiet, jobs=jobs,
                             threads=per_job)
    trained_s = time.monotonic() - started
    print(f"jointly trained fusion weights: {', '.join(w for ws in joint.values() for w in ws.values())}\n"
          f"use one as a method: taskeval fuse --method {joint_name(exp.fusion, next(iter(joint)))} --weights "
          f"PATH, or in a benchmark config: {{name: ..., weights: PATH}}")
    bench = evaluation_config(exp, data, base, joint)
    run_dir.write_provenance(to_dict(bench), seeds=list(exp.seeds), extra={
        "run_command": "joint", "joint": to_dict(exp), "fusion_updates": updates,
        "jobs": jobs, "job_threads": per_job}, threads=args.threads)
    if args.no_eval:
        return 0
    if jobs > 1:
        plan, runner, report = execute_jobs(bench, run_dir, evaluation_job_args(args, bench, run_dir), jobs)
    else:
        plan, runner, report = execute(bench, run_dir, args)
    for line in failure_lines(report, runner):
        print(line)
    rows = runner.store.rows()
    records = []
    if exp.baseline and not report.failed:
        records = compare(run_dir.path, exp, rows, lambda t: plan.specs[t])
        lines = comparison_lines(records)
        atomic_write_json(run_dir.path / "stats" / "joint.json", {"records": records, "fusion_updates": updates})
        atomic_write_text(run_dir.path / "stats" / "joint.txt", "\n".join(lines) + "\n")
        for r in records:
            print_table(_table(r, card.name))
        print("\n".join(lines))
    print(f"took {time.monotonic() - started:.0f} s ({trained_s:.0f} s of fusion training); results: "
          f"{run_dir.path / 'results.csv'}; report: taskeval report {run_dir.path}")
    return 1 if report.failed else 0


def evaluation_job_args(args, bench, run_dir: RunDir):
    """The arguments :func:`~taskeval.launchers.local_jobs.execute_jobs` starts its jobs with: each job is
    ``taskeval benchmark RUN/joint-evaluation.yaml --out RUN --shard i/N``, the evaluation configuration written
    into the run (it must load back as the same configuration, or the jobs would compute other cells)."""
    import argparse

    import yaml

    from taskeval.benchmark import load_benchmark_config

    path = run_dir.path / "joint-evaluation.yaml"
    atomic_write_text(path, yaml.safe_dump(to_dict(bench), sort_keys=False))
    if load_benchmark_config(path) != bench:
        raise ConfigError(f"{path} does not load back as the evaluation configuration; run with --jobs 1")
    return argparse.Namespace(**{**vars(args), "config": str(path), "overrides": [], "out": str(run_dir.path),
                                 "root": None, "backend": getattr(args, "backend", "auto")})


def _table(r: dict, dataset: str) -> Table:
    scale = 100.0 if r["percent"] else 1.0
    t = Table(title=f"{r['metric']} on {dataset} ({r['task']}), task network retrained per fusion, same protocol: "
                    f"{r['method']} against {r['reference']}")
    for col in ("seed", "difference", f"{100 * r['confidence']:g}% interval (paired bootstrap)"):
        t.add_column(col, justify="left" if col == "seed" else "right")
    for p in r["per_seed"]:
        t.add_row(str(p["seed"]), f"{scale * p['estimate']:+.1f}", f"[{scale * p['low']:+.1f}, {scale * p['high']:+.1f}]")
    sd = "" if r["sd"] is None else f" ± {scale * r['sd']:.1f}"
    t.add_row("mean ± sd", f"{scale * r['mean']:+.1f}{sd}", "")
    return t


def register(sub) -> None:
    p = sub.add_parser("joint", help="train a fusion network with a detection or segmentation loss",
                       description="Semantic-guided joint training (SeAFusion-style 'alternating' or TarDAL-style "
                                   "'end2end'), then task metrics of the joint fusion against the same fusion trained "
                                   "with the fusion loss alone (same initialisation, as many fusion updates, same "
                                   "protocol and seeds), with per-seed paired-bootstrap intervals. One arm: --fusion "
                                   "F --task seg|det --data D [overrides: schedule, rounds, fusion_epochs, "
                                   "task_epochs, epochs, warmup_epochs, lam, fusion_weight, batch, crop, lr_fusion, "
                                   "lr_task, seg_loss, seg_encoder, det_model ...]. An experiment: --config "
                                   "joint-synth (built-in) or a YAML with seg:/det: arms [overrides: its keys].")
    p.add_argument("--fusion", help="a trainable fusion method (seafusion, tardal, ignet, plug-ins ...)")
    p.add_argument("--task", choices=("det", "seg"), help="the one joint arm (without --config EXPERIMENT)")
    p.add_argument("--data", help="dataset card (name or YAML)")
    p.add_argument("--root", help="dataset root")
    p.add_argument("--train-split", default="train")
    p.add_argument("--test-split", default="test")
    p.add_argument("--weights", help="initial fusion weights (default: random initialisation)")
    p.add_argument("--seeds", help="comma-separated seeds (joint training, baseline and task network; default 0, "
                                   "or the experiment's)")
    p.add_argument("--protocol", default="quick", help="task protocol for the evaluation (quick, paper, YAML)")
    p.add_argument("--out", help="run directory (an experiment: runs/joint-<name>)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    p.add_argument("--no-baseline", action="store_true", help="skip the fusion-loss-only comparison")
    p.add_argument("--no-eval", action="store_true", help="only train; no task evaluation")
    p.add_argument("--jobs", type=int, help="on a CPU: run the fusion trainings and the evaluation cells in N "
                                            "processes side by side, each with threads/N threads (default: the "
                                            "experiment's jobs, joint-synth: 2)")
    p.add_argument("--config", help="a joint experiment (built-in name or YAML with seg:/det: arms), or with --task "
                                    "a YAML of JointConfig fields")
    add_execution_options(p, device_default=None)
    add_overrides(p)
    p.set_defaults(func=run)

"""``taskeval joint``: semantic-guided joint training, then the task metrics of the jointly trained fusion
against the same fusion trained with the fusion loss alone, under the same protocol and seeds.

Per seed s, ``joint-s<s>/`` holds the joint training and ``fusion-only-s<s>/`` the baseline; the evaluation
is a run of :mod:`taskeval.runner` in the same folder with two methods, ``<fusion>@joint-<task>`` and
``<fusion>@fusion-only``, whose weights differ per seed (cell of seed s = the weights trained with seed s),
so ``taskeval report RUN`` shows them with their spread over seeds and the paired comparison.
"""

from __future__ import annotations

from dataclasses import replace

from rich.table import Table

from taskeval.cli.common import add_overrides, parse_seeds
from taskeval.cli.run_common import add_execution_options, execute, failure_lines
from taskeval.config import load_config, to_dict
from taskeval.console import print_table
from taskeval.data import PairedDataset, load_card
from taskeval.devices import resolve_device
from taskeval.rundir import RunDir


def baseline_name(fusion: str) -> str:
    """The derived method name of the fusion-loss-only baseline, e.g. ``seafusion@fusion-only``."""
    return f"{fusion.split('@')[0]}@fusion-only"


def run(args) -> int:
    from taskeval.benchmark import config_from_mapping
    from taskeval.fusion_train import train_fusion
    from taskeval.joint import JointConfig, JointTrainer, fusion_only_config, joint_name
    from taskeval.tasks import task_by_short

    device = str(resolve_device(args.device))
    cfg = load_config(JointConfig, args.config, args.overrides)
    task = task_by_short(args.task).spec
    card = load_card(args.data, args.root)
    train_ds = PairedDataset(card, args.train_split)
    seeds = parse_seeds(args.seeds, 0)
    run_dir = RunDir.create(args.out, f"joint-{args.fusion}-{args.task}", resume=args.resume)
    run_dir.attach_log()
    joint_w, only_w = {}, {}
    for seed in seeds:
        scfg = replace(cfg, seed=seed)
        joint_w[seed] = str(JointTrainer(args.fusion, args.task, train_ds, run_dir.path / f"joint-s{seed}", scfg,
                                         device=device, init_weights=args.weights).train())
        if not args.no_baseline:
            only_w[seed] = str(train_fusion(args.fusion, train_ds, run_dir.path / f"fusion-only-s{seed}",
                                            fusion_only_config(scfg), device=device, init_weights=args.weights))
    jname = joint_name(args.fusion, args.task)
    print(f"jointly trained fusion weights: {', '.join(joint_w.values())}\n"
          f"use one as a method: taskeval fuse --method {jname} --weights PATH, or in a benchmark config: "
          f"{{name: {jname}, weights: PATH}}")
    methods = [{"name": jname, "seed_weights": joint_w}]
    if only_w:
        methods.insert(0, {"name": baseline_name(args.fusion), "seed_weights": only_w})
    bench = config_from_mapping({
        "name": f"joint-{args.task}", "methods": methods, "tasks": [task.name], "seeds": seeds,
        "data": {"card": str(args.data), "root": args.root, "train_split": args.train_split,
                 "test_split": args.test_split},
        "protocols": {task.name: args.protocol}, "device": device}, "joint")
    run_dir.write_provenance(to_dict(bench), seeds=seeds, extra={"run_command": "joint", "joint": {
        "fusion": args.fusion, "task": args.task, "init_weights": args.weights, **to_dict(cfg)}})
    if args.no_eval:
        return 0
    plan, runner, report = execute(bench, run_dir, args)
    for line in failure_lines(report, runner):
        print(line)
    _print_comparison(runner.store.rows(), task, baseline_name(args.fusion), jname, seeds, args.data)
    print(f"results: {run_dir.path / 'results.csv'}; report: taskeval report {run_dir.path}")
    return 1 if report.failed else 0


def _print_comparison(rows, spec, base: str, joint: str, seeds, data) -> None:
    metric = spec.headline_metric
    scale = 100.0 if spec.metric(metric).percent else 1.0
    values = {(r.method, r.seed): r.value for r in rows if r.metric == metric and r.cls == "" and r.task == spec.name}
    t = Table(title=f"{metric} on {data} ({spec.name}), task network retrained per fusion, same protocol")
    for col in ("seed", "fusion loss only", "joint", "difference"):
        t.add_column(col, justify="left" if col == "seed" else "right")
    for s in seeds:
        j, o = values.get((joint, s)), values.get((base, s))
        diff = "" if j is None or o is None else f"{scale * (j - o):+.1f}"
        t.add_row(str(s), "-" if o is None else f"{scale * o:.1f}", "-" if j is None else f"{scale * j:.1f}", diff)
    print_table(t)


def register(sub) -> None:
    p = sub.add_parser("joint", help="train a fusion network with a detection or segmentation loss",
                       description="Semantic-guided joint training (SeAFusion-style 'alternating' or TarDAL-style "
                                   "'end2end'), then task metrics of the joint fusion against the same fusion trained "
                                   "with the fusion loss alone (same protocol, same seeds). Overrides: schedule, "
                                   "rounds, fusion_epochs, task_epochs, epochs, warmup_epochs, lam, fusion_weight, "
                                   "batch, crop, lr_fusion, lr_task, seg_loss, seg_encoder, det_model ...")
    p.add_argument("--fusion", required=True, help="a trainable fusion method (seafusion, tardal, ignet, plug-ins ...)")
    p.add_argument("--task", required=True, choices=("det", "seg"))
    p.add_argument("--data", required=True, help="dataset card (name or YAML)")
    p.add_argument("--root", help="dataset root")
    p.add_argument("--train-split", default="train")
    p.add_argument("--test-split", default="test")
    p.add_argument("--weights", help="initial fusion weights (default: random initialisation)")
    p.add_argument("--seeds", default="0", help="comma-separated seeds (joint training, baseline and task network)")
    p.add_argument("--protocol", default="quick", help="task protocol for the evaluation (quick, paper, YAML)")
    p.add_argument("--out", help="run directory")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    p.add_argument("--no-baseline", action="store_true", help="skip the fusion-loss-only comparison")
    p.add_argument("--no-eval", action="store_true", help="only train; no task evaluation")
    p.add_argument("--config", help="YAML with JointConfig fields")
    add_execution_options(p)
    add_overrides(p)
    p.set_defaults(func=run)

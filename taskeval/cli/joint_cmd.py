"""``taskeval joint``: semantic-guided joint training, then task metrics of the jointly trained fusion
against the same fusion trained with the fusion loss alone, under the same protocol."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from rich.table import Table

from taskeval.cli.common import DEVICE_HELP, add_overrides, parse_seeds
from taskeval.config import load_config, to_dict
from taskeval.console import print_table
from taskeval.data import PairedDataset, load_card
from taskeval.devices import resolve_device
from taskeval.rundir import RunDir

TASK_NAMES = {"det": "detection", "seg": "segmentation"}
HEADLINE = {"det": "mAP50", "seg": "mIoU"}


def run(args) -> int:
    args.device = str(resolve_device(args.device))
    from taskeval.benchmark import Benchmark, BenchmarkConfig, DataEntry, MethodEntry
    from taskeval.fusion_train import train_fusion
    from taskeval.joint import JointConfig, JointTrainer, fusion_only_config, joint_name

    cfg = load_config(JointConfig, args.config, args.overrides)
    card = load_card(args.data, args.root)
    train_ds = PairedDataset(card, args.train_split)
    seeds = parse_seeds(args.seeds, 0)
    run_dir = RunDir.create(args.out, f"joint-{args.fusion}-{args.task}", resume=args.resume)
    run_dir.write_provenance({"fusion": args.fusion, "task": args.task, "data": str(args.data), "root": args.root,
                              "init_weights": args.weights, "seeds": seeds, **to_dict(cfg)}, seeds=seeds)
    run_dir.attach_log()
    methods = []
    for seed in seeds:
        scfg = replace(cfg, seed=seed)
        joint = JointTrainer(args.fusion, args.task, train_ds, run_dir.path / f"joint-s{seed}", scfg,
                             device=args.device, init_weights=args.weights).train()
        name = f"{joint_name(args.fusion, args.task)}-s{seed}"
        methods.append(MethodEntry(name, weights=str(joint)))
        if not args.no_baseline:
            only = train_fusion(args.fusion, train_ds, run_dir.path / f"fusion-only-s{seed}", fusion_only_config(scfg),
                                device=args.device, init_weights=args.weights)
            methods.append(MethodEntry(f"{args.fusion.split('@')[0]}@fusion-only-s{seed}", weights=str(only)))
    print(f"jointly trained fusion weights: {', '.join(m.weights for m in methods if '@joint' in m.name)}\n"
          f"use one as a method: taskeval fuse --method {joint_name(args.fusion, args.task)} --weights PATH, or in a "
          f"benchmark config: {{name: {joint_name(args.fusion, args.task)}, weights: PATH}}")
    if args.no_eval:
        return 0
    task = TASK_NAMES[args.task]
    rows = []
    for seed in seeds:
        bench_cfg = BenchmarkConfig(
            name="joint-eval", data=DataEntry(card=str(args.data), root=args.root, train_split=args.train_split,
                                              test_split=args.test_split),
            methods=tuple(m for m in methods if m.name.endswith(f"-s{seed}")), tasks=(task,), seeds=(seed,),
            det_protocol=args.protocol, seg_protocol=args.protocol, device=args.device)
        bench = Benchmark(bench_cfg, run_dir)
        bench.execute()
        rows = bench.store.rows()
    _print_comparison(rows, args, seeds)
    return 0


def _print_comparison(rows, args, seeds) -> None:
    metric = HEADLINE[args.task]
    values = {(r.method, r.seed): r.value for r in rows if r.metric == metric and r.cls == ""}
    t = Table(title=f"{metric} on {args.data} ({args.task}), task network retrained per fusion, same protocol")
    t.add_column("seed")
    t.add_column("fusion loss only", justify="right")
    t.add_column("joint", justify="right")
    t.add_column("difference", justify="right")
    base = args.fusion.split("@")[0]
    for s in seeds:
        j = values.get((f"{base}@joint-{args.task}-s{s}", s))
        o = values.get((f"{base}@fusion-only-s{s}", s))
        diff = "" if j is None or o is None else f"{100 * (j - o):+.1f}"
        t.add_row(str(s), "-" if o is None else f"{100 * o:.1f}", "-" if j is None else f"{100 * j:.1f}", diff)
    print_table(t)
    print(f"results: {Path(args.out or '.') / 'results.csv' if args.out else 'the run directory'}")


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
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.add_argument("--out", help="run directory")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    p.add_argument("--no-baseline", action="store_true", help="skip the fusion-loss-only comparison")
    p.add_argument("--no-eval", action="store_true", help="only train; no task evaluation")
    p.add_argument("--config", help="YAML with JointConfig fields")
    add_overrides(p)
    p.set_defaults(func=run)

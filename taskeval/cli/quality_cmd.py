"""``taskeval quality``: fusion-quality metrics per method on a dataset, or of any folder of fused images."""

from __future__ import annotations

from pathlib import Path

from rich.table import Table

from taskeval.cli.common import print_json
from taskeval.cli.run_common import add_execution_options, add_io_option
from taskeval.console import print_table
from taskeval.devices import resolve_device
from taskeval.errors import ConfigError


def _parse_methods(text: str) -> list[str]:
    return [m.strip() for m in text.split(",") if m.strip()]


def _table(title: str, rows: dict[str, dict[str, tuple[float, float]]], metrics: list[str]) -> Table:
    from taskeval.metrics.quality import QUALITY_METRICS

    t = Table(title=title)
    t.add_column("method")
    for m in metrics:
        arrow = "↑" if QUALITY_METRICS.get(m).meta.higher_is_better else "↓"
        t.add_column(f"{m} {arrow}", justify="right")
    for name, vals in rows.items():
        t.add_row(name, *[f"{vals[m][0]:.4g} ± {vals[m][1]:.2g}" for m in metrics])
    return t


def run(args) -> int:
    args.device = str(resolve_device(args.device))
    from taskeval.data import PairedDataset
    from taskeval.data.card import parse_card
    from taskeval.fusedset import precomputed_set
    from taskeval.metrics.quality import QUALITY_ORDER
    from taskeval.quality_eval import score_fused_set, summarise

    metrics = _parse_methods(args.metrics) if args.metrics else list(QUALITY_ORDER)
    if args.fused:
        if not (args.ir and args.vis):
            raise ConfigError("--fused needs --ir DIR and --vis DIR (matched by file stem)")
        ir, vis = Path(args.ir).resolve(), Path(args.vis).resolve()
        import os

        card = parse_card({"name": "folders", "format": "folders", "root": str(ir.parent),
                           "options": {"ir": ir.name, "vis": os.path.relpath(vis, ir.parent)}}, None, "--ir/--vis")
        ds = PairedDataset(card, "all")
        per_image = score_fused_set(precomputed_set(args.fused, ds), ds, metrics, args.device, progress=not args.json)
        summary = summarise(per_image)
        if args.json:
            print_json({"per_image": {sid: {m: per_image[(sid, m)] for m in metrics} for sid in ds.ids},
                        "mean": {m: summary[m][0] for m in metrics}, "std": {m: summary[m][1] for m in metrics}})
            return 0
        t = Table(title=f"fusion quality of {args.fused}")
        t.add_column("id")
        for m in metrics:
            t.add_column(m, justify="right")
        for sid in ds.ids:
            t.add_row(sid, *[f"{per_image[(sid, m)]:.4g}" for m in metrics])
        t.add_row("mean", *[f"{summary[m][0]:.4g}" for m in metrics], style="bold")
        print_table(t)
        return 0
    if not (args.methods and args.data):
        raise ConfigError("give --methods A,B --data CARD, or --fused DIR --ir DIR --vis DIR")
    return _run_methods(args, metrics)


def _run_methods(args, metrics: list[str]) -> int:
    """Quality per method on a dataset split: the runner with the quality task (a run folder, cached fusion)."""
    from taskeval.benchmark import config_from_mapping
    from taskeval.cli.common import parse_pairs
    from taskeval.cli.run_common import execute, failure_lines, method_list, start_run, write_summary

    weights = parse_pairs(args.weights, "--weights")
    names = []
    for item in _parse_methods(args.methods):
        if "=" in item:  # NAME=WEIGHTS, as earlier versions took it
            item, w = item.split("=", 1)
            weights[item] = w
        names.append(item)
    methods = method_list(",".join(names), no_refs=True)
    cfg = config_from_mapping({
        "name": "quality", "data": {"card": args.data, "root": args.root, "test_split": args.split},
        "methods": [{"name": m, **({"weights": weights[m]} if m in weights else {})} for m in methods],
        "tasks": ["quality"], "options": {"quality": {"metrics": metrics}}, "cache": args.cache,
        "device": args.device, "io": args.io}, "command line")
    run = start_run(cfg, args.out, "quality", args.resume, args)
    plan, runner, report = execute(cfg, run, args)
    every = runner.store.rows()
    write_summary(every, run.path / "summary.csv")
    per_method = {}
    for m in methods:
        cell = next((c for c in runner.store.done_cells() if c["method"] == m and c["task"] == "quality"), None)
        if cell is not None:
            from taskeval.tasks.quality import QualityEvaluation

            per_method[m] = QualityEvaluation(cell["dir"]).summary()
    if args.json:
        print_json({n: {m: {"mean": v[m][0], "std": v[m][1]} for m in metrics if m in v} for n, v in per_method.items()}
                   | ({"failed": report.failed} if report.failed else {}))
        return 1 if report.failed else 0
    ds = plan.test_ds
    print_table(_table(f"fusion quality on {ds.card.name}/{ds.split} ({len(ds)} pairs, mean ± std over images)",
                       per_method, metrics))
    for line in failure_lines(report, runner):
        print(line)
    print(f"run: {run.path} (taskeval report {run.path})")
    return 1 if report.failed else 0


def register(sub) -> None:
    p = sub.add_parser("quality", help="fusion-quality metrics (EN, SD, SF, AG, MI, VIF, Qabf, SSIM...)",
                       description="Score fused images against their IR and visible sources. Either per method on "
                                   "a dataset (--methods, --data) or any folder of fused images (--fused, --ir, "
                                   "--vis; matched by file stem). Definitions: taskeval/metrics/quality_functional.py.")
    p.add_argument("--methods", help="comma-separated methods (a learned one with --weights NAME=PATH)")
    p.add_argument("--weights", action="append", metavar="METHOD=PATH",
                   help="weights of a learned method: a file or 'official' (repeatable)")
    p.add_argument("--data", help="dataset card")
    p.add_argument("--root", help="dataset root")
    p.add_argument("--split", default="test")
    p.add_argument("--fused", help="folder of fused images")
    p.add_argument("--ir", help="folder of IR images (with --fused)")
    p.add_argument("--vis", help="folder of visible images (with --fused)")
    p.add_argument("--metrics", help="comma-separated subset (default: all)")
    p.add_argument("--cache", help="fusion cache folder (default <out>/fused)")
    p.add_argument("--out", help="run directory of the per-method mode (default runs/quality/<time>)")
    p.add_argument("--resume", action="store_true", help="continue --out; finished methods are kept")
    p.add_argument("--json", action="store_true", help="print JSON")
    add_io_option(p)
    add_execution_options(p)
    p.set_defaults(func=run)

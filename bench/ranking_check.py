"""Does a benchmark run rank the methods as designed? Per seed, per run, with the margins and the spread.

    python bench/ranking_check.py RUN [RUN ...] [--single ir,vis] [--naive average,laplacian] [--good seafusion]
                                  [--metric detection:mAP50 --metric segmentation:mIoU] [--markdown]

Each RUN is a run folder (``cells/*/rows.csv`` are read, so unfinished runs work too); give the same config
run under another thread count or ``ATEN_CPU_CAPABILITY`` as a second RUN to see the float-path spread.

For each task metric it prints every method's value per seed and run, the spread (sample sd over seeds
within a run; largest change of one cell between runs), and per seed and run the two designed margins:

* ``fusion - single`` = min(naive and good fusions) - max(single-modality rows): every fusion above both
  single-modality rows when positive;
* ``good - naive`` = good fusion - max(naive fusions).

Exit status 1 when a margin is not positive somewhere (the designed order fails), else 0.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
from pathlib import Path


def read_cells(run: Path, task: str, metric: str, cls: str = "") -> dict[tuple[str, int], float]:
    """(method, seed) -> value of ``metric`` of ``task`` (overall, or of class ``cls``) in the run's finished
    cells, in %."""
    out = {}
    for rows in sorted((run / "cells").glob(f"{task}__*/rows.csv")):
        if not (rows.parent / "cell.json").is_file():
            continue
        with open(rows, newline="") as fh:
            for r in csv.DictReader(fh):
                if r["metric"] == metric and r["cls"] == cls and r["seed"] != "":
                    out[(r["method"], int(r["seed"]))] = 100 * float(r["value"])
    return out


def per_class(runs: list[Path], task: str, metric: str) -> None:
    """Per-class values (``AP50`` / ``IoU``) of every method, seed and run, one line per method and class."""
    classes = []
    for run in runs:
        for rows in sorted((run / "cells").glob(f"{task}__*/rows.csv")):
            with open(rows, newline="") as fh:
                classes += [r["cls"] for r in csv.DictReader(fh) if r["metric"] == metric and r["cls"]]
    classes = list(dict.fromkeys(classes))
    print(f"\n{task} {metric} per class (%): run seed -> value")
    for c in classes:
        values = {run: read_cells(run, task, metric, c) for run in runs}
        for m in sorted({k[0] for v in values.values() for k in v}):
            cells = [f"{run.name} s{s}: {v[(m, s)]:.0f}" for run, v in values.items() for (mm, s) in sorted(v) if mm == m]
            print(f"  {c:<10} {m:<10} " + "  ".join(cells))


def check(runs: list[Path], task: str, metric: str, single, naive, good, md: bool) -> bool:
    values = {run: read_cells(run, task, metric) for run in runs}
    methods = [m for m in (*single, *naive, *good) if any(m == k[0] for v in values.values() for k in v)]
    seeds = sorted({s for v in values.values() for (_, s) in v})
    label = {run: run.name for run in runs}
    sep = " | " if md else "  "
    print(f"\n{task} {metric} (%), runs: {', '.join(label.values())}")
    head = ["method"] + [f"{label[r]} s{s}" for r in runs for s in seeds] + ["sd over seeds", "max run change"]
    print(sep.join(head) if not md else "| " + " | ".join(head) + " |")
    if md:
        print("|" + "---|" * len(head))
    for m in methods:
        cells = [values[r].get((m, s)) for r in runs for s in seeds]
        sds = [statistics.stdev(v) for r in runs
               if len(v := [values[r][(m, s)] for s in seeds if (m, s) in values[r]]) > 1]
        changes = [abs(values[a][(m, s)] - values[runs[0]][(m, s)]) for a in runs[1:] for s in seeds
                   if (m, s) in values[a] and (m, s) in values[runs[0]]]
        line = [m] + ["-" if c is None else f"{c:.1f}" for c in cells] + [
            f"{max(sds):.1f}" if sds else "-", f"{max(changes):.1f}" if changes else "-"]
        print(sep.join(line) if not md else "| " + " | ".join(line) + " |")
    ok = True
    for r in runs:
        for s in seeds:
            v = {m: values[r][(m, s)] for m in methods if (m, s) in values[r]}
            fus = [v[m] for m in (*naive, *good) if m in v]
            sing = [v[m] for m in single if m in v]
            nv = [v[m] for m in naive if m in v]
            gd = [v[m] for m in good if m in v]
            parts = []
            if fus and sing:
                d = min(fus) - max(sing)
                ok &= d > 0
                parts.append(f"fusion - single {d:+.1f}")
            if gd and nv:
                d = min(gd) - max(nv)
                ok &= d > 0
                parts.append(f"good - naive {d:+.1f}")
            if parts:
                print(f"  {label[r]} seed {s}: " + ", ".join(parts))
    return ok


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--single", default="ir,vis")
    ap.add_argument("--naive", default="average,laplacian")
    ap.add_argument("--good", default="seafusion")
    ap.add_argument("--metric", action="append", help="task:metric (default detection:mAP50, segmentation:mIoU)")
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--per-class", action="store_true", help="also per-class AP50 / IoU")
    args = ap.parse_args()
    split = lambda s: [x for x in s.split(",") if x]
    metrics = args.metric or ["detection:mAP50", "segmentation:mIoU"]
    ok = True
    for tm in metrics:
        task, metric = tm.split(":")
        ok &= check(args.runs, task, metric, split(args.single), split(args.naive), split(args.good), args.markdown)
    if args.per_class:
        per_class(args.runs, "detection", "AP50")
        per_class(args.runs, "segmentation", "IoU")
    print("\ndesigned order holds everywhere" if ok else "\ndesigned order FAILS somewhere (a margin <= 0)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

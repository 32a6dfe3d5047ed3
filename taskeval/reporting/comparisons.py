"""Saved paired comparisons: every method against the best single-modality row, on the same test images.

For every (task, dataset, protocol) of a run whose task's headline metric has a paired bootstrap
(``TaskSpec.paired``), :func:`update_comparisons` runs :func:`taskeval.stats.compare_to_reference` and
keeps the result in ``RUN/stats/<task>_vs_reference.json`` (a list, one record per dataset and
protocol, with the footnote lines the tables print) and the same lines in ``<task>_vs_reference.txt``.
A record is keyed by the ``cell.json`` records it was computed from, so a report recomputes it only when
those cells change (a resumed run with more methods or seeds). Tasks without per-image scores in this
process (a plug-in task not imported) get no comparison; the reason is logged.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from pathlib import Path

from taskeval.errors import DataError
from taskeval.reporting.run import RunData
from taskeval.rundir import atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)


def stats_path(run_dir: str | Path, task: str, ext: str = "json") -> Path:
    return Path(run_dir) / "stats" / f"{task}_vs_reference.{ext}"


def comparison_lines(run_dir: str | Path, task: str, dataset: str | None = None,
                     protocol: str | None = None) -> list[str]:
    """The saved footnote lines of ``task`` (of one dataset and protocol when given); empty when none."""
    return [line for rec in saved_comparisons(run_dir, task)
            if dataset in (None, rec.get("dataset")) and protocol in (None, rec.get("protocol"))
            for line in rec.get("notes", [])]


def saved_comparisons(run_dir: str | Path, task: str) -> list[dict]:
    """The records of ``RUN/stats/<task>_vs_reference.json`` (empty when absent or unreadable)."""
    path = stats_path(run_dir, task)
    try:
        out = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return []
    return out if isinstance(out, list) else []


def cells_key(cells: list[dict]) -> str:
    """A digest of the ``cell.json`` records (without their folder) a comparison is computed from."""
    records = sorted(json.dumps({k: v for k, v in c.items() if k != "dir"}, sort_keys=True, default=str)
                      for c in cells)
    return hashlib.sha256("\n".join(records).encode()).hexdigest()[:16]


def update_comparisons(run: RunData, seed: int = 0, confidence: float = 0.95) -> None:
    """Compute the comparisons of ``run`` whose cells changed since they were saved; keep the others."""
    from taskeval.stats import compare_to_reference, comparison_notes

    for task in run.tasks:
        spec = run.spec(task)
        metric = spec.headline_metric
        if metric not in spec.paired:
            log.info("no paired comparison for %s: its headline metric %s has no paired bootstrap", task,
                     metric)
            continue
        saved = {(r.get("dataset"), r.get("protocol")): r for r in saved_comparisons(run.path, task)}
        cells = [c for c in run.cells if c["task"] == task]
        records = []
        for dataset, protocol in dict.fromkeys((c["dataset"], c["protocol"]) for c in cells):
            mine = [c for c in cells if (c["dataset"], c["protocol"]) == (dataset, protocol)]
            key = cells_key(mine)
            old = saved.get((dataset, protocol))
            if old is not None and old.get("cells") == key and old.get("metric") == metric:
                records.append(old)
                continue
            try:
                comps = compare_to_reference(run.path, task, metric, dataset=dataset, protocol=protocol,
                                             seed=seed, confidence=confidence, spec=spec)
            except DataError as exc:
                log.warning("no paired comparison for %s (%s, protocol %s): %s", task, dataset, protocol, exc)
                continue
            m = spec.metric(metric)
            notes = comparison_notes(comps, percent=m.percent, decimals=1 if m.percent else m.decimals)
            records.append({"dataset": dataset, "protocol": protocol, "metric": metric, "cells": key,
                            "comparisons": [_record(c) for c in comps], "notes": notes})
        if records:
            atomic_write_json(stats_path(run.path, task), records)
            lines = [line for r in records
                     for line in [f"{r['dataset']}, protocol {r['protocol']}:", *r["notes"]]]
            atomic_write_text(stats_path(run.path, task, "txt"), "\n".join(lines) + "\n")
        else:
            for ext in ("json", "txt"):
                stats_path(run.path, task, ext).unlink(missing_ok=True)


def _num(v: float):
    return None if v is None or not math.isfinite(v) else float(v)


def _record(c) -> dict:
    """A :class:`taskeval.stats.MethodComparison` as JSON (no replicate arrays)."""
    first = c.per_seed[0]
    return {"method": c.method_a, "reference": c.method_b, "metric": c.metric,
            "higher_is_better": c.higher_is_better, "estimate": _num(c.mean_estimate),
            "seed_std": _num(c.seed_std), "low": _num(c.low), "high": _num(c.high),
            "p_value": _num(c.p_value),
            "n_seeds": c.n_seeds, "n_images": first.n_images, "n_boot": int(first.replicates.size),
            "confidence": first.confidence, "boot_seed": first.boot_seed,
            "per_seed": [{"seed": p.seed, "estimate": _num(p.estimate), "low": _num(p.low),
                          "high": _num(p.high), "p_value": _num(p.p_value)} for p in c.per_seed]}

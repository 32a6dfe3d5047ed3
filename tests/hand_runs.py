"""Hand-made runs in the results store on a built-in card's class list (no dataset on disk): segmentation
cells with per-image confusion matrices of known predictions, detection cells with chosen mAP50 rows."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import yaml

from taskeval.data import load_card
from taskeval.metrics.segmentation import SegScores
from taskeval.results import OVERALL, Row
from taskeval.rundir import atomic_write_json
from taskeval.store import Cell, ResultsStore
from taskeval.tasks import get_task
from taskeval.tasks.segmentation import rows_from_scores

SEG_PROTOCOL = "quick-aaaaaa"
DET_PROTOCOL = "quick-bbbbbb"
TEST_DIGEST = "0123456789abcdef"  # the test split's manifest RUN/inputs/<hex>.json
SIZE = (12, 16)


def masks(n: int = 4, k: int = 9, seed: int = 0) -> list[np.ndarray]:
    """``n`` ground-truth masks: class 0 everywhere but one 2x2 block of each class 1..k-1 (class 0 is the
    majority: at least 160 of 192 pixels)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        m = np.zeros(SIZE, np.int64)
        for c in range(1, k):
            y, x = rng.integers(0, SIZE[0] - 2), rng.integers(0, SIZE[1] - 2)
            m[y:y + 2, x:x + 2] = c
        out.append(m)
    return out


def confmat(gt: np.ndarray, pred: np.ndarray, k: int) -> np.ndarray:
    return np.bincount(gt.ravel() * k + pred.ravel(), minlength=k * k).reshape(k, k).astype(np.int64)


def predictions(gts: Sequence[np.ndarray], skill: float, seed: int) -> list[np.ndarray]:
    """The ground truth where a uniform draw is below ``skill``, class 0 elsewhere (0: constant class 0)."""
    rng = np.random.default_rng(1000 + seed)
    return [np.where(rng.random(g.shape) < skill, g, 0) for g in gts]


def _start(root: Path, methods: Sequence[str], seeds: Sequence[int], card: str | None, specs: Sequence[str],
           classes: Mapping[str, Sequence[str]] | None, dataset: str) -> tuple[Path, ResultsStore]:
    run = root / "run"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump({"name": "hand", "methods": list(methods),
                                                     "seeds": list(seeds)}, sort_keys=False))
    if card is not None:
        atomic_write_json(run / "dataset.json", {"card": card, "root": str(root / "nowhere"),
                                                 "train_split": "train", "test_split": "test"})
    atomic_write_json(run / "tasks.json", {t: get_task(t).spec.to_dict() for t in specs})
    if classes is not None:
        atomic_write_json(run / "inputs" / f"{TEST_DIGEST}.json", {
            "dataset": dataset, "split": "test", "settings": {k: list(v) for k, v in classes.items()},
            "files": {}})
    return run, ResultsStore(run)


def _inputs() -> dict:
    return {"weights": None, "folder": None,
            "dataset": {"train": "files:fedcba9876543210", "test": f"files:{TEST_DIGEST}"}}


def seg_run(root: Path, skills: Mapping[str, Sequence[float]], card: str | None = "msrs",
            manifest_classes: Sequence[str] | None = None, notes: Mapping[str, str] | None = None,
            dataset: str = "msrs") -> Path:
    """A segmentation run: method -> skill per seed (seeds 0, 1, ...), rows computed from the confusion
    matrices (:func:`rows_from_scores`, as the task writes them), the test manifest with
    ``manifest_classes`` (default: the card's class list; None card: no dataset.json)."""
    classes = tuple(load_card(card if card else "msrs").seg_classes)
    k = len(classes)
    gts = masks(k=k)
    seeds = range(max(len(v) for v in skills.values()))
    run, store = _start(root, list(skills), list(seeds), card, ["segmentation"],
                        {"seg_classes": manifest_classes or classes}, dataset)
    ids = [f"img{i}" for i in range(len(gts))]
    for method, per_seed in skills.items():
        for seed, skill in enumerate(per_seed):
            cell = Cell(method, "segmentation", dataset, SEG_PROTOCOL, seed)
            d = store.cell_dir(cell)
            cms = np.stack([confmat(g, p, k) for g, p in zip(gts, predictions(gts, skill, seed))])
            np.savez_compressed(d / "per_image_confmat.npz", ids=np.array(ids), confmat=cms)
            scores = SegScores.from_confmat(cms.sum(0), classes)
            (d / "scores.json").write_text(json.dumps(scores.as_dict()))
            note = (notes or {}).get(method, "")
            store.finish(cell, rows_from_scores(scores, cell, note), {"seconds": 1.0, "note": note,
                                                                      "inputs": _inputs()})
    store.merge()
    return run


def det_rows(method: str, seed: int, value: float, classes: Sequence[str], dataset: str) -> list[Row]:
    """AP50 of every class equal to ``value``, and mAP50 (their mean)."""
    rows = [Row(method, "detection", dataset, DET_PROTOCOL, seed, "AP50", c, value) for c in classes]
    return rows + [Row(method, "detection", dataset, DET_PROTOCOL, seed, "mAP50", OVERALL, value)]


def add_detection(run: Path, map50: Mapping[str, Sequence[float]], dataset: str = "msrs") -> None:
    """Detection cells (rows only: the detection chance level reads no artefact) into ``run``."""
    store = ResultsStore(run)
    classes = load_card(dataset).det_classes
    specs = json.loads((run / "tasks.json").read_text())
    atomic_write_json(run / "tasks.json", {**specs, "detection": get_task("detection").spec.to_dict()})
    for method, per_seed in map50.items():
        for seed, v in enumerate(per_seed):
            cell = Cell(method, "detection", dataset, DET_PROTOCOL, seed)
            store.finish(cell, det_rows(method, seed, v, classes, dataset),
                         {"seconds": 1.0, "inputs": _inputs()})
    store.merge()

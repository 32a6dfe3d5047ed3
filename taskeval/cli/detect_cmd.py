"""``taskeval detect`` and ``taskeval score-det`` (detection track).

``detect`` runs one cell per (method, seed): fuse the train and test splits (cached), retrain the detector
under one protocol on the method's fused training images, predict its fused test images, write the COCO
ground truth and predictions (``gt.json``, ``predictions.json``, the results store's cell layout) and
score them. With ``--fixed REF`` (or
``--fixed-checkpoint``) one detector, trained once on REF's images (or given), is evaluated on every
method without retraining: a quick screen whose rows say ``fixed:...`` in their protocol column. Cells
are stored with :class:`taskeval.store.ResultsStore`, so ``--resume`` skips finished ones.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from taskeval.cli.common import add_overrides, parse_pairs, parse_seeds, print_json
from taskeval.console import print_table
from taskeval.errors import ConfigError, DataError
from taskeval.results import OVERALL, Row, write_rows

log = logging.getLogger(__name__)
REFERENCE_METHODS = ("ir", "vis")
SUMMARY_METRICS = ("mAP50", "mAP50_95", "precision", "recall")


def _split_list(text: str | None) -> list[str]:
    return [t.strip() for t in (text or "").split(",") if t.strip()]


def method_list(methods: str | None, no_refs: bool = False, extra: list[str] | None = None) -> list[str]:
    """Table order: ``ir``, ``vis`` (unless ``no_refs``), ``methods`` (comma-separated), then ``extra``."""
    out = [] if no_refs else list(REFERENCE_METHODS)
    for m in _split_list(methods) + list(extra or []):
        if m not in out:
            out.append(m)
    if not out:
        raise ConfigError("no methods: give --methods A,B (ir and vis are added unless --no-refs)")
    return out


class DetectRun:
    """The cells of one ``taskeval detect`` invocation in one run directory.

    Args:
        run: the run directory (gets ``cells/``, ``results.csv``, ``results.json``, ``summary.csv``).
        train_ds, test_ds: the dataset splits.
        protocol: the detection protocol.
        methods: method names in table order (registered methods or keys of ``fused_folders``).
        seeds: training seeds.
        weights: method -> fusion weights (learned methods).
        fused_folders: method -> folder of precomputed fused images (``<dir>/<split>/`` or all in ``<dir>``).
        cache_dir: fusion cache (default ``<run>/fused``).
        fixed_ref: train one detector per seed on this method's images and evaluate every method with it.
        fixed_checkpoint: evaluate every method with this detector (no training, no seeds).
        device, threads, workers, backend: execution settings (not part of the protocol).
    """

    def __init__(self, run, train_ds, test_ds, protocol, methods, seeds, weights=None, fused_folders=None,
                 cache_dir=None, fixed_ref=None, fixed_checkpoint=None, device="cpu", threads=None, workers=0,
                 backend="auto", progress=True):
        from taskeval.store import ResultsStore

        if fixed_ref and fixed_checkpoint:
            raise ConfigError("give --fixed REF or --fixed-checkpoint PATH, not both")
        self.run, self.train_ds, self.test_ds = run, train_ds, test_ds
        self.protocol, self.methods, self.seeds = protocol, list(methods), list(seeds)
        self.weights, self.fused_folders = dict(weights or {}), dict(fused_folders or {})
        self.cache_dir = Path(cache_dir) if cache_dir else run.path / "fused"
        self.fixed_ref = fixed_ref
        self.fixed_checkpoint = Path(fixed_checkpoint).resolve() if fixed_checkpoint else None
        self.device, self.threads, self.workers = device, threads, workers
        self.backend, self.progress = backend, progress
        self.state_dir = run.path / "third_party"
        self.store = ResultsStore(run.path)
        self._fused: dict = {}
        self._gt: dict | None = None
        if self.fixed_checkpoint is not None:
            from fusion_models.weights import file_hash

            if not self.fixed_checkpoint.is_file():
                raise ConfigError(f"--fixed-checkpoint not found: {self.fixed_checkpoint}")
            self.protocol_id = f"fixed:ckpt-{file_hash(self.fixed_checkpoint, 8)}@{protocol.id}"
            self.seeds = [None]
        elif fixed_ref:
            self.protocol_id = f"fixed:{fixed_ref}@{protocol.id}"
        else:
            self.protocol_id = protocol.id

    @property
    def retrains(self) -> bool:
        return self.fixed_ref is None and self.fixed_checkpoint is None

    # ---- inputs
    def fused(self, method: str, split: str):
        """The fused images of ``method`` for ``split``; every id of the split must be there."""
        from taskeval.fusedset import fuse_split, precomputed_set

        key = (method, split)
        if key not in self._fused:
            ds = self.train_ds if split == self.train_ds.split else self.test_ds
            if method in self.fused_folders:
                folder = Path(self.fused_folders[method])
                where = self.cache_dir / ds.card.name / "manifests"
                fs = (precomputed_set(folder / split, ds, name=method, manifests=where) if (folder / split).is_dir()
                      else precomputed_set(folder, ds, name=method, allow_extra=True, manifests=where))
            else:
                from taskeval.devices import tensor_device

                fs = fuse_split(ds, method, self.cache_dir, weights=self.weights.get(method),
                                device=tensor_device(self.device), progress=self.progress)
            fs.require(ds.ids)
            self._fused[key] = fs
        return self._fused[key]

    def check_inputs(self) -> None:
        """Fuse (or find) every split this run needs before any training, so a gap fails early."""
        for m in self.methods:
            if self.retrains:
                self.fused(m, self.train_ds.split)
            self.fused(m, self.test_ds.split)
        if self.fixed_ref:
            self.fused(self.fixed_ref, self.train_ds.split)
        if self.fixed_checkpoint is not None:
            from detectors.yolo import checkpoint_classes

            names = checkpoint_classes(self.fixed_checkpoint, self.state_dir)
            if tuple(names) != tuple(self.test_ds.card.det_classes):
                card = self.test_ds.card
                raise ConfigError(f"checkpoint {self.fixed_checkpoint} detects {names}, but {card.name} has "
                                  f"classes {list(card.det_classes)}")

    def ground_truth(self) -> dict:
        from taskeval.metrics.detection import dataset_ground_truth

        if self._gt is None:
            self._gt = dataset_ground_truth(self.test_ds)
        return self._gt

    # ---- cells
    def cells(self):
        from taskeval.store import Cell

        name = self.test_ds.card.name
        return [Cell(m, "detection", name, self.protocol_id, s) for s in self.seeds for m in self.methods]

    def _protocol(self, seed):
        return self.protocol if seed is None else replace(self.protocol, seed=seed)

    def _train(self, method: str, seed: int, work: Path) -> Path:
        from detectors import yolo

        train = self.fused(method, self.train_ds.split)
        return yolo.train(train, self.train_ds, self._protocol(seed), work, device=self.device,
                          seed=seed, threads=self.threads, workers=self.workers, state_dir=self.state_dir,
                          progress=self.progress)

    def _reference_checkpoint(self, seed) -> Path:
        if self.fixed_checkpoint is not None:
            return self.fixed_checkpoint
        # one folder per protocol and training images: a changed protocol or input never reuses the detector
        key = self.fused(self.fixed_ref, self.train_ds.split).key
        work = self.run.path / "reference" / f"{self.fixed_ref}-seed{seed}-{self.protocol.id}-{key[:8]}"
        last = work / "train" / "weights" / "last.pt"
        if (work / "done.json").is_file() and last.is_file():
            return last
        ckpt = self._train(self.fixed_ref, seed, work)
        (work / "done.json").write_text(json.dumps({"checkpoint": str(ckpt), "protocol": self.protocol.id}))
        return ckpt

    def run_cell(self, cell) -> list[Row]:
        from detectors import yolo
        from taskeval.metrics.detection import score_predictions, write_json

        t0 = time.perf_counter()
        d = self.store.cell_dir(cell)
        train_s = None
        if self.retrains:
            ckpt = self._train(cell.method, cell.seed, d / "work")
            train_s = round(time.perf_counter() - t0, 2)
        else:
            ckpt = self._reference_checkpoint(cell.seed)
        test = self.fused(cell.method, self.test_ds.split)
        preds = yolo.predict(ckpt, test, self._protocol(cell.seed), device=self.device,
                             threads=self.threads, state_dir=self.state_dir)
        scores, dets = score_predictions(preds, self.ground_truth(), self.backend)
        write_json(d / "gt.json", self.ground_truth())
        write_json(d / "predictions.json", dets)
        write_json(d / "scores.json", scores.to_dict())
        note = "; ".join(n for n in (test.weights_note, f"COCO via {scores.backend}") if n)
        rows = scores.rows(cell.method, cell.dataset, cell.protocol, cell.seed, note)
        self.store.finish(cell, rows, {"seconds": round(time.perf_counter() - t0, 2),
                                       "train_seconds": train_s, "checkpoint": str(ckpt),
                                       "backend": scores.backend, "inputs": self.cell_inputs(cell)})
        log.info("%s seed %s: mAP50 %.4f, mAP50-95 %.4f (%s)", cell.method, cell.seed, scores.map50,
                 scores.map50_95, cell.protocol)
        return rows

    def cell_inputs(self, cell) -> dict:
        """The fused images a cell's numbers come from (cache keys: method, weight-file hash, dataset and the
        image files), recorded with the cell and compared on --resume."""
        trained_on = cell.method if self.retrains else self.fixed_ref  # None: a given checkpoint
        train = self.fused(trained_on, self.train_ds.split) if trained_on else None
        return {"train": train.key_parts if train else None,
                "test": self.fused(cell.method, self.test_ds.split).key_parts, "test_ids": len(self.test_ds)}

    def execute(self) -> list[Row]:
        """Run every unfinished cell, rewrite ``results.csv``/``.json`` and ``summary.csv`` from the whole
        store, and return the rows of this invocation's cells (finished before or now)."""
        self.check_inputs()
        self.ground_truth()
        stale = self.store.stale(self.cells(), self.cell_inputs)
        if stale:
            raise DataError(self.store.stale_message(stale, [self.cache_dir / self.test_ds.card.name / "manifests"]))
        for cell in self.cells():
            if self.store.is_done(cell):
                log.info("%s seed %s: done before, skipped", cell.method, cell.seed)
                continue
            self.run_cell(cell)
        self.store.merge()
        every = self.store.rows()  # also cells of earlier invocations of this run directory
        write_rows(every, self.run.path / "results.json")
        write_summary(every, self.run.path / "summary.csv")
        wanted = {(c.method, c.protocol, c.seed) for c in self.cells()}
        return [r for r in every if (r.method, r.protocol, r.seed) in wanted]


# ----------------------------------------------------------------------------------------------- summary
def summarize(rows: list[Row]) -> dict[tuple[str, str, str, str], tuple[int, float, float]]:
    """(method, protocol, metric, cls) -> (number of seeds, mean, sample std; NaN for one seed)."""
    groups: dict = {}
    for r in rows:
        groups.setdefault((r.method, r.protocol, r.metric, r.cls), []).append(r.value)
    out = {}
    for key, vals in groups.items():
        v = np.asarray(vals, np.float64)
        out[key] = (len(v), float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else float("nan"))
    return out


def write_summary(rows: list[Row], path: Path) -> None:
    from taskeval.rundir import atomic_write_text

    dataset = rows[0].dataset if rows else ""
    lines = ["method,dataset,protocol,metric,cls,n,mean,std"]
    for (m, p, metric, cls), (n, mean, std) in summarize(rows).items():
        lines.append(f"{m},{dataset},{p},{metric},{cls},{n},{mean!r},{'' if math.isnan(std) else repr(std)}")
    atomic_write_text(path, "\n".join(lines) + "\n")


def _fmt(n: int, mean: float, std: float) -> str:
    if math.isnan(mean):
        return "-"
    return f"{100 * mean:.1f}" + ("" if n < 2 else f" ± {100 * std:.1f}")


def print_detection_table(rows: list[Row], methods: list[str], classes: tuple[str, ...], title: str) -> None:
    from rich.table import Table

    summary = summarize(rows)
    protocols = list(dict.fromkeys(r.protocol for r in rows))
    t = Table(title=title)
    columns = ("method", "protocol", "seeds", "mAP50", "mAP50-95", "P", "R", *[f"AP50 {c}" for c in classes])
    for col in columns:
        t.add_column(col, justify="left" if col in ("method", "protocol") else "right")
    for m in methods:
        for p in protocols:
            if (m, p, "mAP50", OVERALL) not in summary:
                continue
            cells = [_fmt(*summary[(m, p, k, OVERALL)]) for k in SUMMARY_METRICS]
            cells += [_fmt(*summary[(m, p, "AP50", c)]) if (m, p, "AP50", c) in summary else "-"
                      for c in classes]
            t.add_row(m, p, str(summary[(m, p, "mAP50", OVERALL)][0]), *cells)
    print_table(t)
    print("values in %, mean ± sample std over seeds; COCO AP (101-point interpolation); P and R at IoU 0.5 "
          "at the confidence of best mean F1")


# ----------------------------------------------------------------------------------------------- commands
def run_detect(args) -> int:
    import torch

    from detectors.protocol import load_protocol
    from detectors.ultralytics_env import prepare
    from fusion_models import get_fusion_spec
    from taskeval.config import to_dict
    from taskeval.data import PairedDataset, load_card
    from taskeval.devices import pick_device
    from taskeval.rundir import RunDir

    args.device = pick_device(args.device)  # a list 0,1 stays a list: ultralytics' DDP
    protocol = load_protocol(args.protocol, [o[4:] if o.startswith("det.") else o for o in args.overrides])
    seeds = parse_seeds(args.seeds, protocol.seed)
    fused_folders = parse_pairs(args.fused, "--fused")
    weights = parse_pairs(args.weights, "--weights")
    methods = method_list(args.methods, args.no_refs, list(fused_folders))
    for m in methods + ([args.fixed] if args.fixed else []):
        if m not in fused_folders:
            get_fusion_spec(m)  # unknown names fail here, with a suggestion
    card = load_card(args.data, args.root)
    train_ds = PairedDataset(card, args.train_split)
    test_ds = PairedDataset(card, args.test_split)
    if not test_ds.has_boxes:
        raise DataError(f"{card.name}/{args.test_split} has no detection labels")
    if args.fixed and args.fixed_checkpoint:
        raise ConfigError("give --fixed REF or --fixed-checkpoint PATH, not both")
    if args.fixed_checkpoint and not Path(args.fixed_checkpoint).is_file():
        raise ConfigError(f"--fixed-checkpoint not found: {args.fixed_checkpoint}")
    run = RunDir.create(args.out, "detect", resume=args.resume)
    if args.threads:
        torch.set_num_threads(args.threads)
    prepare(run.third_party_dir(), args.threads)  # before anything else imports ultralytics
    run.attach_log()
    run.write_provenance({"data": args.data, "root": str(card.root), "train_split": args.train_split,
                          "test_split": args.test_split, "methods": methods, "seeds": seeds,
                          "protocol": to_dict(protocol), "protocol_id": protocol.id, "fixed": args.fixed,
                          "fixed_checkpoint": args.fixed_checkpoint, "weights": weights,
                          "fused": fused_folders, "device": args.device, "threads": args.threads,
                          "backend": args.backend}, seeds)
    job = DetectRun(run, train_ds, test_ds, protocol, methods, seeds, weights=weights,
                    fused_folders=fused_folders, cache_dir=args.cache, fixed_ref=args.fixed,
                    fixed_checkpoint=args.fixed_checkpoint, device=args.device, threads=args.threads,
                    workers=args.workers, backend=args.backend, progress=not args.json)
    rows = job.execute()
    if args.json:
        summary = [{"method": m, "protocol": p, "metric": metric, "cls": cls, "n": n, "mean": mean,
                    "std": None if math.isnan(std) else std}
                   for (m, p, metric, cls), (n, mean, std) in summarize(rows).items()]
        print_json({"run": str(run.path), "protocol": job.protocol_id, "summary": summary})
        return 0
    print_detection_table(rows, methods, card.det_classes,
                f"detection on {card.name}/{args.test_split} ({job.protocol_id})")
    print(f"results: {run.path / 'results.csv'}, {run.path / 'results.json'}, {run.path / 'summary.csv'}")
    return 0


def run_score(args) -> int:
    from rich.table import Table

    from taskeval.data.labels import read_class_names
    from taskeval.metrics.detection import load_ground_truth, load_predictions, score_detections

    classes = read_class_names(args.classes) if args.classes else None
    gt = load_ground_truth(args.gt, args.images, classes)
    scores = score_detections(gt, load_predictions(args.pred, gt), args.backend)
    if args.json:
        print_json(scores.to_dict())
        return 0
    t = Table(title=f"{args.pred} vs {args.gt} ({scores.n_images} images, {scores.n_gt} boxes, "
                    f"{scores.n_det} detections; {scores.backend})")
    for col in ("class", "boxes", "AP50", "AP50-95", "P", "R"):
        t.add_column(col, justify="left" if col == "class" else "right")
    for name, c in scores.per_class.items():
        t.add_row(name, str(c.n_gt), *(f"{100 * v:.2f}" for v in (c.ap50, c.ap50_95, c.precision, c.recall)))
    overall = (scores.map50, scores.map50_95, scores.precision, scores.recall)
    t.add_row("all", str(scores.n_gt), *(f"{100 * v:.2f}" for v in overall), style="bold")
    print_table(t)
    print(f"values in %; P and R at IoU 0.5 at confidence {scores.conf_threshold:.4g} (best mean F1)")
    return 0


def register(sub) -> None:
    from detectors.protocol import PRESETS
    from taskeval.metrics.detection import BACKENDS

    p = sub.add_parser(
        "detect", help="retrain a YOLO detector per fusion method and report COCO mAP",
        description="For each method (ir and vis included): fuse the train and test splits (cached), train "
                    "an ultralytics YOLO detector under one protocol, predict the test split, write COCO "
                    "ground truth and predictions, and score mAP@0.5, mAP@.5:.95, per-class AP@0.5, "
                    "precision and recall. Protocols: 'quick' (YOLOv8n at 160 px, for CPUs and the synthetic "
                    "benchmark), 'paper' (YOLOv5s at 640 px with YOLOv5's defaults; ultralytics builds "
                    "yolov5s.yaml as the anchor-free YOLOv5u), or a YAML file; key=value overrides its "
                    "fields (epochs=3, model=yolo11n.yaml). Several devices (--device 0,1) train with "
                    "ultralytics' DDP.",
        epilog=f"presets: {', '.join(PRESETS)}; every result row names its protocol (name-hash).")
    p.add_argument("--data", required=True, help="dataset card (built-in name or YAML path)")
    p.add_argument("--root", help="dataset folder (overrides the card's root)")
    p.add_argument("--methods", help="comma-separated fusion methods (ir and vis are always added)")
    p.add_argument("--no-refs", action="store_true", help="do not add the ir and vis reference rows")
    p.add_argument("--weights", action="append", metavar="METHOD=PATH",
                   help="fusion weights of a learned method (repeatable)")
    p.add_argument("--fused", action="append", metavar="NAME=DIR",
                   help="precomputed fused images (DIR/<split>/<id>.png, or all in DIR); adds NAME to the "
                        "methods")
    p.add_argument("--protocol", default="quick", help="preset (quick, paper) or YAML file (default quick)")
    p.add_argument("--seeds", help="comma-separated training seeds (default: the protocol's seed)")
    p.add_argument("--fixed", metavar="REF",
                   help="fixed-detector screening: train once on REF's fused images, evaluate every method")
    p.add_argument("--fixed-checkpoint", metavar="PT",
                   help="fixed-detector screening with a given ultralytics checkpoint")
    p.add_argument("--train-split", default="train")
    p.add_argument("--test-split", default="test")
    p.add_argument("--cache", help="fusion cache folder (default <out>/fused)")
    p.add_argument("--device", default="auto", help="auto (the GPU where there is one, else cpu), cpu, cuda:N, N, or a "
                   "list 0,1 for ultralytics DDP training (default auto)")
    p.add_argument("--threads", type=int,
                   help="CPU threads (default: torch's default); use 1 on a machine busy with other jobs "
                        "(two threads on two busy cores trained 11x slower than one)")
    p.add_argument("--workers", type=int, default=0, help="dataloader worker processes (default 0)")
    p.add_argument("--backend", default="auto", choices=BACKENDS,
                   help="COCO scorer (auto: faster-coco-eval when installed, else pycocotools)")
    p.add_argument("--out", help="run directory (default runs/detect/<time>)")
    p.add_argument("--resume", action="store_true",
                   help="continue --out; finished (method, seed) cells are kept")
    p.add_argument("--json", action="store_true", help="print the summary (mean and std over seeds) as JSON")
    add_overrides(p)
    p.set_defaults(func=run_detect)

    s = sub.add_parser("score-det", help="score existing detection predictions (COCO mAP)",
                       description="Score predictions against ground truth with COCO AP. Either side may be "
                                   "a COCO JSON file or a folder of YOLO txt files; predictions need a "
                                   "confidence column ('cls cx cy w h conf'); YOLO ground truth needs "
                                   "--images for the image sizes.")
    s.add_argument("--gt", required=True, help="COCO ground-truth JSON or YOLO label folder")
    s.add_argument("--pred", required=True, help="COCO results JSON or YOLO txt folder with confidences")
    s.add_argument("--images", help="image folder (image sizes for YOLO ground truth)")
    s.add_argument("--classes", help="class names file for YOLO ground truth (default classes.txt beside it)")
    s.add_argument("--backend", default="auto", choices=BACKENDS)
    s.add_argument("--json", action="store_true", help="print the metrics as JSON")
    s.set_defaults(func=run_score)

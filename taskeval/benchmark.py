"""``taskeval benchmark``: methods x tasks x seeds, each cell computed once, resumable and shardable.

A config names the dataset, the methods (registered, plug-in, trained here, or a folder of fused
images), the tasks (detection, segmentation, quality), the seeds and the task protocols. The run
fuses every method once per split (cached), then runs each missing cell and records it in the results
store (:mod:`taskeval.store`); tables, statistics, figures and the report read only that store.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from fusion_models import get_fusion_spec
from taskeval.config import build, deep_merge, parse_overrides, read_yaml_mapping, to_dict
from taskeval.data import PairedDataset, load_card
from taskeval.data.synth import SynthConfig, generate
from taskeval.devices import pick_device, tensor_device
from taskeval.errors import ConfigError, TaskevalError
from taskeval.filelock import file_lock
from taskeval.fingerprint import dataset_fingerprint, digest
from taskeval.fusedset import FusedSet, fuse_split, precomputed_set
from taskeval.fusion_train import TRAINED_NOTE, FusionTrainConfig, train_fusion
from taskeval.results import OVERALL, Row
from taskeval.rundir import RunDir, atomic_write_json
from taskeval.store import Cell, ResultsStore, shard_cells

log = logging.getLogger(__name__)
TASKS = ("detection", "segmentation", "quality")


@dataclass(frozen=True)
class MethodEntry:
    """One column of the benchmark.

    Attributes:
        name: a registered fusion method, or (with ``folder``) the display name of external results.
        weights: checkpoint path, ``"official"`` ($TASKEVAL_WEIGHTS_DIR), or ``"train"`` (train it here with
            the unsupervised fusion loss on the training split; reported as such).
        folder: precomputed fused images: a folder with one sub-folder per split (``<folder>/train``,
            ``<folder>/test``) holding ``<id>.png``; or a pattern containing ``{split}``.
        text_dir: per-image text embeddings for methods that take text.
    """

    name: str
    weights: str | None = None
    folder: str | None = None
    text_dir: str | None = None


@dataclass(frozen=True)
class DataEntry:
    card: str = "synth"
    root: str | None = None
    train_split: str = "train"
    test_split: str = "test"
    synth: SynthConfig = SynthConfig()


@dataclass(frozen=True)
class FiguresEntry:
    """The ``figures:`` section: which scenes the image grids show and how (see taskeval.figures)."""

    scenes: tuple[str, ...] = ()   # test ids; empty = chosen where methods disagree most
    n_scenes: int = 3
    score_threshold: float = 0.25  # detection boxes drawn from this score
    insets: dict = field(default_factory=dict)  # test id -> [x, y, w, h] pixel region magnified in every panel
    draw_gt: bool = False          # ground-truth boxes (dashed) in the detection grid
    radar: str = "minmax"          # radar axis normalisation: minmax or rank


@dataclass(frozen=True)
class BenchmarkConfig:
    name: str = "benchmark"
    data: DataEntry = DataEntry()
    methods: tuple[MethodEntry, ...] = (MethodEntry("ir"), MethodEntry("vis"))
    tasks: tuple[str, ...] = TASKS
    seeds: tuple[int, ...] = (0,)
    det_protocol: str = "quick"
    det: dict = field(default_factory=dict)
    seg_protocol: str = "quick"
    seg: dict = field(default_factory=dict)
    fusion_train: FusionTrainConfig = FusionTrainConfig()
    quality_metrics: tuple[str, ...] = ()
    device: str = "auto"           # auto: the GPU where there is one (taskeval.devices)
    figures: FiguresEntry = FiguresEntry()


def builtin_configs() -> dict[str, Path]:
    folder = Path(__file__).parent / "benchmarks"
    return {p.stem: p for p in sorted(folder.glob("*.yaml"))}


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
    raw = deep_merge(raw, parse_overrides(overrides or []))
    methods = raw.get("methods")
    if isinstance(methods, str):
        methods = [m.strip() for m in methods.split(",") if m.strip()]
    if methods is not None:
        raw["methods"] = [m if isinstance(m, dict) else {"name": str(m)} for m in methods]
    cfg = build(BenchmarkConfig, raw)
    bad = [t for t in cfg.tasks if t not in TASKS]
    if bad:
        raise ConfigError(f"unknown task(s) {bad}; tasks are {', '.join(TASKS)}")
    names = [m.name for m in cfg.methods]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(f"methods listed twice: {dup}")
    for m in cfg.methods:
        if m.folder is None:
            get_fusion_spec(m.name)  # unknown names fail here, with a suggestion
    return cfg


# ----------------------------------------------------------------------------------------------- the run
class Benchmark:
    """Plans and runs the cells of one config in one run directory."""

    def __init__(self, cfg: BenchmarkConfig, run: RunDir, progress: bool = True):
        self.cfg = cfg
        self.run = run
        self.store = ResultsStore(run.path)
        self.progress = progress
        self.device = pick_device(cfg.device)          # detection: may be a list (ultralytics DDP)
        self.tensor_device = tensor_device(self.device)  # everything else: the first device
        self.card = self._dataset_card()
        self.train_ds = PairedDataset(self.card, cfg.data.train_split)
        self.test_ds = PairedDataset(self.card, cfg.data.test_split)
        atomic_write_json(run.path / "dataset.json", {"card": str(self.card_source), "root": str(self.card.root),
                                                      "train_split": cfg.data.train_split,
                                                      "test_split": cfg.data.test_split})
        for task, has, what in (("detection", "has_boxes", "detection labels"),
                                ("segmentation", "has_masks", "segmentation masks")):
            lacking = [ds.split for ds in (self.train_ds, self.test_ds) if not getattr(ds, has)]
            if task in cfg.tasks and lacking:  # before any training, not after it
                raise ConfigError(f"task {task!r} needs {what}, but {self.card.name} split(s) {lacking} have none")
        self._fused: dict[tuple[str, str], FusedSet] = {}
        self._notes: dict[str, str] = {}
        self._inputs: dict[str, dict] = {}
        self._split_digest = {ds.split: dataset_fingerprint(ds, labels=True, save_to=self.manifests)
                              for ds in (self.train_ds, self.test_ds)}
        self.det_protocol = self.seg_protocol = None
        if "detection" in cfg.tasks:
            from detectors.protocol import load_protocol as load_det

            self.det_protocol = load_det(cfg.det_protocol, [f"{k}={v}" for k, v in cfg.det.items()])
        if "segmentation" in cfg.tasks:
            from segmenters.protocol import load_protocol as load_seg

            self.seg_protocol = load_seg(cfg.seg_protocol, [f"{k}={_yaml_value(v)}" for k, v in cfg.seg.items()])
        self._write_protocols()

    @property
    def manifests(self) -> Path:
        """Where the run keeps the dataset manifests its cells' inputs name (to say which files changed)."""
        return self.run.path / "inputs"

    def _write_protocols(self) -> None:
        """``RUN/protocols.json``: every protocol id of this run with all its fields (for the report)."""
        path = self.run.path / "protocols.json"
        known = json.loads(path.read_text()) if path.is_file() else {}
        if self.det_protocol is not None:
            known[self.det_protocol.id] = {"task": "detection", **asdict(self.det_protocol)}
        if self.seg_protocol is not None:
            known[_seg_id(self.seg_protocol)] = {"task": "segmentation", **asdict(self.seg_protocol)}
        atomic_write_json(path, known)

    def _dataset_card(self):
        data = self.cfg.data
        if data.card == "synth":
            out = Path(data.root) if data.root else self.run.path / "data" / "synth"
            self.card_source = generate(out, data.synth, progress=self.progress)
            return load_card(self.card_source)
        self.card_source = data.card
        return load_card(data.card, data.root)

    # ---- planning
    def cells(self) -> list[Cell]:
        out = []
        ds = self.card.name
        for task in self.cfg.tasks:
            for m in self.cfg.methods:
                if task == "quality":
                    out.append(Cell(m.name, task, ds, "-", None))
                    continue
                protocol = (self.det_protocol if task == "detection" else self.seg_protocol)
                pid = protocol.id if task == "detection" else _seg_id(protocol)
                out.extend(Cell(m.name, task, ds, pid, s) for s in self.cfg.seeds)
        return out

    # ---- fusion
    def fused(self, entry: MethodEntry, split: str) -> FusedSet:
        key = (entry.name, split)
        if key in self._fused:
            return self._fused[key]
        ds = self.train_ds if split == self.cfg.data.train_split else self.test_ds
        if entry.folder is not None:
            folder = entry.folder.format(split=split) if "{split}" in entry.folder else str(Path(entry.folder) / split)
            fs = precomputed_set(folder, ds, name=entry.name, manifests=self.manifests)
            self._notes[entry.name] = "precomputed fused images"
        else:
            weights = entry.weights
            if weights == "train":
                weights = str(self._train_fusion(entry))
                self._notes[entry.name] = TRAINED_NOTE
            elif weights == "official":
                self._notes[entry.name] = "official weights"
            fs = fuse_split(ds, entry.name, self.run.path / "fused", weights=weights, device=self.tensor_device,
                            progress=self.progress, text_dir=entry.text_dir)
        self._fused[key] = fs
        return fs

    def _train_fusion(self, entry: MethodEntry) -> Path:
        # one folder per training configuration: weights trained with other settings are never reused
        out = self.run.path / "fusion_train" / f"{entry.name}-{digest(to_dict(self.cfg.fusion_train), 8)}"
        final = out / "fusion.pth"
        with file_lock(out.with_suffix(".lock")):  # shards: the first trains, the others wait and reuse
            if final.is_file():
                return final
            log.info("training %s with the fusion loss on %s/%s", entry.name, self.card.name, self.train_ds.split)
            return train_fusion(entry.name, self.train_ds, out, self.cfg.fusion_train, device=self.tensor_device,
                                progress=self.progress)

    # ---- cells
    def run_cell(self, cell: Cell) -> None:
        entry = next(m for m in self.cfg.methods if m.name == cell.method)
        t0 = time.perf_counter()
        cell_dir = self.store.cell_dir(cell)
        test = self.fused(entry, self.cfg.data.test_split)
        note = self._notes.get(entry.name, "")
        if cell.task == "quality":
            rows = self._quality(cell, test, cell_dir, note)
        else:
            train = self.fused(entry, self.cfg.data.train_split)
            if cell.task == "detection":
                rows = self._detection(cell, train, test, cell_dir, note)
            else:
                rows = self._segmentation(cell, train, test, cell_dir, note)
        self.store.finish(cell, rows, {"seconds": round(time.perf_counter() - t0, 2),
                                       "fused_test_dir": str(Path(next(iter(test.paths.values()))).parent),
                                       "note": note, "inputs": self.inputs(entry),
                                       **({"metrics": self.quality_metric_names()} if cell.task == "quality" else {})})

    def inputs(self, entry: MethodEntry) -> dict:
        """What a cell's numbers depend on besides its key (method name, task, dataset name, protocol id,
        seed): the method's weights (file hash) or folder (its files), and the dataset (ids, image sizes,
        labels). Checked on resume."""
        if entry.name not in self._inputs:
            file_digest = weight_file_hash(entry)
            if entry.weights == "train":
                weights = {"trained here": to_dict(self.cfg.fusion_train)}
            else:
                weights = "sha256:" + file_digest if file_digest else entry.weights
            folder = None
            if entry.folder is not None:  # the folder's files by content, as the fused set's key holds them
                folder = {"test": self.fused(entry, self.cfg.data.test_split).key_parts}
            self._inputs[entry.name] = {"weights": weights, "folder": folder, "dataset": self._split_digest}
        return self._inputs[entry.name]

    def quality_metric_names(self) -> list[str]:
        from taskeval.metrics.quality import QUALITY_ORDER

        return list(self.cfg.quality_metrics) or list(QUALITY_ORDER)

    def needs(self, cell: Cell) -> bool:
        """Not finished yet; a finished quality cell also counts as unfinished when the config asks for
        metrics it lacks (they are computed from the same fused images; its rows are replaced whole)."""
        meta = self.store.meta(cell)
        if meta is None:
            return True
        return cell.task == "quality" and not set(self.quality_metric_names()) <= set(meta.get("metrics", ()))

    def check_resumable(self, cells: list[Cell]) -> None:
        """Refuse to mix: finished cells whose recorded inputs differ from this config's (other weights, another
        folder, other images under the same dataset name) would be reused silently."""
        entries = {m.name: m for m in self.cfg.methods}
        stale = self.store.stale(cells, lambda cell: self.inputs(entries[cell.method]))
        if stale:
            raise TaskevalError(self.store.stale_message(stale, [self.manifests]))

    def _detection(self, cell, train, test, cell_dir, note) -> list[Row]:
        from detectors import yolo
        from taskeval.metrics.detection import dataset_ground_truth, score_predictions, write_json

        protocol = replace(self.det_protocol, seed=cell.seed)
        state = self.run.third_party_dir()  # ultralytics' settings and font: one folder per run
        ckpt = yolo.train(train, self.train_ds, protocol, cell_dir / "work", device=self.device,
                          seed=cell.seed, state_dir=state, progress=False)  # one progress bar: the benchmark's
        preds = yolo.predict(ckpt, test, protocol, device=self.device, state_dir=state)
        gt = dataset_ground_truth(self.test_ds)
        scores, dets = score_predictions(preds, gt)
        write_json(cell_dir / "gt.json", gt)
        write_json(cell_dir / "predictions.json", dets)
        return scores.rows(cell.method, cell.dataset, cell.protocol, cell.seed, note)

    def _segmentation(self, cell, train, test, cell_dir, note) -> list[Row]:
        import torch

        from segmenters import deeplab
        from segmenters.protocol import with_seed
        from taskeval.metrics.segmentation import SegScores, seg_confusion_matrix

        protocol = with_seed(self.seg_protocol, cell.seed)
        ckpt = deeplab.train(train, self.train_ds, protocol, cell_dir / "work", device=self.tensor_device,
                             progress=False)  # one overall progress bar: the benchmark's
        preds = deeplab.predict(ckpt, test, protocol, device=self.tensor_device, progress=False)
        deeplab.write_label_pngs(preds, cell_dir / "pred")
        classes = self.card.seg_classes
        per_image = []
        for i, sid in enumerate(self.test_ds.ids):
            gt = torch.from_numpy(self.test_ds.mask(i))
            per_image.append(seg_confusion_matrix(torch.from_numpy(preds[sid]).long(), gt, len(classes),
                                                  self.card.ignore_index).numpy())
        per_image = np.stack(per_image)
        np.savez_compressed(cell_dir / "per_image_confmat.npz", ids=np.array(self.test_ds.ids), confmat=per_image)
        scores = SegScores.from_confmat(per_image.sum(0), classes)
        return seg_rows(scores, cell, note)

    def _quality(self, cell, test, cell_dir, note) -> list[Row]:
        from taskeval.quality_eval import score_fused_set

        per_image = score_fused_set(test, self.test_ds, self.quality_metric_names(), device=self.tensor_device)
        lines = ["id,metric,value"] + [f"{sid},{m},{v!r}" for (sid, m), v in per_image.items()]
        (cell_dir / "per_image.csv").write_text("\n".join(lines) + "\n")
        metrics = sorted({m for _, m in per_image})
        return [Row(cell.method, "quality", cell.dataset, "-", None, m, OVERALL,
                    float(np.mean([v for (_, mm), v in per_image.items() if mm == m])), note) for m in metrics]

    # ---- everything
    def execute(self, shard: tuple[int, int] | None = None) -> list[Cell]:
        """Run every missing cell of this shard; returns the cells computed now."""
        self.check_resumable(self.cells())
        todo = [c for c in shard_cells(self.cells(), shard) if self.needs(c)]
        done_before = len(self.cells()) - len(todo)
        bar = tqdm(total=len(self.cells()), initial=done_before, desc="benchmark", unit="cell",
                   disable=not self.progress, position=0)
        computed = []
        for cell in todo:
            bar.set_postfix_str(f"{cell.task} {cell.method}" + (f" seed {cell.seed}" if cell.seed is not None else ""))
            self.run_cell(cell)
            computed.append(cell)
            bar.update(1)
        bar.close()
        self.store.merge()
        return computed


def seg_rows(scores, cell: Cell, note: str) -> list[Row]:
    def row(metric, cls, value):
        return Row(cell.method, "segmentation", cell.dataset, cell.protocol, cell.seed, metric, cls, float(value), note)

    out = [row("mIoU", OVERALL, scores.miou), row("mIoU_nobg", OVERALL, scores.miou_nobg),
           row("mAcc", OVERALL, scores.macc), row("pixel_acc", OVERALL, scores.pixel_acc)]
    out += [row("IoU", n, v) for n, v in zip(scores.class_names, scores.iou)]
    out += [row("Acc", n, v) for n, v in zip(scores.class_names, scores.acc)]
    return out


def _seg_id(p) -> str:
    from segmenters.protocol import protocol_id

    return protocol_id(p)


def _yaml_value(v) -> str:
    if isinstance(v, (list, tuple)):
        return ",".join(str(x) for x in v)
    return str(v)


def weight_file_hash(entry: MethodEntry) -> str | None:
    """sha256 of a method's weight file; None for no weights, ``train``, ``official`` or a missing path."""
    w = entry.weights
    if not w or w in ("train", "official") or not Path(w).is_file():
        return None
    from fusion_models.weights import file_hash

    return file_hash(w, 64)


def weight_hashes(cfg: BenchmarkConfig) -> dict[str, str]:
    """method -> sha256 of its weight file, for the run's provenance."""
    return {m.name: h for m in cfg.methods if (h := weight_file_hash(m))}

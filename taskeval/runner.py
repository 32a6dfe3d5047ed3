"""One runner behind every command: plan the cells of a :class:`~taskeval.benchmark.BenchmarkConfig`, then
compute each missing cell into the run's results store (:mod:`taskeval.store`).

A cell is (method, task, dataset, protocol, seed). For each, the runner

1. gets the method's fused images of the training and test splits (:mod:`taskeval.fusedset`: cached by
   content; precomputed folders; weights ``train`` are trained here once with the fusion loss);
2. trains the task network on the training images (:meth:`Task.train`; resumable inside the cell's
   ``work/`` folder), or, under the fixed protocol, takes the one network of the reference method for
   that seed (``RUN/reference/``) or a given checkpoint;
3. evaluates it on the test images (:meth:`Task.evaluate`), which writes the task's artefacts, and
   records the rows and ``cell.json`` atomically (``cell.json`` last: its presence marks the cell done).

Resume = skip done cells (a cell whose task options grew, e.g. new quality metrics, is computed again);
finished cells whose recorded inputs (weights, precomputed files, dataset files, by content) differ from
what the config gives now are refused with what changed. Shards (``--shard i/n``) compute every n-th
cell into one shared store; dataset generation, fusion caches, fusion training and reference networks
are file-locked so that one process computes them and the others reuse them. Under ``torchrun`` every
process runs the same cells: tasks whose spec says ``distributed`` train on all processes, the others
on process 0, and process 0 alone evaluates and writes. A cell that raises is recorded as failed
(``cells/<id>/failed.json`` + ``error.txt`` with the traceback) and the other cells go on, unless
``keep_going=False``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from fusion_models import get_fusion_spec
from taskeval import distributed
from taskeval.benchmark import BenchmarkConfig, MethodEntry
from taskeval.config import to_dict
from taskeval.data import PairedDataset, load_card
from taskeval.data.synth import generate
from taskeval.errors import ConfigError, TaskevalError
from taskeval.filelock import file_lock
from taskeval.fingerprint import dataset_fingerprint, digest, file_digest
from taskeval.fusedset import FusedSet, fuse_split, precomputed_set
from taskeval.fusion_train import TRAINED_NOTE, train_fusion
from taskeval.rundir import atomic_write_json
from taskeval.store import Cell, ResultsStore, shard_cells
from taskeval.tasks import EvalContext, Execution, Task, TrainContext, check_fractions, get_task

log = logging.getLogger(__name__)


def fixed_protocol_id(ref: str, pid: str) -> str:
    """``fixed:REF@<protocol id>``: cells evaluated with the network trained on method REF's images."""
    return f"fixed:{ref}@{pid}"


# ------------------------------------------------------------------------------------------------ plan
class Plan:
    """What a run computes: its dataset splits, methods, tasks with their protocols, seeds -> cells.

    Building a plan reads the dataset (every label file checked by the tasks) and resolves every
    protocol and weight file, so a bad config fails before any training. Nothing heavy runs here but
    the dataset generation of ``card: synth``.
    """

    def __init__(self, cfg: BenchmarkConfig, run_path: str | Path, progress: bool = True,
                 check_data: bool = True):
        self.cfg = cfg
        self.path = Path(run_path)
        self.progress = progress
        self.card = self._card()
        self.tasks: dict[str, Task] = {t: get_task(t) for t in cfg.tasks}
        self.test_ds = PairedDataset(self.card, cfg.data.test_split)
        self.specs = {t: task.run_spec(cfg.task_options(t)) for t, task in self.tasks.items()}
        self.protocols = {}
        for t, task in self.tasks.items():
            options = cfg.task_options(t) if task.spec.trains else {}
            self.protocols[t] = task.load_protocol(cfg.protocol_name(t), options)
        self.entries = {m.name: m for m in cfg.methods}
        self.checkpoints: dict[str, Path] = {}
        for t, ckpt in cfg.fixed_checkpoint.items():
            path = Path(ckpt).resolve()
            if not path.is_file():
                raise ConfigError(f"fixed checkpoint of {t} not found: {ckpt}")
            self.checkpoints[t] = path
        needs_train = any(self.tasks[t].spec.trains and t not in self.checkpoints for t in self.tasks) or any(
            m.weights == "train" for m in cfg.methods)
        # the training split is read only when something is trained on it
        self.train_ds = PairedDataset(self.card, cfg.data.train_split) if needs_train else None
        if check_data:
            missing = self.missing_weights()
            if missing:
                raise ConfigError("official weights not found (TASKEVAL_WEIGHTS_DIR="
                                  f"{os.environ.get('TASKEVAL_WEIGHTS_DIR') or 'unset'}):\n" +
                                  "\n".join(f"  {m.method}: {m.file} ({m.where})" for m in missing) +
                                  "\nput them in that folder, or leave those methods out (methods=...)")
            for t, task in self.tasks.items():
                for ds in self.splits_of(t):
                    task.check_data(ds)  # before any training, not after it

    def missing_weights(self) -> list:
        """The official weight files the methods with ``weights: official`` need and lack, with where the
        authors publish them (:func:`fusion_models.weights.missing_official_weights`)."""
        from fusion_models.weights import missing_official_weights

        official = [m.name for m in self.cfg.methods if "official" in (m.weights, *m.seed_weights.values())]
        return missing_official_weights([n.split("@")[0] for n in official]) if official else []

    def _card(self):
        data = self.cfg.data
        if data.card == "synth":
            out = Path(data.root) if data.root else self.path / "data" / "synth"
            self.card_source = generate(out, data.synth, progress=self.progress)
            return load_card(self.card_source)
        self.card_source = data.card
        return load_card(data.card, data.root)

    def splits_of(self, task: str) -> list[PairedDataset]:
        """The splits a task reads: the test split, and the training split unless nothing is trained."""
        trains = self.tasks[task].spec.trains and task not in self.checkpoints
        return [self.train_ds, self.test_ds] if trains else [self.test_ds]

    @property
    def splits(self) -> list[PairedDataset]:
        return [ds for ds in (self.train_ds, self.test_ds) if ds is not None]

    # ---- cells
    def protocol_id(self, task: str) -> str:
        """The ``Row.protocol`` of a task's cells: the protocol id, or its fixed-network variant."""
        pid = self.tasks[task].protocol_id(self.protocols[task])
        if task in self.checkpoints:
            return f"fixed:ckpt-{file_digest(self.checkpoints[task], 8)}@{pid}"
        if self.cfg.fixed is not None and self.tasks[task].spec.trains:
            return fixed_protocol_id(self.cfg.fixed, pid)
        return pid

    def seeds_of(self, task: str, entry: MethodEntry) -> list[int | None]:
        if task in self.checkpoints:
            return [None]
        if not self.tasks[task].spec.trains and not entry.seed_weights:
            return [None]
        return list(entry.seeds if entry.seeds is not None else self.cfg.seeds)

    def cells(self) -> list[Cell]:
        """Every cell, in a deterministic order (task, method, seed): every process computes the same list."""
        out = []
        for task in self.cfg.tasks:
            pid = self.protocol_id(task)
            for m in self.cfg.methods:
                out.extend(Cell(m.name, task, self.card.name, pid, s) for s in self.seeds_of(task, m))
        return out

    def cell_protocol(self, cell: Cell):
        return self.tasks[cell.task].with_seed(self.protocols[cell.task], cell.seed)

    def trains_per_method(self, task: str) -> bool:
        return self.tasks[task].spec.trains and task not in self.checkpoints and self.cfg.fixed is None

    # ---- records
    def write_records(self) -> None:
        """``dataset.json``, ``protocols.json`` and ``tasks.json`` of the run (merged with earlier ones)."""
        atomic_write_json(self.path / "dataset.json", {
            "card": str(self.card_source), "root": str(self.card.root), "train_split": self.cfg.data.train_split,
            "test_split": self.cfg.data.test_split})
        for name, update in (("protocols.json", {self.protocol_id(t): {"task": t, **self.tasks[t].describe_protocol(
                                 self.protocols[t])} for t in self.tasks if self.protocols[t] is not None}),
                             ("tasks.json", {t: s.to_dict() for t, s in self.specs.items()})):
            path = self.path / name
            known = json.loads(path.read_text()) if path.is_file() else {}
            atomic_write_json(path, {**known, **update})


# ---------------------------------------------------------------------------------------------- runner
@dataclass
class RunReport:
    """What :meth:`Runner.execute` did: cells computed now, cells that failed (id -> last error line)."""

    computed: list[Cell] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    skipped: int = 0


class Runner:
    """Computes the cells of a :class:`Plan` into the results store of its run directory."""

    def __init__(self, plan: Plan, exe: Execution | None = None):
        self.plan = plan
        self.cfg = plan.cfg
        self.path = plan.path
        self.store = ResultsStore(self.path)
        self.exe = exe or Execution()
        if self.exe.state_dir is None:
            self.exe.state_dir = self.path / "third_party"
        self._fused: dict[tuple, FusedSet] = {}
        self._inputs: dict[tuple, dict] = {}
        self._fingerprints: dict[str, str] = {}

    @property
    def manifests(self) -> Path:
        """Where the run keeps the file manifests its cells' inputs name (to say which files changed)."""
        return self.path / "inputs"

    @property
    def cache(self) -> Path:
        return Path(self.cfg.cache) if self.cfg.cache else self.path / "fused"

    # ---- fusion
    def fused(self, entry: MethodEntry, split: str, seed: int | None = None) -> FusedSet:
        """The method's fused images of ``split`` (cells of seed ``seed`` when its weights are per seed).

        Under torchrun the processes take turns: process 0 fuses, the others then read the cache.
        """
        ds = self.plan.test_ds if split == self.cfg.data.test_split else self.plan.train_ds
        key = (entry.name, split, seed if entry.seed_weights else None)
        if key in self._fused:
            return self._fused[key]
        fs = None
        for turn in range(self.exe.world):
            if turn == self.exe.rank:
                fs = self._fuse(entry, ds, seed)
            distributed.barrier()
        fs.require(ds.ids)
        self._fused[key] = fs
        return fs

    def _fuse(self, entry: MethodEntry, ds: PairedDataset, seed: int | None) -> FusedSet:
        if entry.folder is not None:
            folder = (entry.folder.format(split=ds.split) if "{split}" in entry.folder
                      else str(Path(entry.folder) / ds.split))
            if not Path(folder).is_dir() and Path(entry.folder).is_dir() and "{split}" not in entry.folder:
                # one flat folder with the images of every split (as `detect --fused` accepts)
                return precomputed_set(entry.folder, ds, name=entry.name, allow_extra=True, manifests=self.manifests)
            return precomputed_set(folder, ds, name=entry.name, manifests=self.manifests)
        weights = entry.weights_for(seed)
        if weights == "train":
            weights = str(self._train_fusion(entry))
        return fuse_split(ds, entry.name, self.cache, weights=weights, device=self.exe.tensor_device,
                          progress=self.exe.progress and self.exe.is_main, text_dir=entry.text_dir,
                          io=self.cfg.io_of(entry))

    def _train_fusion(self, entry: MethodEntry) -> Path:
        # one folder per training configuration: weights trained with other settings are never reused
        out = self.path / "fusion_train" / f"{entry.name}-{digest(self._trained_here(), 8)}"
        final = out / "fusion.pth"
        with file_lock(out.with_suffix(".lock")):  # shards: the first trains, the others wait and reuse
            if final.is_file():
                return final
            log.info("training %s with the fusion loss on %s/%s", entry.name, self.plan.card.name,
                     self.plan.train_ds.split)
            return train_fusion(entry.name, self.plan.train_ds, out, self.cfg.fusion_train,
                                device=self.exe.tensor_device, progress=self.exe.progress)

    def note(self, entry: MethodEntry, fused: FusedSet | None = None) -> str:
        """What tables say about a method's weights (trained here, official, precomputed) and, given its
        fused set, where its images came from (``io``: official 8-bit output, recoloured, float pipeline)."""
        io = (fused.meta.get("io_note") or "") if fused is not None else ""
        return "; ".join(n for n in (self._weights_note(entry), io) if n)

    def _weights_note(self, entry: MethodEntry) -> str:
        if entry.folder is not None:
            return "precomputed fused images"
        if entry.weights == "train":
            return TRAINED_NOTE
        if entry.weights == "official":
            return "official weights"
        if entry.seed_weights or (entry.weights and get_fusion_spec(entry.name).trainable):
            from taskeval.fusion_train import weights_note

            w = entry.weights_for(next(iter(entry.seed_weights), None)) if entry.seed_weights else entry.weights
            return weights_note(w) or ""
        return ""

    # ---- inputs (resume checks)
    def inputs(self, cell: Cell) -> dict:
        """What a cell's numbers depend on besides its key: the method's weights (by content) or precomputed
        files, for methods with official code the ``io`` its images are made with, and the dataset (ids,
        images, labels, card settings, by content). Recorded in ``cell.json`` and compared on resume."""
        entry = self.plan.entries[cell.method]
        seed = cell.seed if entry.seed_weights else None
        key = (cell.method, seed)
        if key not in self._inputs:
            weights = entry.weights_for(seed)
            if weights == "train":
                described = self._trained_here()
            elif weights:
                from fusion_models.weights import weights_digest

                described = "sha256:" + weights_digest(get_fusion_spec(entry.name), weights)
            else:
                described = None
            folder = None
            if entry.folder is not None:
                folder = {"test": self.fused(entry, self.cfg.data.test_split).key_parts}
            self._inputs[key] = {"weights": described, "folder": folder}
            if entry.folder is None:
                from taskeval.fusing import image_io

                spec = get_fusion_spec(entry.name)
                if spec.official_image is not None:  # the io changes only the images of methods with official code
                    self._inputs[key]["io"] = image_io(spec, self.cfg.io_of(entry))
        return {**self._inputs[key], "dataset": {ds.split: self._fingerprint(ds) for ds in self.plan.splits_of(cell.task)}}

    def _fingerprint(self, ds: PairedDataset) -> str:
        """The split's files and label settings by content (:func:`dataset_fingerprint`), once per process."""
        if ds.split not in self._fingerprints:
            self._fingerprints[ds.split] = dataset_fingerprint(ds, labels=True, save_to=self.manifests)
        return self._fingerprints[ds.split]

    def _trained_here(self) -> dict:
        """What weights ``train`` depend on: the fusion-training settings and the training images."""
        return {"trained here": to_dict(self.cfg.fusion_train),
                "on": dataset_fingerprint(self.plan.train_ds, labels=False, save_to=self.manifests)}

    def check_resumable(self, cells: list[Cell]) -> None:
        """Refuse to mix: finished cells whose recorded inputs differ from this config's, and finished cells of
        this dataset name (any method, also those no longer configured) computed from other split files,
        images, labels or class lists than this run's."""
        stale = self.store.stale(cells, self.inputs)
        if stale:
            raise TaskevalError(self.store.stale_message(stale, [self.manifests]))
        from taskeval.fingerprint import explain

        now = {ds.split: self._fingerprint(ds) for ds in self.plan.splits}
        planned = {c.id for c in cells}
        for meta in self.store.done_cells():
            if meta["id"] in planned or meta.get("dataset") != self.plan.card.name:
                continue
            recorded = (meta.get("inputs") or {}).get("dataset") or {}
            differ = {s: fp for s, fp in recorded.items() if s in now and fp != now[s]}
            if differ:
                why = explain({s: recorded[s] for s in differ}, {s: now[s] for s in differ}, [self.manifests])
                raise TaskevalError(f"{self.path} holds cells of dataset {self.plan.card.name!r} computed from other "
                                    f"data than this run's ({meta['id']}: {why}); one results store never mixes class "
                                    "lists, split files or images under one dataset name: choose another --out")

    def needs(self, cell: Cell) -> bool:
        """Not finished yet, or finished with task options that the config has outgrown."""
        meta = self.store.meta(cell)
        if meta is None:
            return True
        return self.plan.tasks[cell.task].outdated(meta, self.cfg.task_options(cell.task))

    # ---- one cell
    def _train_context(self, entry: MethodEntry, cell: Cell, work: Path) -> TrainContext:
        return TrainContext(entry.name, cell.seed, self.plan.cell_protocol(cell),
                            self.fused(entry, self.cfg.data.train_split, cell.seed), self.plan.train_ds, work, self.exe)

    def _train(self, task: Task, ctx: TrainContext) -> Path | None:
        """Train on every process for distributed tasks, else on process 0; the checkpoint on every process."""
        ckpt = None
        if task.spec.distributed or self.exe.is_main:
            ckpt = task.train(ctx)
        ckpt = distributed.broadcast_object(str(ckpt) if ckpt is not None else None)
        return Path(ckpt) if ckpt else None

    def reference_checkpoint(self, cell: Cell) -> Path:
        """The fixed-protocol network of ``cell``'s task and seed: trained once on the reference method's
        images (one folder per protocol and training images), or the given checkpoint."""
        if cell.task in self.plan.checkpoints:
            return self.plan.checkpoints[cell.task]
        task = self.plan.tasks[cell.task]
        entry = self.plan.entries[self.cfg.fixed]
        ctx = self._train_context(entry, cell, Path())
        pid = task.protocol_id(ctx.protocol)
        work = self.path / "reference" / cell.task / f"{entry.name}-s{cell.seed}-{pid}-{ctx.fused.key[:8]}"
        ctx.work = work
        done = work / "done.json"
        if done.is_file():
            return Path(json.loads(done.read_text())["checkpoint"])
        with file_lock(work.with_suffix(".lock")) if self.exe.world == 1 else contextlib.nullcontext():
            if done.is_file():
                return Path(json.loads(done.read_text())["checkpoint"])
            ckpt = self._train(task, ctx)
            if self.exe.is_main:
                atomic_write_json(done, {"checkpoint": str(ckpt), "protocol": pid, "method": entry.name,
                                         "train_inputs": ctx.fused.key_parts})
        return ckpt

    def run_cell(self, cell: Cell) -> None:
        entry = self.plan.entries[cell.method]
        task = self.plan.tasks[cell.task]
        t0 = time.perf_counter()
        cell_dir = self.store.cell_dir(cell) if self.exe.is_main else self.store.cells_dir / cell.id
        test = self.fused(entry, self.cfg.data.test_split, cell.seed)
        ckpt, train_s = None, None
        if task.spec.trains:
            if self.plan.trains_per_method(cell.task):
                ckpt = self._train(task, self._train_context(entry, cell, cell_dir / "work"))
                train_s = round(time.perf_counter() - t0, 2)
            else:
                ckpt = self.reference_checkpoint(cell)
        if self.exe.is_main:
            note = self.note(entry, test)
            ctx = EvalContext(cell, cell_dir, self.plan.cell_protocol(cell), test, self.plan.test_ds, self.exe, note,
                              self.cfg.task_options(cell.task))
            rows = task.evaluate(ctx, ckpt)
            check_fractions(self.plan.specs[cell.task], rows)
            self.store.finish(cell, rows, {
                "seconds": round(time.perf_counter() - t0, 2), "train_seconds": train_s,
                "checkpoint": str(ckpt) if ckpt else None, "fused_test_dir": str(Path(next(iter(test.paths.values()))).parent),
                "note": note, "inputs": self.inputs(cell), **task.cell_meta(self.cfg.task_options(cell.task))})
        distributed.barrier()

    # ---- everything
    def prepare(self, cells: list[Cell]) -> None:
        """The shared work of ``cells`` before any training: every fused set they read (precomputed folders
        checked, weights ``train`` trained), so that a missing image or weight file fails first, once."""
        for cell in cells:
            entry = self.plan.entries[cell.method]
            self.fused(entry, self.cfg.data.test_split, cell.seed)
            if self.plan.trains_per_method(cell.task):
                self.fused(entry, self.cfg.data.train_split, cell.seed)
            elif self.plan.tasks[cell.task].spec.trains and cell.task not in self.plan.checkpoints:
                self.fused(self.plan.entries[self.cfg.fixed], self.cfg.data.train_split, cell.seed)

    def pending(self, cells: list[Cell] | None = None, shard: tuple[int, int] | None = None) -> list[Cell]:
        """The cells of ``cells`` (default: the plan's) in this shard that are not done (or are outdated)."""
        chosen = self.plan.cells() if cells is None else cells
        return [c for c in shard_cells(chosen, shard) if self.needs(c)]

    def execute(self, shard: tuple[int, int] | None = None, cells: list[Cell] | None = None,
                keep_going: bool = True) -> RunReport:
        """Run every missing cell of ``cells`` (default: the plan's) in this shard; merge ``results.csv``."""
        every = self.plan.cells()
        if self.exe.is_main:
            self.plan.write_records()
        self.check_resumable(every)
        chosen = every if cells is None else cells
        todo = self.pending(chosen, shard)
        for cell in shard_cells(chosen, shard):
            if cell not in todo:
                log.info("cell %s: done before, skipped", cell.id)
        self.prepare(todo)
        report = RunReport(skipped=len(chosen) - len(todo))
        bar = tqdm(total=len(chosen), initial=len(chosen) - len(todo), desc="cells", unit="cell",
                   disable=not (self.exe.progress and self.exe.is_main), position=0)
        for cell in todo:
            bar.set_postfix_str(f"{cell.task} {cell.method}" + (f" seed {cell.seed}" if cell.seed is not None else ""))
            try:
                self.run_cell(cell)
                if self.exe.is_main:
                    self.store.clear_failure(cell)
                report.computed.append(cell)
            except Exception as exc:
                if not keep_going or self.exe.world > 1:
                    raise
                line = f"{type(exc).__name__}: {exc}".splitlines()[0]
                report.failed[cell.id] = line
                self.store.record_failure(cell, traceback.format_exc(), line)
                log.error("cell %s failed: %s (traceback in %s)", cell.id, line,
                          self.store.cells_dir / cell.id / "error.txt")
            bar.update(1)
        bar.close()
        if self.exe.is_main:
            self.store.merge()
        return report


def make_execution(device: str = "auto", threads: int | None = None, workers: int = 0, progress: bool = True,
                   backend: str = "auto", state_dir: Path | None = None) -> Execution:
    """The execution settings of this process (device names resolved, torchrun joined if launched by it)."""
    import torch

    from taskeval.devices import pick_device, tensor_device

    picked = pick_device(device)
    info = distributed.init_distributed(tensor_device(picked)) if distributed.world_from_env() > 1 else None
    if threads:
        torch.set_num_threads(threads)
    if info is not None:
        dev = info.device
        return Execution(str(dev), dev, threads, workers, progress, state_dir, backend, info.rank, info.world)
    return Execution(picked, tensor_device(picked), threads, workers, progress, state_dir, backend)


"""The training loop of the segmentation network: poly learning rate, augmentation, mixed precision,
checkpoints with exact resume, DDP, and a hard stop on a non-finite loss.

Reproducibility: the data order of epoch ``e`` is a permutation seeded by (seed, e), each sample's
augmentation by (seed, e, index), and the torch RNG (dropout) is reseeded at every epoch start, so a
run resumed from ``last.pt`` continues exactly as if it had not stopped (bit-identical on CPU).
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from taskeval import distributed
from segmenters.protocol import SegProtocol, to_plain
from segmenters.transforms import random_scale_crop_flip
from taskeval.data.dataset import PairedDataset
from taskeval.errors import ConfigError, DataError, TrainingError
from taskeval.fusedset import FusedSet

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "taskeval-seg/1"
LAST = "last.pt"
FINAL = "model.pt"
LOG = "train_log.csv"
# last.pt after the first epoch, then after the epoch that ends at least this many seconds of training after the
# previous one: a resumable checkpoint every epoch cost a twentieth of a 30-s CPU training (bench/RESULTS.md)
CHECKPOINT_EVERY_S = 30.0


class TrainPairs(torch.utils.data.Dataset):
    """(normalised crop (3,h,w) float32, mask (h,w) int64) of each fused training image.

    ``set_epoch`` must be called before each epoch: it selects the augmentation seeds. A split whose decoded
    images fit in ``ram_budget`` bytes is decoded once and kept (the synthetic benchmark's 120 images take
    29 MB; decoding them again every epoch was a twentieth of its training time); larger ones are read
    from disk every time.
    """

    def __init__(self, fused: FusedSet, ds: PairedDataset, protocol: SegProtocol, ram_budget: int = 256 << 20):
        self.fused, self.ds, self.p = fused, ds, protocol
        self.ids = list(ds.ids)
        self.epoch = 0
        self.ram_budget = ram_budget
        self._kept: dict[int, tuple[np.ndarray, np.ndarray]] | None = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.ids)

    def load(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(H,W,3) fused image in [0,1] and (H,W) int64 mask of training sample ``k`` (read-only when kept)."""
        if self._kept is not None and k in self._kept:
            return self._kept[k]
        img, mask = self._read(k)
        if self._kept is None:  # the first sample decides: the split's images are assumed to be alike in size
            fits = (img.nbytes + mask.nbytes) * len(self.ids) <= self.ram_budget
            self._kept = {} if fits else None
        if self._kept is not None:
            img.flags.writeable = mask.flags.writeable = False  # augmentation must copy, never edit in place
            self._kept[k] = (img, mask)
        return img, mask

    def _read(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        sid = self.ids[k]
        img = self.fused.read(sid)
        mask = self.ds.mask(self.ds.index(sid))
        if mask is None:
            raise DataError(f"{self.ds.card.name}/{self.ds.split}: pair {sid!r} has no segmentation mask")
        if img.shape[:2] != mask.shape:
            raise DataError(f"{self.fused.paths[sid]}: fused image is {img.shape[1]}x{img.shape[0]} but the mask "
                            f"of {sid!r} is {mask.shape[1]}x{mask.shape[0]}")
        return img, mask

    def __getitem__(self, k: int):
        img, mask = self.load(k)
        rng = np.random.default_rng([self.p.seed, self.epoch, k])
        x, y = random_scale_crop_flip(img, mask, rng, tuple(self.p.crop_size), tuple(self.p.scale_range),
                                      self.p.hflip, self.p.vflip, self.ds.card.ignore_index)
        return torch.from_numpy(x), torch.from_numpy(y)


def epoch_batches(n: int, batch: int, seed: int, epoch: int, rank: int = 0, world: int = 1) -> list[list[int]]:
    """This process's share of every full global batch of epoch ``epoch`` (the last partial batch is dropped)."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    perm = torch.randperm(n, generator=g).tolist()
    per = batch // world
    return [perm[b * batch + rank * per: b * batch + (rank + 1) * per] for b in range(n // batch)]


def poly_lr(base: float, it: int, total: int, power: float, warmup: int) -> float:
    """Poly decay ``base * (1 - it/total)**power`` after a linear warm-up from ``base * 1e-3``."""
    if it < warmup:
        return base * (1e-3 + (1 - 1e-3) * it / warmup)
    return base * max(0.0, 1.0 - it / total) ** power


class SegLoss(nn.Module):
    """Cross-entropy or OHEM cross-entropy over the non-ignored pixels; 0 when a batch has none."""

    def __init__(self, protocol: SegProtocol, num_classes: int, ignore_index: int):
        super().__init__()
        if protocol.class_weights and len(protocol.class_weights) != num_classes:
            raise ConfigError(f"class_weights has {len(protocol.class_weights)} values for {num_classes} classes")
        weight = torch.tensor(protocol.class_weights, dtype=torch.float32) if protocol.class_weights else None
        self.register_buffer("weight", weight)
        self.kind = protocol.loss
        self.ignore_index = ignore_index
        self.thresh = -math.log(protocol.ohem_thresh)
        self.min_kept = protocol.ohem_min_kept

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        valid = target != self.ignore_index
        if not valid.any():  # a crop of padding only: no signal, but keep the graph for DDP
            return logits.sum() * 0.0
        if self.kind == "ce":
            return F.cross_entropy(logits, target, weight=self.weight, ignore_index=self.ignore_index)
        per_pixel = F.cross_entropy(logits, target, weight=self.weight, ignore_index=self.ignore_index,
                                    reduction="none")[valid]
        n_min = max(1, int(self.min_kept * per_pixel.numel()))
        ranked = per_pixel.sort(descending=True).values
        hard = ranked[ranked > self.thresh] if ranked[n_min - 1] > self.thresh else ranked[:n_min]
        return hard.mean()


def _param_groups(model: nn.Module, p: SegProtocol) -> list[dict]:
    encoder = getattr(model, "encoder", None)
    enc_ids = {id(q) for q in encoder.parameters()} if encoder is not None else set()
    enc = [q for q in model.parameters() if id(q) in enc_ids]
    rest = [q for q in model.parameters() if id(q) not in enc_ids]
    groups = [{"params": rest, "lr_mult": 1.0}]
    if enc:
        groups.append({"params": enc, "lr_mult": p.encoder_lr_mult})
    return groups


def build_optimizer(model: nn.Module, p: SegProtocol) -> torch.optim.Optimizer:
    groups = _param_groups(model, p)
    if p.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=p.lr, momentum=p.momentum, weight_decay=p.weight_decay)
    return torch.optim.AdamW(groups, lr=p.lr, weight_decay=p.weight_decay)


def _atomic_save(obj, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_checkpoint_file(path: str | Path) -> dict:
    """A taskeval segmentation checkpoint, loaded with ``weights_only=True`` on the CPU."""
    path = Path(path)
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise TrainingError(f"checkpoint not found: {path}") from None
    except Exception as exc:
        raise TrainingError(f"{path}: cannot be loaded safely with weights_only=True ({exc})") from exc
    if not isinstance(ck, dict) or ck.get("format") != CHECKPOINT_FORMAT:
        raise TrainingError(f"{path}: not a taskeval segmentation checkpoint (format {CHECKPOINT_FORMAT})")
    return ck


def _append_log(path: Path, row: dict) -> None:
    new = not path.exists()
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(row), lineterminator="\n")
    if new:
        w.writeheader()
    w.writerow(row)
    with open(path, "a") as fh:
        fh.write(buf.getvalue())


def fit(model: nn.Module, train_set: FusedSet, train_ds: PairedDataset, protocol: SegProtocol,
        run_dir: str | Path, device: str | torch.device = "cpu", progress: bool = True) -> Path:
    """Train ``model`` on the fused training images and return the path of the final checkpoint.

    Writes into ``run_dir``: ``last.pt`` (model, optimiser, scaler, epoch) after the first epoch and then
    at most every :data:`CHECKPOINT_EVERY_S` seconds of training (removed once ``model.pt`` exists),
    ``model.pt`` (weights + metadata) and ``train_log.csv``. An existing ``model.pt`` made with the same
    protocol and data is returned at once; an existing ``last.pt`` is resumed.

    Args:
        model: a freshly built network (``model.encoder`` gets ``encoder_lr_mult``).
        train_set: fused images of the training split.
        train_ds: the split (masks, class list, ignore index).
        protocol: training settings.
        run_dir: folder for checkpoints and the log.
        device: where to train; under DDP the process's own device.
        progress: show a progress bar (process 0 only).

    Raises:
        TrainingError: non-finite loss (the last ``last.pt`` written is kept), or a
            checkpoint in ``run_dir`` made with another protocol, class list or training data.
        ConfigError: fewer training images than one batch, or a batch not divisible by the DDP size.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    device = torch.device(device)
    dinfo = distributed.current()
    p = protocol
    classes = list(train_ds.card.seg_classes)
    ignore_index = train_ds.card.ignore_index
    train_set.require(train_ds.ids)
    identity = {"format": CHECKPOINT_FORMAT, "protocol": to_plain(p), "classes": classes,
                "ignore_index": ignore_index, "train_inputs": train_set.key_parts, "train_method": train_set.method,
                "dataset": train_ds.card.name}
    manifests = [train_set.meta["manifests"]] if train_set.meta.get("manifests") else []
    final, last = run_dir / FINAL, run_dir / LAST
    if final.is_file():
        _check_identity(load_checkpoint_file(final), identity, final, manifests)
        return final
    n = len(train_ds)
    if n < p.batch:
        raise ConfigError(f"{n} training images are fewer than one batch ({p.batch}); lower batch=")
    if p.batch % dinfo.world:
        raise ConfigError(f"batch {p.batch} is not divisible by the {dinfo.world} DDP processes")
    iters_per_epoch = n // p.batch
    total_iters = iters_per_epoch * p.epochs

    model = model.to(device)
    if dinfo.enabled and device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    criterion = SegLoss(p, len(classes), ignore_index).to(device)
    optimizer = build_optimizer(model, p)
    use_amp = p.amp and device.type == "cuda"
    amp_dtype = torch.bfloat16 if p.amp_dtype == "bfloat16" else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)
    start_epoch, seconds = 0, 0.0
    if last.is_file():
        ck = load_checkpoint_file(last)
        _check_identity(ck, identity, last, manifests)
        model.load_state_dict(ck["model"])
        optimizer.load_state_dict(ck["optimizer"])
        scaler.load_state_dict(ck["scaler"])
        start_epoch, seconds = int(ck["epoch"]), float(ck["train_seconds"])
        log.info("resuming %s from epoch %d of %d (%s)", run_dir, start_epoch, p.epochs, last)
    net = model
    if dinfo.enabled:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    data = TrainPairs(train_set, train_ds, p)
    saved_epoch, since_save = start_epoch, 0.0  # the epoch last.pt holds (0: none yet)

    for epoch in range(start_epoch, p.epochs):
        t0 = time.perf_counter()
        torch.manual_seed(p.seed * 1_000_003 + epoch)
        data.set_epoch(epoch)
        batches = epoch_batches(n, p.batch, p.seed, epoch, dinfo.rank, dinfo.world)
        loader = torch.utils.data.DataLoader(data, batch_sampler=batches, num_workers=p.workers,
                                             pin_memory=device.type == "cuda")
        net.train()
        losses = []
        bar = tqdm(loader, total=len(batches), desc=f"train {train_set.method} epoch {epoch + 1}/{p.epochs}",
                   unit="batch", disable=not progress or not dinfo.is_main, leave=False)
        for step, (x, y) in enumerate(bar):
            it = epoch * iters_per_epoch + step
            lr = poly_lr(p.lr, it, total_iters, p.poly_power, p.warmup_iters)
            for g in optimizer.param_groups:
                g["lr"] = lr * g["lr_mult"]
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
                logits = net(x)
            loss = criterion(logits.float(), y)
            seen = distributed.mean_across(loss.detach())
            if not torch.isfinite(seen):
                kept = (f"the last good checkpoint {last} (epoch {saved_epoch}) is kept" if saved_epoch > 0
                        else "no epoch had finished, so no checkpoint was written")
                raise TrainingError(f"non-finite loss ({float(seen)}) at epoch {epoch + 1}, iteration {it + 1} "
                                    f"while training on {train_set.method!r}; {kept}. Lower lr= or turn amp off.")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            losses.append(float(seen))
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
        seconds += time.perf_counter() - t0
        since_save += time.perf_counter() - t0
        # not after the last epoch: model.pt follows at once
        if (saved_epoch == 0 or since_save >= CHECKPOINT_EVERY_S) and epoch + 1 < p.epochs:
            if dinfo.is_main:
                _atomic_save({**identity, "epoch": epoch + 1, "iteration": (epoch + 1) * iters_per_epoch,
                              "train_seconds": seconds, "model": model.state_dict(),
                              "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict()}, last)
            saved_epoch, since_save = epoch + 1, 0.0
        if dinfo.is_main:
            _append_log(run_dir / LOG, {"epoch": epoch + 1, "loss": f"{np.mean(losses):.6f}",
                                        "lr_end": f"{lr:.3e}", "seconds": f"{time.perf_counter() - t0:.2f}"})
            log.info("%s epoch %d/%d: loss %.4f (%.1f s)", train_set.method, epoch + 1, p.epochs,
                     np.mean(losses), time.perf_counter() - t0)
        distributed.barrier()
    if dinfo.is_main:
        _atomic_save({**identity, "epoch": p.epochs, "iteration": total_iters, "train_seconds": seconds,
                      "model": model.state_dict()}, final)
        last.unlink(missing_ok=True)
    distributed.barrier()
    return final


# Execution settings that may change between an interrupted run and its resumption.
_EXECUTION_ONLY = ("workers", "eval_batch")


def _check_identity(ck: dict, identity: dict, path: Path, manifests=()) -> None:
    """Refuse a checkpoint made from other settings or images, naming every difference (protocol fields,
    classes, and for the training images the weights, settings or files that changed)."""
    from taskeval.fingerprint import explain

    def plain(d: dict) -> dict:
        d = dict(d)
        d["protocol"] = {k: v for k, v in dict(d.get("protocol") or {}).items() if k not in _EXECUTION_ONLY}
        return {k: d.get(k) for k in identity}

    old, new = plain(ck), plain(identity)
    if old != new:
        if "train_inputs" not in ck:
            why = "it was written by an older taskeval that recorded its training images differently"
        else:
            why = explain(old, new, manifests)
        raise TrainingError(f"{path} was made with different settings ({why}); delete it or choose another "
                            "run directory")

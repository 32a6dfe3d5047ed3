"""Semantic-guided joint training: a fusion network trained with fusion loss + lambda x task loss.

Two schedules (``taskeval joint ... schedule=alternating|end2end``):

* ``alternating`` (SeAFusion): rounds ``r = 0..R-1``. In round r the task network is frozen and the
  fusion network trains with ``fusion_loss + lam * r * task_loss`` (round 0 is the fusion loss alone);
  then the task network is retrained on the new fused images (fused images detached).
* ``end2end`` (TarDAL): one optimiser over both networks, loss ``w * fusion_loss + (1 - w) * task_loss``
  (w = 0.5 as TarDAL); during the first ``warmup_epochs`` the fused image reaches the task network
  detached, so the task network learns first and the fusion network only from the fusion loss.

The fused image goes through :func:`taskeval.fusing.apply_fusion`, i.e. a luminance output is recoloured
with the visible chroma inside the graph, so task gradients reach the fusion parameters. Task losses are
the real ones: ultralytics' YOLO loss (:mod:`detectors.joint`) and cross-entropy on smp DeepLabV3+
(:mod:`segmenters.joint`). Training checkpoints after every stage (alternating) or epoch (end2end) into
``last.pt`` (resumable with the same settings only); a NaN or infinite loss stops with
:class:`TrainingError` and keeps the last good checkpoint.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from tqdm import tqdm

from fusion_models import create_fusion_model, get_fusion_spec
from taskeval.color import luminance
from taskeval.config import to_dict
from taskeval.data.dataset import PairedDataset
from taskeval.errors import ConfigError, TrainingError
from taskeval.fusing import apply_fusion
from taskeval.fusion_train import FusionLossConfig, fusion_loss
from taskeval.rundir import atomic_write_bytes, atomic_write_json

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class JointConfig:
    """Settings of one joint training run (``taskeval joint`` overrides: ``rounds=3 lam=1`` ...)."""

    schedule: Literal["alternating", "end2end"] = "alternating"
    rounds: int = 3                 # alternating
    fusion_epochs: int = 2          # alternating: fusion epochs per round
    task_epochs: int = 3            # alternating: task epochs per round
    epochs: int = 8                 # end2end
    warmup_epochs: int = 2          # end2end: fused image detached before the task network
    lam: float = 1.0                # alternating: task loss weight per round index
    fusion_weight: float = 0.5      # end2end: w in w * fusion + (1 - w) * task
    batch: int = 8
    crop: int = 96                  # segmentation crops; detection uses whole images (multiple of 32)
    lr_fusion: float = 1e-3
    lr_task: float = 1e-3
    seed: int = 0
    fusion_loss: FusionLossConfig = FusionLossConfig()
    seg_encoder: str = "resnet18"
    seg_loss: Literal["ce", "ce+dice", "ohem"] = "ce"
    det_model: str = "yolov8n.yaml"
    max_pairs: int = 0              # 0 = the whole training split


def _batches(n: int, batch: int, rng: np.random.Generator) -> list[list[int]]:
    order = rng.permutation(n).tolist()
    return [order[k:k + batch] for k in range(0, n, batch)]


class JointTrainer:
    """Holds the fusion network, the task network and their optimisers; see the module docstring."""

    def __init__(self, fusion: str, task: str, ds: PairedDataset, out_dir: str | Path, cfg: JointConfig,
                 device: str = "cpu", init_weights: str | None = None, progress: bool = True):
        if task not in ("det", "seg"):
            raise ConfigError(f"task must be 'det' or 'seg', got {task!r}")
        if not get_fusion_spec(fusion).trainable:
            raise ConfigError(f"{fusion!r} has no trainable parameters; joint training needs a learned fusion")
        if task == "det" and not ds.has_boxes:
            raise ConfigError(f"{ds.card.name}/{ds.split} has no detection labels")
        if task == "seg" and not ds.has_masks:
            raise ConfigError(f"{ds.card.name}/{ds.split} has no segmentation labels")
        self.fusion_name, self.task, self.ds, self.cfg = fusion, task, ds, cfg
        self.out = Path(out_dir)
        self._identity: dict | None = None
        self._init_weights = init_weights
        self.out.mkdir(parents=True, exist_ok=True)
        self.device, self.progress = torch.device(device), progress
        torch.manual_seed(cfg.seed)
        self.fusion = create_fusion_model(fusion, weights=init_weights, device=self.device)
        if task == "det":
            from detectors.joint import DetectionLoss

            self.task_net = DetectionLoss(len(ds.card.det_classes), cfg.det_model, self.out / "third_party")
        else:
            from segmenters.joint import SegmentationLoss

            self.task_net = SegmentationLoss(len(ds.card.seg_classes), cfg.seg_encoder, cfg.seg_loss,
                                             ds.card.ignore_index)
        self.task_net.to(self.device)
        self.n = len(ds) if cfg.max_pairs <= 0 else min(cfg.max_pairs, len(ds))
        self.opt_fusion = torch.optim.Adam(self.fusion.parameters(), lr=cfg.lr_fusion)
        self.opt_task = torch.optim.Adam(self.task_net.parameters(), lr=cfg.lr_task)
        self.step = 0          # finished stages (alternating: 2 per round) or epochs (end2end)
        self.history: list[dict] = []

    # ---- data
    def batch(self, idx: list[int], rng: np.random.Generator):
        """(ir, vis, target) tensors on the device; target = masks (seg) or a list of box arrays (det)."""
        irs, viss, targets = [], [], []
        for i in idx:
            ir, vis = self.ds.read_pair(i)
            if self.task == "seg":
                mask = self.ds.mask(i)
                h, w = ir.shape
                c = min(self.cfg.crop, h, w)
                y, x = int(rng.integers(0, h - c + 1)), int(rng.integers(0, w - c + 1))
                ir, vis, mask = ir[y:y + c, x:x + c], vis[y:y + c, x:x + c], mask[y:y + c, x:x + c]
                targets.append(mask)
            else:
                targets.append(self.ds.boxes(i))
            irs.append(ir)
            viss.append(vis)
        shapes = {a.shape for a in irs}
        if len(shapes) > 1:
            raise ConfigError(f"joint training batches need equal image sizes, got {sorted(shapes)}; use batch=1")
        ir = torch.from_numpy(np.stack(irs))[:, None].to(self.device)
        vis = torch.from_numpy(np.stack(viss)).permute(0, 3, 1, 2).contiguous().to(self.device)
        if self.task == "seg":
            return ir, vis, torch.from_numpy(np.stack(targets)).long().to(self.device)
        h, w = ir.shape[-2:]
        ph, pw = -h % 32, -w % 32  # the detector needs multiples of 32: pad bottom/right, boxes unchanged
        if ph or pw:
            ir = torch.nn.functional.pad(ir, (0, pw, 0, ph))
            vis = torch.nn.functional.pad(vis, (0, pw, 0, ph))
        return ir, vis, targets

    # ---- losses
    def losses(self, ir, vis, target, with_task: bool, detach_fused: bool) -> dict[str, torch.Tensor]:
        """Fusion loss and (if ``with_task``) the task loss of the recoloured fused image."""
        spec = self.fusion.spec
        vis_in = luminance(vis) if spec.vis_input == "y" else vis
        raw = self.fusion(ir, vis_in, text=None) if spec.needs_text else self.fusion(ir, vis_in)
        # one forward pass feeds both losses (the fused luminance as fusion_train.fused_luminance gives it, the task image
        # as apply_fusion makes it), so the fusion network's backward pass runs once per step
        fused_y = luminance(raw) if raw.shape[1] == 3 else raw
        terms = fusion_loss(fused_y, ir, luminance(vis), self.cfg.fusion_loss)
        out = {"fusion": terms["total"]}
        if with_task:
            fused_rgb = apply_fusion(self.fusion, ir, vis, out=raw)
            if fused_rgb.shape[1] == 1:
                fused_rgb = fused_rgb.expand(-1, 3, -1, -1)
            out["task"] = self.task_net(fused_rgb.detach() if detach_fused else fused_rgb, target)
        return out

    def _check(self, value: torch.Tensor, what: str) -> None:
        if not torch.isfinite(value):
            raise TrainingError(f"joint training ({self.task}, {self.cfg.schedule}): {what} became {value.item()} at "
                                f"stage {self.step + 1}; stopped, last good checkpoint kept at "
                                f"{self.out / 'last.pt' if (self.out / 'last.pt').is_file() else '(none yet)'}")

    def fusion_stage(self, epochs: int, task_weight: float, desc: str) -> float:
        self.fusion.train()
        self.task_net.eval()
        for p in self.task_net.parameters():
            p.requires_grad_(False)
        total = 0.0
        for e in range(epochs):
            rng = np.random.default_rng([self.cfg.seed, self.step, e, 1])
            for idx in tqdm(_batches(self.n, self.cfg.batch, rng), desc=desc, disable=not self.progress, leave=False):
                ir, vis, target = self.batch(idx, rng)
                lt = self.losses(ir, vis, target, with_task=task_weight > 0, detach_fused=False)
                loss = lt["fusion"] + task_weight * lt["task"] if task_weight > 0 else lt["fusion"]
                self._check(loss, "the fusion-stage loss")
                self.opt_fusion.zero_grad(set_to_none=True)
                loss.backward()
                self.opt_fusion.step()
                total += loss.item()
        for p in self.task_net.parameters():
            p.requires_grad_(True)
        return total

    def task_stage(self, epochs: int, desc: str) -> float:
        self.fusion.eval()
        self.task_net.train()
        total = 0.0
        for e in range(epochs):
            rng = np.random.default_rng([self.cfg.seed, self.step, e, 2])
            for idx in tqdm(_batches(self.n, self.cfg.batch, rng), desc=desc, disable=not self.progress, leave=False):
                ir, vis, target = self.batch(idx, rng)
                with torch.no_grad():
                    fused = apply_fusion(self.fusion, ir, vis)
                fused = fused.expand(-1, 3, -1, -1) if fused.shape[1] == 1 else fused
                loss = self.task_net(fused, target)
                self._check(loss, "the task loss")
                self.opt_task.zero_grad(set_to_none=True)
                loss.backward()
                self.opt_task.step()
                total += loss.item()
        return total

    def end2end_epoch(self, epoch: int) -> float:
        self.fusion.train()
        self.task_net.train()
        w = self.cfg.fusion_weight
        detach = epoch < self.cfg.warmup_epochs
        rng = np.random.default_rng([self.cfg.seed, epoch, 3])
        total = 0.0
        for idx in tqdm(_batches(self.n, self.cfg.batch, rng), desc=f"joint e2e epoch {epoch + 1}/{self.cfg.epochs}",
                        disable=not self.progress, leave=False):
            ir, vis, target = self.batch(idx, rng)
            lt = self.losses(ir, vis, target, with_task=True, detach_fused=detach)
            loss = w * lt["fusion"] + (1 - w) * lt["task"]
            self._check(loss, "the joint loss")
            self.opt_fusion.zero_grad(set_to_none=True)
            self.opt_task.zero_grad(set_to_none=True)
            loss.backward()
            self.opt_fusion.step()
            self.opt_task.step()
            total += loss.item()
        return total

    # ---- checkpoints
    def save(self) -> None:
        buf = io.BytesIO()
        torch.save({"identity": self.identity(), "fusion": self.fusion.state_dict(), "task": self.task_net.state_dict(),
                    "opt_fusion": self.opt_fusion.state_dict(), "opt_task": self.opt_task.state_dict(),
                    "step": self.step, "history": self.history}, buf)
        atomic_write_bytes(self.out / "last.pt", buf.getvalue())

    def identity(self) -> dict:
        """What a resumed run must share with the interrupted one."""
        from fusion_models import get_fusion_spec
        from fusion_models.weights import resolve_weights
        from taskeval.fingerprint import dataset_fingerprint, file_digest

        if self._identity is None:
            init = None
            if self._init_weights is not None:
                init = "sha256:" + file_digest(resolve_weights(get_fusion_spec(self.fusion_name), self._init_weights), 16)
            self._identity = {"fusion": self.fusion_name, "task": self.task, "init_weights": init,
                              "data": dataset_fingerprint(self.ds, labels=True, save_to=self.out / "inputs"),
                              "n": self.n, "config": to_dict(self.cfg)}
        return self._identity

    def resume(self) -> bool:
        last = self.out / "last.pt"
        if not last.is_file():
            return False
        state = torch.load(last, map_location=self.device, weights_only=True)
        if state.get("identity") != self.identity():
            from taskeval.fingerprint import explain

            why = explain(state.get("identity") or {}, self.identity(), [self.out / "inputs"])
            raise TrainingError(f"{last} was written by a joint training with other settings or data ({why}); "
                                "choose another --out or delete it")
        self.fusion.load_state_dict(state["fusion"])
        self.task_net.load_state_dict(state["task"])
        self.opt_fusion.load_state_dict(state["opt_fusion"])
        self.opt_task.load_state_dict(state["opt_task"])
        self.step, self.history = int(state["step"]), list(state["history"])
        log.info("resuming joint training at stage %d", self.step)
        return True

    # ---- the schedules
    def train(self) -> Path:
        """Run (or resume) the schedule; returns the fusion weights ``fusion.pth``."""
        self.resume()
        cfg = self.cfg
        final = self.out / "fusion.pth"
        n_stages = 2 * cfg.rounds if cfg.schedule == "alternating" else cfg.epochs
        if self.step >= n_stages and final.is_file() and (self.out / "fusion.json").is_file():
            return final  # finished: nothing is trained or written again
        if cfg.schedule == "alternating":
            stages = [s for r in range(cfg.rounds) for s in (("fusion", r), ("task", r))]
            for kind, r in stages[self.step:]:
                if kind == "fusion":
                    loss = self.fusion_stage(cfg.fusion_epochs, cfg.lam * r, f"joint round {r + 1}: fusion")
                else:
                    loss = self.task_stage(cfg.task_epochs, f"joint round {r + 1}: {self.task} network")
                self.history.append({"stage": kind, "round": r, "loss": loss})
                self.step += 1
                self.save()
        else:
            for epoch in range(self.step, cfg.epochs):
                self.history.append({"stage": "end2end", "epoch": epoch, "loss": self.end2end_epoch(epoch)})
                self.step += 1
                self.save()
        buf = io.BytesIO()
        torch.save(self.fusion.state_dict(), buf)
        atomic_write_bytes(final, buf.getvalue())
        atomic_write_json(self.out / "fusion.json", {
            "method": joint_name(self.fusion_name, self.task), "base": self.fusion_name,
            "note": f"jointly trained by taskeval ({self.task} loss, {cfg.schedule})",
            "dataset": self.ds.card.name, "split": self.ds.split, "config": to_dict(cfg), "history": self.history})
        return final


def joint_name(fusion: str, task: str) -> str:
    """The derived method name of a jointly trained fusion network, e.g. ``seafusion@joint-seg``."""
    return f"{fusion.split('@')[0]}@joint-{task}"


def fusion_only_config(cfg: JointConfig):
    """The fusion-loss-only training with as many fusion updates as the joint run (the fair baseline)."""
    from taskeval.fusion_train import FusionTrainConfig

    epochs = cfg.rounds * cfg.fusion_epochs if cfg.schedule == "alternating" else cfg.epochs
    return FusionTrainConfig(epochs=epochs, batch=cfg.batch, crop=cfg.crop, lr=cfg.lr_fusion, seed=cfg.seed,
                             loss=cfg.fusion_loss, max_pairs=cfg.max_pairs)

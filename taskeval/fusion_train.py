"""Training a fusion network with a standard unsupervised fusion loss (``taskeval fuse train``).

Loss (each weight configurable; the SeAFusion/TarDAL family of losses)::

    L = w_int  * |F - max(IR, Y)|_1                       (intensity: keep the brighter source)
      + w_grad * | |grad F| - max(|grad IR|, |grad Y|) |_1  (texture: keep the stronger edges, Sobel)
      + w_ssim * (1 - (SSIM(F, IR) + SSIM(F, Y)) / 2)       (structure)

``F`` is the fused luminance (a model with RGB output is scored on its luminance). Weights trained
here are labelled "trained by taskeval (fusion loss)" wherever they are reported.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torchmetrics.functional.image import structural_similarity_index_measure as ssim
from tqdm import tqdm

from fusion_models import create_fusion_model, get_fusion_spec
from taskeval.color import luminance
from taskeval.config import to_dict
from taskeval.data.dataset import PairedDataset
from taskeval.errors import ConfigError, TrainingError
from taskeval.rundir import atomic_write_bytes, atomic_write_json

log = logging.getLogger(__name__)
TRAINED_NOTE = "trained by taskeval (fusion loss)"

_SOBEL = torch.tensor([[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]])


@dataclass(frozen=True)
class FusionLossConfig:
    w_int: float = 1.0
    w_grad: float = 1.0
    w_ssim: float = 0.5


@dataclass(frozen=True)
class FusionTrainConfig:
    """``taskeval fuse train`` settings."""

    epochs: int = 5
    batch: int = 8
    crop: int = 96
    lr: float = 1e-3
    weight_decay: float = 0.0
    seed: int = 0
    loss: FusionLossConfig = FusionLossConfig()
    max_pairs: int = 0  # 0 = the whole split


def sobel_magnitude(x: torch.Tensor) -> torch.Tensor:
    """|Gx| + |Gy| of (N,1,H,W), replicate padding."""
    k = _SOBEL.to(x)
    xp = F.pad(x, (1, 1, 1, 1), mode="replicate")
    return F.conv2d(xp, k.view(1, 1, 3, 3)).abs() + F.conv2d(xp, k.t().reshape(1, 1, 3, 3)).abs()


def fusion_loss(fused_y: torch.Tensor, ir: torch.Tensor, vis_y: torch.Tensor,
                cfg: FusionLossConfig = FusionLossConfig()) -> dict[str, torch.Tensor]:
    """The unsupervised fusion loss; returns its terms and ``total``. All inputs (N,1,H,W) in [0,1]."""
    terms = {
        "intensity": F.l1_loss(fused_y, torch.maximum(ir, vis_y)),
        "gradient": F.l1_loss(sobel_magnitude(fused_y), torch.maximum(sobel_magnitude(ir), sobel_magnitude(vis_y))),
        "ssim": 1.0 - 0.5 * (ssim(fused_y, ir, data_range=1.0) + ssim(fused_y, vis_y, data_range=1.0)),
    }
    terms["total"] = cfg.w_int * terms["intensity"] + cfg.w_grad * terms["gradient"] + cfg.w_ssim * terms["ssim"]
    return terms


def fused_luminance(model, ir: torch.Tensor, vis: torch.Tensor, text=None) -> torch.Tensor:
    """Run the model on its spec's inputs and return the fused luminance (N,1,H,W) (differentiable)."""
    spec = model.spec
    vis_in = luminance(vis) if spec.vis_input == "y" else vis
    out = model(ir, vis_in, text=text) if spec.needs_text else model(ir, vis_in)
    if out.shape[1] == 3:
        out = luminance(out)
    return out


def random_crops(ds: PairedDataset, indices: list[int], crop: int, rng: np.random.Generator):
    irs, viss = [], []
    for i in indices:
        ir, vis = ds.read_pair(i)
        h, w = ir.shape
        c = min(crop, h, w)
        y, x = int(rng.integers(0, h - c + 1)), int(rng.integers(0, w - c + 1))
        irs.append(ir[y:y + c, x:x + c])
        viss.append(vis[y:y + c, x:x + c])
    return (torch.from_numpy(np.stack(irs))[:, None],
            torch.from_numpy(np.stack(viss)).permute(0, 3, 1, 2).contiguous())


def train_fusion(method: str, ds: PairedDataset, out_dir: str | Path, cfg: FusionTrainConfig = FusionTrainConfig(),
                 device: str = "cpu", init_weights: str | None = None, progress: bool = True) -> Path:
    """Train ``method`` with the fusion loss on ``ds``; writes ``fusion.pth`` (+ ``last.pt`` for resume).

    Resumes from ``out_dir/last.pt`` when present. A NaN or infinite loss stops training with
    :class:`TrainingError`; the last good checkpoint is kept.

    Returns:
        Path of the final state dict (``fusion.pth``, loadable by ``create_fusion_model(weights=...)``).
    """
    spec = get_fusion_spec(method)
    if not spec.trainable:
        raise ConfigError(f"{method!r} has no trainable parameters")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    model = create_fusion_model(method, weights=init_weights, device=device).train()
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    start = 0
    last = out_dir / "last.pt"
    identity = _identity(method, ds, cfg, init_weights, out_dir)
    if last.is_file():
        state = torch.load(last, map_location=device, weights_only=True)
        if state.get("identity") != identity:
            from taskeval.fingerprint import explain

            why = (explain(state["identity"], identity, [out_dir / "inputs"]) if "identity" in state
                   else "it was written by an older taskeval that did not record its settings")
            raise TrainingError(f"{last} was written by a fusion training with other settings or data ({why}); "
                                "delete it or choose another --out")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start = int(state["epoch"]) + 1
        history = list(state.get("history", []))  # checkpoints before the history was kept: []
        final = out_dir / "fusion.pth"
        if start >= cfg.epochs and final.is_file() and (out_dir / "fusion.json").is_file():
            return final  # finished: nothing is trained or written again
        log.info("resuming %s fusion training at epoch %d", method, start)
    else:
        history = []
    n = len(ds) if cfg.max_pairs <= 0 else min(cfg.max_pairs, len(ds))
    for epoch in range(start, cfg.epochs):
        rng = np.random.default_rng([cfg.seed, epoch])
        order = rng.permutation(n).tolist()
        batches = [order[k:k + cfg.batch] for k in range(0, n, cfg.batch)]
        total = 0.0
        for idx in tqdm(batches, desc=f"fuse train {method} epoch {epoch + 1}/{cfg.epochs}", disable=not progress):
            ir, vis = random_crops(ds, idx, cfg.crop, rng)
            ir, vis = ir.to(device), vis.to(device)
            terms = fusion_loss(fused_luminance(model, ir, vis), ir, luminance(vis), cfg.loss)
            loss = terms["total"]
            if not torch.isfinite(loss):
                raise TrainingError(f"{method}: loss became {loss.item()} at epoch {epoch + 1}; training stopped, "
                                    f"last good checkpoint kept at {last if last.is_file() else '(none yet)'}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        history.append({"epoch": epoch + 1, "loss": total / n})
        buf = _serialise({"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch,
                          "identity": identity, "history": history})
        atomic_write_bytes(last, buf)
    final = out_dir / "fusion.pth"
    atomic_write_bytes(final, _serialise(model.state_dict()))
    atomic_write_json(out_dir / "fusion.json", {
        "method": method, "note": TRAINED_NOTE, "dataset": ds.card.name, "split": ds.split, "pairs": n,
        "config": to_dict(cfg), "init_weights": init_weights, "history": history,
    })
    return final


def _identity(method: str, ds: PairedDataset, cfg: FusionTrainConfig, init_weights: str | None,
              out_dir: Path) -> dict:
    """What a resumed fusion training must share with the interrupted one: method, training images (by
    content), initial weights (by content) and every setting but ``epochs`` (training longer continues
    the same run: the learning rate does not depend on the number of epochs)."""
    from fusion_models.weights import resolve_weights
    from taskeval.fingerprint import dataset_fingerprint, file_digest

    init = None
    if init_weights is not None:
        init = "sha256:" + file_digest(resolve_weights(get_fusion_spec(method), init_weights), 16)
    config = {k: v for k, v in to_dict(cfg).items() if k != "epochs"}
    return {"method": method, "data": dataset_fingerprint(ds, labels=False, save_to=out_dir / "inputs"),
            "init_weights": init, "config": config}


def _serialise(obj) -> bytes:
    import io

    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def weights_note(weights: str | Path | None) -> str:
    """"trained by taskeval (fusion loss)" when a ``fusion.json`` written by :func:`train_fusion` sits beside it."""
    if weights is None or str(weights) == "official":
        return "official weights" if weights else ""
    meta = Path(weights).with_suffix(".json")
    if meta.is_file():
        try:
            return json.loads(meta.read_text()).get("note", "")
        except (OSError, ValueError):
            return ""
    return ""

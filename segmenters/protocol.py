"""``SegProtocol``: everything that decides a segmentation number, frozen, named and hashed.

Two presets:

``paper``
    DeepLabV3+ trained the way the widely used reference PyTorch implementation does it
    (VainF/DeepLabV3Plus-Pytorch; the fusion papers that report DeepLabV3+ on MSRS/MFNet do not publish
    their segmentation hyper-parameters): ResNet-101 encoder, output stride 16, SGD (momentum 0.9,
    weight decay 1e-4 as its help text says; its code default is 4e-5), learning rate 0.01 with the
    encoder at 0.1x, poly decay (power 0.9) over 30k iterations of batch 16, random scale 0.5-2.0,
    random crop (513 there; 512 here because smp needs sizes divisible by the output stride),
    horizontal flip, cross-entropy ignoring 255, evaluation at full resolution without test-time
    augmentation. On MSRS's 1083 training pairs, 30k x 16 images are 443 epochs. The published
    numbers use an ImageNet-pretrained encoder: pass ``encoder_weights=PATH`` (a torchvision/timm
    ResNet-101 state dict) or ``encoder_weights=imagenet`` to let smp download it (network needed).
    Without them the preset trains from scratch (logged as a warning) and lands well below the
    papers. SeAFusion's own segmenter is BiSeNet with OHEM cross-entropy (threshold 0.7, at least
    1/16 of the pixels), SGD lr 0.01, weight decay 5e-4, 1000 warm-up iterations; the same recipe on
    DeepLabV3+ is ``loss=ohem weight_decay=5e-4 warmup_iters=1000 encoder_lr_mult=1``.

``quick``
    A CPU protocol for the synthetic benchmark and smoke runs: timm's MobileNetV3-Small encoder
    (``tu-mobilenetv3_small_100``, 1.2 M parameters with the decoder) from scratch, a 64-channel
    decoder, AdamW (lr 5e-3, weight decay 1e-4, poly 0.9), 10 epochs, batch 8, crops of 128x160 (the
    synthetic image size) after random scale 0.75-1.25, horizontal flips. One training run on the
    default synthetic dataset (120 pairs, 160x128) costs about 30 s on two idle cores. Measured on the
    design-2 scenes (issue 18; ``taskeval benchmark quick``, one thread, seeds 0 / 1, mIoU %): ir 50.0 / 48.3,
    vis 48.9 / 50.8, average 70.4 / 69.2, laplacian 67.3 / 73.8, seafusion 69.6 / 72.8. On the earlier
    design-1 scenes: ir 47.9 ± 0.4, vis 51.8 ± 0.0, average
    59.2 ± 1.1, laplacian 63.6 ± 3.2, seafusion (fusion loss) 66.3 ± 4.4; with 15 epochs: ir 49.2,
    vis 53.9, average 67.8, laplacian 70.7, seafusion 70.4 (the ranking holds; 10 epochs keep the
    README's main job inside 15 minutes). ResNet-18 at the same cost (5 epochs) is under-trained
    (seed 0: 45.6 / 46.5 / 54.2). Numbers from it rank fusion methods; they are not paper numbers.

Every result row carries :func:`protocol_id` (``name-<6 hex>``): the hash covers every field that
can change a number (not the seed, which has its own column, nor the worker count or evaluation
batch size), so an overridden preset never passes for the preset.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Literal

from taskeval.config import load_config, load_preset
from taskeval.errors import ConfigError

# Fields that do not change results and are left out of the hash.
_NOT_HASHED = ("name", "seed", "workers", "eval_batch")


@dataclass(frozen=True)
class SegProtocol:
    """Training and evaluation settings of the segmentation network.

    Attributes:
        name: preset name or a user's label; shown with the hash in every result row.
        arch: registered architecture (:mod:`segmenters.registry`; built in: ``"deeplabv3plus"``, smp's
            ``DeepLabV3Plus``).
        encoder: smp encoder name (``resnet18``, ``resnet101``, ``tu-mobilenetv3_large_100``...).
        encoder_weights: None (random init), a local state-dict path, or ``"imagenet"`` (opt-in
            download through smp; needs network).
        output_stride: encoder output stride (8 or 16).
        decoder_channels: width of the ASPP/decoder.
        epochs: passes over the training split (``n // batch`` iterations each, last partial batch dropped).
        batch: global batch size (split evenly over DDP processes).
        optimizer: ``"sgd"`` (momentum, nesterov off) or ``"adamw"``.
        lr: base learning rate (decoder and head).
        encoder_lr_mult: encoder learning rate = ``lr * encoder_lr_mult``.
        momentum: SGD momentum (AdamW beta1 is torch's default 0.9).
        weight_decay: on every parameter.
        poly_power: ``lr_it = lr * (1 - it / iters) ** poly_power``.
        warmup_iters: linear warm-up from ``lr * 0.001`` over this many iterations.
        crop_size: (H, W) training crop; divisible by 16; images smaller than the crop are padded
            (image with the normalised mean, mask with the ignore index).
        scale_range: random rescale factor range before cropping.
        hflip, vflip: random flips with probability 0.5.
        loss: ``"ce"`` (cross-entropy) or ``"ohem"`` (cross-entropy over the pixels whose loss exceeds
            ``-log(ohem_thresh)``, at least ``ohem_min_kept`` of the valid pixels; SeAFusion's loss).
        class_weights: cross-entropy weight per class (empty: none).
        amp: mixed precision on CUDA (ignored on CPU).
        amp_dtype: ``"float16"`` (with a gradient scaler) or ``"bfloat16"``.
        seed: seeds weights, data order, augmentation and dropout.
        workers: DataLoader worker processes.
        eval_batch: images per forward pass at test time.
    """

    name: str = "quick"
    arch: str = "deeplabv3plus"
    encoder: str = "tu-mobilenetv3_small_100"
    encoder_weights: str | None = None
    output_stride: Literal[8, 16] = 16
    decoder_channels: int = 64
    epochs: int = 10
    batch: int = 8
    optimizer: Literal["sgd", "adamw"] = "adamw"
    lr: float = 5e-3
    encoder_lr_mult: float = 1.0
    momentum: float = 0.9
    weight_decay: float = 1e-4
    poly_power: float = 0.9
    warmup_iters: int = 0
    crop_size: tuple[int, ...] = (128, 160)
    scale_range: tuple[float, ...] = (0.75, 1.25)
    hflip: bool = True
    vflip: bool = False
    loss: Literal["ce", "ohem"] = "ce"
    ohem_thresh: float = 0.7
    ohem_min_kept: float = 1 / 16
    class_weights: tuple[float, ...] = ()
    amp: bool = True
    amp_dtype: Literal["float16", "bfloat16"] = "float16"
    seed: int = 0
    workers: int = 0
    eval_batch: int = 4

    def __post_init__(self):
        if len(self.crop_size) != 2 or any(c <= 0 or c % 16 for c in self.crop_size):
            raise ConfigError(f"crop_size must be (H, W) with both divisible by 16, got {self.crop_size}")
        if len(self.scale_range) != 2 or not 0 < self.scale_range[0] <= self.scale_range[1]:
            raise ConfigError(f"scale_range must be (low, high) with 0 < low <= high, got {self.scale_range}")
        for key in ("epochs", "batch", "eval_batch"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key} must be at least 1, got {getattr(self, key)}")
        if self.lr <= 0:
            raise ConfigError(f"lr must be positive, got {self.lr}")
        if not 0 < self.ohem_thresh < 1 or not 0 < self.ohem_min_kept <= 1:
            raise ConfigError("ohem_thresh must lie in (0,1) and ohem_min_kept in (0,1]")


PRESETS: dict[str, SegProtocol] = {
    "quick": SegProtocol(),
    "paper": SegProtocol(
        name="paper", encoder="resnet101", decoder_channels=256, epochs=443, batch=16, optimizer="sgd",
        lr=0.01, encoder_lr_mult=0.1, momentum=0.9, weight_decay=1e-4, poly_power=0.9, crop_size=(512, 512),
        scale_range=(0.5, 2.0), hflip=True, amp=True, workers=4, eval_batch=4,
    ),
}


def load_protocol(preset_or_path: str | Path = "quick", overrides: list[str] | None = None) -> SegProtocol:
    """A preset name or a YAML file (optionally ``preset: NAME`` as its base) plus ``key=value`` overrides.

    Raises:
        ConfigError: unknown preset, unknown key or wrong type.
    """
    return load_preset(SegProtocol, PRESETS, preset_or_path, overrides, "segmentation protocol", "quick")


def protocol_hash(p: SegProtocol, length: int = 6) -> str:
    """Hex digest of the result-relevant fields (encoder weight files by content, not by path)."""
    d = {k: v for k, v in asdict(p).items() if k not in _NOT_HASHED}
    if p.encoder_weights not in (None, "imagenet"):
        from fusion_models.weights import file_hash

        path = Path(p.encoder_weights)
        d["encoder_weights"] = "sha256:" + file_hash(path) if path.is_file() else str(path)
    payload = json.dumps(d, sort_keys=True, default=list)
    return hashlib.sha256(payload.encode()).hexdigest()[:length]


def protocol_id(p: SegProtocol) -> str:
    """``name-<hash>``, the string stored in the ``protocol`` column of result rows."""
    return f"{p.name}-{protocol_hash(p)}"


def with_seed(p: SegProtocol, seed: int) -> SegProtocol:
    return replace(p, seed=int(seed))


def to_plain(p: SegProtocol) -> dict:
    """JSON/YAML-able dict (tuples as lists), stored in checkpoints (``weights_only``-safe)."""
    return json.loads(json.dumps(asdict(p), default=list))


def from_plain(d: dict) -> SegProtocol:
    return load_config(SegProtocol, None, None, base=d)

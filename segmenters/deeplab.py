"""DeepLabV3+ adapter (segmentation_models_pytorch): ``train`` and ``predict`` on fused images.

The harness calls only these functions; smp stays inside ``segmenters/``::

    ckpt = train(fused_train, train_ds, protocol, run_dir, device)          # -> Path of model.pt
    preds = predict(ckpt, fused_test, protocol, device)                      # -> {id: (H,W) uint8}

Encoder weights come only from ``protocol.encoder_weights``: a local state-dict file (e.g. torchvision's
``resnet101-*.pth``; classification-head keys are dropped) or the explicit opt-in ``"imagenet"``, which
lets smp download them (network needed). Prediction runs at the image's own resolution (zero-padded
at the bottom/right to a multiple of the encoder's output stride, logits cropped back), single scale,
no flip: test-time augmentation changes numbers and is left out on purpose.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from segmenters.protocol import SegProtocol, from_plain
from segmenters.registry import register_segmenter
from segmenters.train import fit, load_checkpoint_file
from segmenters.transforms import normalize, pad_to_multiple
from taskeval.data.dataset import PairedDataset
from taskeval.errors import ConfigError, WeightsError
from taskeval.fusedset import FusedSet
from taskeval.imageio import image_size, write_png

log = logging.getLogger(__name__)

_HEAD_PREFIXES = ("fc.", "classifier.", "head.", "last_linear.")


def build_model(protocol: SegProtocol, num_classes: int) -> nn.Module:
    """The network of ``protocol.arch`` (:mod:`segmenters.registry`) for ``num_classes`` classes."""
    from segmenters.registry import build_segmenter

    return build_segmenter(protocol.arch, protocol, num_classes)


@register_segmenter("deeplabv3plus")
def deeplabv3plus(protocol: SegProtocol, num_classes: int) -> nn.Module:
    """smp ``DeepLabV3Plus`` for ``num_classes`` classes, 3-channel input, encoder weights as the protocol says."""
    import segmentation_models_pytorch as smp

    download = protocol.encoder_weights == "imagenet"
    # smp's timm-universal ("tu-") encoders take True for their default pretrained tag
    pretrained = (True if protocol.encoder.startswith("tu-") else "imagenet") if download else None
    try:
        model = smp.DeepLabV3Plus(encoder_name=protocol.encoder, encoder_weights=pretrained,
                                  encoder_output_stride=protocol.output_stride,
                                  decoder_channels=protocol.decoder_channels, in_channels=3, classes=num_classes)
    except KeyError as exc:
        raise ConfigError(f"unknown smp encoder {protocol.encoder!r} ({exc}); see "
                          "segmentation_models_pytorch.encoders.get_encoder_names() or use 'tu-<timm name>'") from None
    except Exception as exc:
        if download:
            raise WeightsError(f"encoder_weights=imagenet: smp could not fetch the {protocol.encoder} weights "
                               f"({type(exc).__name__}: {exc}); pass a local file with encoder_weights=PATH") from exc
        raise
    if protocol.encoder_weights is not None and not download:
        load_encoder_weights(model.encoder, protocol.encoder_weights)
    return model


def load_encoder_weights(encoder: nn.Module, path: str | Path) -> None:
    """Load an ImageNet classification state dict into an smp encoder (head keys dropped).

    Raises:
        WeightsError: file missing or unsafe, or keys/shapes that do not fit (listed).
    """
    from fusion_models.weights import load_checkpoint, load_weights

    sd = {k: v for k, v in load_checkpoint(path).items() if not k.startswith(_HEAD_PREFIXES)}
    own = encoder.state_dict()
    if not set(sd) & set(own) and {f"model.{k}" for k in sd} & set(own):  # timm weights into a tu- encoder
        sd = {f"model.{k}": v for k, v in sd.items()}
    load_weights(encoder, sd, strict=True)
    log.info("encoder weights loaded from %s (%d tensors)", path, len(sd))


def train(train_set: FusedSet, train_ds: PairedDataset, protocol: SegProtocol, run_dir: str | Path,
          device: str | torch.device = "cpu", progress: bool = True) -> Path:
    """Train DeepLabV3+ on ``train_set`` (see :func:`segmenters.train.fit`) and return ``model.pt``."""
    if not train_ds.card.seg_classes:
        raise ConfigError(f"dataset {train_ds.card.name!r} has no segmentation classes in its card")
    final = Path(run_dir) / "model.pt"
    if protocol.encoder_weights is None and protocol.name == "paper" and not final.is_file():
        log.warning("protocol 'paper' without encoder_weights trains the encoder from scratch; the published "
                    "numbers use ImageNet weights (encoder_weights=PATH)")
    torch.manual_seed(protocol.seed)  # the initial weights are part of what the seed fixes
    model = build_model(protocol, len(train_ds.card.seg_classes))
    return fit(model, train_set, train_ds, protocol, run_dir, device, progress=progress)


def load_segmenter(checkpoint: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild the network of a ``model.pt`` (weights_only) -> (model in eval mode, checkpoint metadata)."""
    ck = load_checkpoint_file(checkpoint)
    p = from_plain(ck["protocol"])
    model = build_model(replace(p, encoder_weights=None), len(ck["classes"]))
    model.load_state_dict(ck["model"])
    meta = {k: v for k, v in ck.items() if k not in ("model", "optimizer", "scaler")}
    return model.to(device).eval(), meta


def predict(checkpoint: str | Path, fused_test: FusedSet, protocol: SegProtocol | None = None,
            device: str | torch.device = "cpu", ids: list[str] | None = None,
            progress: bool = True) -> dict[str, np.ndarray]:
    """Class-id maps of the fused test images.

    Args:
        checkpoint: ``model.pt`` written by :func:`train`.
        fused_test: fused images to segment.
        protocol: evaluation batch size and mixed precision (default: the checkpoint's protocol).
        device: where to run.
        ids: subset of ``fused_test.ids`` (default all).

    Returns:
        ``{id: (H,W) uint8 class ids}`` at each image's own size.
    """
    device = torch.device(device)
    model, meta = load_segmenter(checkpoint, device)
    p = protocol or from_plain(meta["protocol"])
    if len(meta["classes"]) > 255:
        raise ConfigError("more than 255 classes do not fit uint8 label maps")
    ids = list(ids if ids is not None else fused_test.ids)
    fused_test.require(ids)
    stride = int(getattr(model.encoder, "output_stride", 32))
    use_amp = p.amp and device.type == "cuda"
    amp_dtype = torch.bfloat16 if p.amp_dtype == "bfloat16" else torch.float16
    by_size: dict[tuple[int, int], list[str]] = defaultdict(list)
    for sid in ids:
        by_size[image_size(fused_test.paths[sid])].append(sid)
    out: dict[str, np.ndarray] = {}
    bar = tqdm(total=len(ids), desc=f"segment {fused_test.method}", unit="img", disable=not progress, leave=False)
    with torch.inference_mode():
        for group in by_size.values():
            for k in range(0, len(group), p.eval_batch):
                chunk = group[k:k + p.eval_batch]
                x = torch.from_numpy(np.stack([normalize(fused_test.read(s)) for s in chunk])).to(device)
                x, (h, w) = pad_to_multiple(x, stride)
                with torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
                    logits = model(x)
                labels = logits[:, :, :h, :w].argmax(dim=1).to(torch.uint8).cpu().numpy()
                for sid, lab in zip(chunk, labels):
                    out[sid] = lab
                bar.update(len(chunk))
    bar.close()
    return {sid: out[sid] for sid in ids}


def write_label_pngs(preds: dict[str, np.ndarray], folder: str | Path,
                     palette: tuple[tuple[int, int, int], ...] | None = None) -> None:
    """Write ``<id>.png`` per prediction: class ids (grey) or, with ``palette``, RGB colours."""
    folder = Path(folder)
    lut = np.asarray(palette, np.uint8) if palette else None
    for sid, lab in preds.items():
        write_png(folder / f"{sid}.png", lut[lab] if lut is not None else lab.astype(np.uint8))

"""Loading checkpoints into fusion models: safe (``weights_only=True``), nested dicts handled, precise errors."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
from torch import nn

from taskeval.errors import WeightsError

NESTED_KEYS = ("state_dict", "model", "net", "params", "weight", "generator")


def resolve_weights(spec, weights: str | os.PathLike) -> Path:
    """Turn ``weights`` into a file path. ``"official"`` looks in ``$TASKEVAL_WEIGHTS_DIR``."""
    if str(weights) == "official":
        if not spec.weights_file:
            raise WeightsError(f"{spec.name}: no official weights exist for this method")
        root = os.environ.get("TASKEVAL_WEIGHTS_DIR")
        if not root:
            raise WeightsError(
                f"{spec.name}: weights='official' needs TASKEVAL_WEIGHTS_DIR (a folder holding "
                f"{spec.weights_file}); or pass the file path"
            )
        candidates = list(Path(root).glob(f"**/{spec.weights_file}"))
        if not candidates:
            raise WeightsError(f"{spec.name}: {spec.weights_file} not found under {root}")
        return sorted(candidates)[0]
    path = Path(weights)
    if not path.is_file():
        raise WeightsError(f"{spec.name}: weights file not found: {path}")
    return path


def extract_state_dict(obj, path: Path | str = "<checkpoint>") -> dict[str, torch.Tensor]:
    """Find the state dict inside a loaded checkpoint (plain, or nested under ``model``/``state_dict``...)."""
    for _ in range(3):
        if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            break
        if isinstance(obj, dict):
            for key in NESTED_KEYS:
                if key in obj and isinstance(obj[key], dict):
                    obj = obj[key]
                    break
            else:
                raise WeightsError(f"{path}: no state dict found (top-level keys: {sorted(obj)[:10]})")
        else:
            raise WeightsError(f"{path}: expected a dict of tensors, got {type(obj).__name__}")
    sd = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd


def read_checkpoint(path: str | os.PathLike):
    """Read a checkpoint file with ``weights_only=True`` on the CPU and return the object as stored."""
    path = Path(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise WeightsError(f"weights file not found: {path}") from None
    except Exception as exc:
        raise WeightsError(f"{path}: cannot be loaded safely with weights_only=True ({exc})") from exc


def load_checkpoint(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a checkpoint with ``weights_only=True`` on the CPU and return its state dict."""
    return extract_state_dict(read_checkpoint(path), path)


def load_weights(model: nn.Module, source, strict: bool = True) -> None:
    """Load a checkpoint path or state dict into ``model``; float16 tensors are cast to the parameter dtype.

    A model whose official file is not one state dict (e.g. several sub-network state dicts side by
    side) defines ``convert_official_checkpoint(obj) -> obj``; it receives the loaded object first
    and returns it in a form :func:`extract_state_dict` understands (unchanged if already so). A model
    whose official weights span several files (DIDFuse's ``Encoder.pkl`` + ``Decoder.pkl``) defines
    ``read_checkpoint_files(path) -> obj``, which replaces :func:`read_checkpoint` for a path.

    Raises:
        WeightsError: listing missing keys, unexpected keys and shape mismatches.
    """
    if isinstance(source, dict):
        obj = source
    else:
        reader = getattr(model, "read_checkpoint_files", read_checkpoint)
        obj = reader(source)
    convert = getattr(model, "convert_official_checkpoint", None)
    if convert is not None:
        obj = convert(obj)
    sd = extract_state_dict(obj, source if not isinstance(source, dict) else "<state dict>")
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    shapes = [f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in sd and sd[k].shape != own[k].shape]
    if shapes or (strict and (missing or unexpected)):
        lines = [f"weights {source if not isinstance(source, dict) else '<state dict>'} do not fit "
                 f"{type(model).__name__}:"]
        if missing:
            lines.append(f"  missing keys ({len(missing)}): {', '.join(missing[:20])}{' ...' if len(missing) > 20 else ''}")
        if unexpected:
            lines.append(f"  unexpected keys ({len(unexpected)}): {', '.join(unexpected[:20])}"
                         f"{' ...' if len(unexpected) > 20 else ''}")
        if shapes:
            lines.append(f"  shape mismatches ({len(shapes)}): " + "; ".join(shapes[:20]))
        raise WeightsError("\n".join(lines))
    cast = {k: v.to(own[k].dtype) if v.is_floating_point() else v for k, v in sd.items() if k in own}
    model.load_state_dict(cast, strict=strict)


def file_hash(path: str | os.PathLike, length: int = 16) -> str:
    """sha256 of a file (hex prefix), used in cache keys and provenance."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:length]


def state_dict_hash(model: nn.Module, length: int = 16) -> str:
    """sha256 over a model's parameters and buffers (names, shapes, bytes)."""
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(str(tuple(v.shape)).encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:length]

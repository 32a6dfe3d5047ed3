"""Device names: ``auto`` picks the GPU where there is one.

Every command takes ``--device`` as ``auto`` (default), ``cpu``, ``cuda``/``cuda:N``, a CUDA index ``N``,
or, for detection training only, a list ``0,1`` (ultralytics' DDP). Tensors go to the first device.
"""

from __future__ import annotations

import torch

from taskeval.errors import ConfigError


def pick_device(device: str | None = "auto") -> str:
    """Normalise a device name: ``auto`` -> ``cuda:0`` when CUDA is available, else ``cpu``; ``N`` -> ``cuda:N``;
    a list ``0,1`` is kept (multi-GPU detection)."""
    text = "auto" if device is None else str(device).strip().lower()
    if text in ("", "auto"):
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    if "," in text:
        parts = [p.strip() for p in text.split(",") if p.strip()]
        if not all(p.isdigit() for p in parts):
            raise ConfigError(f"a device list must be CUDA indices such as 0,1; got {device!r}")
        return ",".join(parts)
    if text.isdigit():
        text = f"cuda:{text}"
    if text == "cuda":
        text = "cuda:0"
    try:
        dev = torch.device(text)
    except RuntimeError as exc:
        raise ConfigError(f"unknown device {device!r} (auto, cpu, cuda, cuda:N, N or a list 0,1): {exc}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} asked for CUDA, but torch sees no GPU here; use --device cpu or auto")
    return text


def tensor_device(device: str) -> torch.device:
    """The torch device for tensors: the first of a list (``0,1`` -> ``cuda:0``)."""
    first = str(device).split(",")[0].strip()
    return torch.device(f"cuda:{first}" if first.isdigit() else first)


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """:func:`pick_device`, then :func:`tensor_device`: the one torch device a command computes on."""
    if isinstance(device, torch.device):
        return device
    return tensor_device(pick_device(device))

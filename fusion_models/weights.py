"""Loading checkpoints into fusion models: safe (``weights_only=True``), nested dicts handled, precise errors."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import NamedTuple

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


def flatten_parallel_checkpoint(obj, keys: tuple[str, ...]):
    """One state dict from an official file holding one ``nn.DataParallel`` state dict per sub-network.

    ``{"Encoder": {"module.x": t}, ...}`` becomes ``{"Encoder.x": t, ...}`` for the top-level ``keys``
    (CDDFuse's and SMFNet's layout); anything else (e.g. a state dict saved from the port) is returned
    unchanged.
    """
    if not (isinstance(obj, dict) and all(isinstance(obj.get(k), dict) for k in keys)):
        return obj
    return {f"{top}.{key.removeprefix('module.')}": value for top in keys for key, value in obj[top].items()}


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


def weights_digest(spec, weights: str | os.PathLike, length: int = 64) -> str:
    """sha256 over the bytes of every file ``weights`` of method ``spec`` reads (``"official"`` resolved;
    :attr:`FusionSpec.weight_files` names the partner files of multi-file weights), the same in every
    process and after a copy."""
    from taskeval.fingerprint import digest, file_digests

    path = resolve_weights(spec, weights)
    files = [Path(f) for f in spec.weight_files(path)] if spec.weight_files else [path]
    digests = file_digests(files)
    if len(files) == 1:
        return digests[files[0]][:length]
    return digest([digests[f] for f in files], length)


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


# Where the authors publish each method's official weights: method -> (file names as looked up under
# $TASKEVAL_WEIGHTS_DIR, where to get them). The names are those of the registry's ``weights_file``; methods
# whose port is not registered yet are listed too, so that a benchmark config can name them. DIDFuse's two
# files carry the names of Linfeng-Tang/VIF-Benchmark (the authors' repository calls them
# Models/{Encoder,Decoder}_weight_IJCAI.pkl).
OFFICIAL_WEIGHTS: dict[str, tuple[tuple[str, ...], str]] = {
    "seafusion": (("SeAFusion.pth",),
                  "https://github.com/Linfeng-Tang/VIF-Benchmark (Checkpoint/SeAFusion/SeAFusion.pth)"),
    "tardal": (("tardal.pt",), "https://github.com/JinyuanLiu-CV/TarDAL (weights/tardal.pt)"),
    "tardal+": (("tardal+.pt",), "https://github.com/JinyuanLiu-CV/TarDAL (weights/tardal+.pt)"),
    "tardal++": (("tardal++.pt",), "https://github.com/JinyuanLiu-CV/TarDAL (weights/tardal++.pt)"),
    "mlfuse": (("model_fuse.pth",), "https://github.com/jialei-sc/MLFuse (model/model_fuse.pth)"),
    "ifcnn": (("IFCNN-MAX.pth",), "https://github.com/uzeful/IFCNN (Code/snapshots/IFCNN-MAX.pth)"),
    "didfuse": (("Encoder.pkl", "Decoder.pkl"),
                ("https://github.com/Zhaozixiang1228/IVIF-DIDFuse (Models/Encoder_weight_IJCAI.pkl and "
                 "Models/Decoder_weight_IJCAI.pkl; as Encoder.pkl and Decoder.pkl in "
                 "https://github.com/Linfeng-Tang/VIF-Benchmark, Checkpoint/DIDFuse/)")),
    "cddfuse": (("CDDFuse_IVF.pth",),
                "https://github.com/Zhaozixiang1228/MMIF-CDDFuse (models/CDDFuse_IVF.pth)"),
    "emma": (("EMMA.pth",), "https://github.com/Zhaozixiang1228/MMIF-EMMA (model/EMMA.pth)"),
}


class MissingWeights(NamedTuple):
    """A missing official weight file: the method, the file name, where the authors publish it."""

    method: str
    file: str
    where: str


def _official_files(name: str) -> tuple[tuple[str, ...], str]:
    """(file names, where published) of a method's official weights; raises if it has none."""
    from fusion_models.registry import FUSION_MODELS, get_fusion_spec

    entry = OFFICIAL_WEIGHTS.get(name)
    if name not in FUSION_MODELS and entry is not None:
        return entry  # a port not registered (yet): the table is all we know
    spec = get_fusion_spec(name)  # unknown names fail here, with a suggestion
    if not spec.weights_file:
        raise WeightsError(f"{name}: no official weights exist for this method "
                           "(use weights: train or a checkpoint path)")
    if entry is not None and spec.weights_file in entry[0]:
        return entry
    return (spec.weights_file,), f"{spec.url} (see its README)" if spec.url else "the authors' repository"


def missing_official_weights(names, weights_dir: str | os.PathLike | None = None) -> list[MissingWeights]:
    """The official weight files of ``names`` that are not under ``weights_dir``, with where to get them.

    Files are looked up as :func:`resolve_weights` does (anywhere below the folder, by file name).

    Args:
        names: methods a config runs with ``weights: official``.
        weights_dir: the weights folder (default ``$TASKEVAL_WEIGHTS_DIR``; unset: every file is missing).

    Returns:
        One :class:`MissingWeights` per missing file, in the order of ``names``; empty when all are there.

    Raises:
        WeightsError: a method without official weights. RegistryError: an unknown method name.
    """
    root = weights_dir if weights_dir is not None else os.environ.get("TASKEVAL_WEIGHTS_DIR")
    root = Path(root) if root else None
    out = []
    for name in names:
        files, where = _official_files(name)
        for f in files:
            if root is None or not root.is_dir() or next(root.glob(f"**/{f}"), None) is None:
                out.append(MissingWeights(name, f, where))
    return out

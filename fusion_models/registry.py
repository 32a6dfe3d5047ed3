"""The fusion-model registry: ``@register_fusion_model``, ``create_fusion_model``, ``list_fusion_models``.

A fusion model is an ``nn.Module`` whose ``forward(ir, vis)`` takes IR ``(N,1,H,W)`` and the visible
input its spec asks for (``vis_input="y"``: BT.601 luminance ``(N,1,H,W)``; ``"rgb"``: ``(N,3,H,W)``),
float32 in [0,1], and returns the fused image ``(N,1,H,W)`` (luminance, recoloured by the harness
from the visible chroma) or ``(N,3,H,W)``. Models with ``needs_text=True`` also accept ``text=``.
Everything a caller needs to know lives in :class:`FusionSpec`; behaviour is driven by the spec,
never by the model's name.
"""

from __future__ import annotations

import inspect
import pkgutil
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Literal

import torch
from torch import nn

from taskeval.errors import ConfigError
from taskeval.registry import Registry

# Every module of this package except the infrastructure ones defines built-in methods; they are
# imported on first use of the registry (adding a model = adding one file).
_INFRASTRUCTURE = {"registry", "weights", "layers", "precomputed", "training", "losses", "official_io"}
BUILTIN_MODULES = tuple(
    f"fusion_models.{m.name}"
    for m in pkgutil.iter_modules([str(Path(__file__).parent)])
    if not m.name.startswith("_") and m.name not in _INFRASTRUCTURE
)


@dataclass(frozen=True)
class FusionSpec:
    """Metadata of a registered fusion method.

    Attributes:
        name: registry name (lower case, e.g. ``"seafusion"``).
        vis_input: ``"y"`` (the model gets the visible luminance) or ``"rgb"``.
        output: ``"y"`` (one channel; the harness recolours with the visible Cb/Cr unless
            ``recolor=False``) or ``"rgb"``.
        normalize: what the official test script does to the raw output before saving:
            ``"clip"`` (clamp to [0,1]), ``"minmax_y"`` (per-image min-max of the one-channel
            output, before recolouring) or ``"minmax_rgb"`` (per-image min-max over all channels
            after recolouring).
        recolor: recolour a one-channel output with the visible chroma (default True; the task
            networks see RGB).
        trainable: has parameters that ``taskeval fuse train`` / joint training can optimise.
        needs_text: ``forward`` accepts ``text=`` (per-image text embeddings, FILM).
        paper, licence, url: provenance shown in listings and reports.
        weights_file: file name of the official weights, if any exist (looked up in
            ``$TASKEVAL_WEIGHTS_DIR/<Name>/`` when ``weights="official"``).
        default_kwargs: keyword arguments the factory receives unless overridden.
        official_image: the official test script end to end, for ports:
            ``fn(model, ir, vis, text=None) -> np.ndarray`` with ``ir`` (N,1,H,W) and ``vis`` (N,3,H,W)
            RGB float32 in [0,1] (exactly the 8-bit files / 255) returning the uint8 images the official
            code writes, (N,H,W) grey or (N,H,W,3) RGB: its input preparation, forward pass, clamping,
            min-max, truncation and colour round trips included. None: the method has no official code
            to follow (classic fusions, plug-ins) and the harness's float path is used.
        weight_files: ``fn(path) -> [paths]``, every file a weights path reads (DIDFuse's encoder and
            decoder are two files); None: the path alone. Keys hash all of them.
        verified: what the port's outputs are verified against, shown by ``taskeval models``:
            :data:`VERIFIED_OFFICIAL_WEIGHTS` (the official outputs with the official weights),
            :data:`VERIFIED_RANDOM_WEIGHTS` (the official code's outputs on a random checkpoint in the
            official layout), ``""`` (no official code to compare with), or a sentence where neither fits.
    """

    name: str
    factory: Callable[..., nn.Module] = field(repr=False, compare=False)
    vis_input: Literal["y", "rgb"] = "y"
    output: Literal["y", "rgb"] = "y"
    normalize: Literal["clip", "minmax_y", "minmax_rgb"] = "clip"
    recolor: bool = True
    trainable: bool = True
    needs_text: bool = False
    paper: str = ""
    licence: str = ""
    url: str = ""
    weights_file: str | None = None
    description: str = ""
    default_kwargs: dict = field(default_factory=dict, compare=False)
    official_image: Callable | None = field(default=None, repr=False, compare=False)
    weight_files: Callable | None = field(default=None, repr=False, compare=False)
    verified: str = ""

    @property
    def learned(self) -> bool:
        return self.trainable


# FusionSpec.verified: what a port's outputs were compared with (tests/test_port_*.py).
VERIFIED_OFFICIAL_WEIGHTS = "official weights"
VERIFIED_RANDOM_WEIGHTS = "official code, random weights"

FUSION_MODELS: Registry[FusionSpec] = Registry(
    "fusion model", entry_point_group="taskeval.fusion_models", builtin_modules=BUILTIN_MODULES
)

_VALID = {
    "vis_input": ("y", "rgb"),
    "output": ("y", "rgb"),
    "normalize": ("clip", "minmax_y", "minmax_rgb"),
}


def register_fusion_model(name: str | None = None, **meta) -> Callable:
    """Decorator registering a factory ``fn(**kwargs) -> nn.Module`` as a fusion method.

    Example::

        @register_fusion_model("mynet", vis_input="y", output="y", paper="Me et al. 2025")
        def mynet(**kwargs):
            return MyNet(**kwargs)
    """

    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        reg_name = name or fn.__name__
        for key, allowed in _VALID.items():
            if key in meta and meta[key] not in allowed:
                raise ConfigError(f"fusion model {reg_name!r}: {key}={meta[key]!r} must be one of {allowed}")
        spec = FusionSpec(name=reg_name, factory=fn, **meta)
        FUSION_MODELS.register(reg_name, fn, spec, source=getattr(fn, "__module__", "?"))
        return fn

    return deco


def get_fusion_spec(name: str) -> FusionSpec:
    """The :class:`FusionSpec` of a registered name (raises with a suggestion on a typo).

    ``base@tag`` names a derived method: the architecture of ``base`` with other weights (e.g.
    ``seafusion@joint-seg`` for a jointly trained SeAFusion); it gets ``base``'s spec under its own name,
    so its fused images are cached and reported separately.
    """
    if "@" in name and name not in FUSION_MODELS:
        base, tag = name.split("@", 1)
        if not tag:
            raise ConfigError(f"derived method name {name!r} needs a tag after '@'")
        return replace(FUSION_MODELS.get(base).meta, name=name)
    return FUSION_MODELS.get(name).meta


def list_fusion_models(pattern: str = "*") -> list[str]:
    """Registered names matching a shell wildcard, sorted."""
    return FUSION_MODELS.list(pattern)


def create_fusion_model(
    name: str,
    weights: str | None = None,
    device: str | torch.device = "cpu",
    strict: bool = True,
    **kwargs,
) -> nn.Module:
    """Build a registered fusion model, optionally load weights, move it to ``device``.

    Args:
        name: registry name.
        weights: path of a checkpoint, ``"official"`` (the spec's ``weights_file`` under
            ``$TASKEVAL_WEIGHTS_DIR``) or None (random initialisation / training-free).
        device: where the model lives.
        strict: require every checkpoint key to match (see :func:`fusion_models.weights.load_weights`).
        **kwargs: factory arguments; ``None`` values are dropped.

    Returns:
        The module in eval mode, with ``model.spec`` set to its :class:`FusionSpec`.
    """
    from fusion_models.weights import load_weights, resolve_weights

    spec = get_fusion_spec(name)
    args = {**spec.default_kwargs, **{k: v for k, v in kwargs.items() if v is not None}}
    params = inspect.signature(spec.factory).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        unknown = sorted(set(args) - set(params))
        if unknown:
            raise ConfigError(f"fusion model {name!r} takes no argument(s) {unknown}; it takes {sorted(params)}")
    model = spec.factory(**args)
    if weights is not None:
        load_weights(model, resolve_weights(spec, weights), strict=strict)
    model.spec = spec
    return model.to(device).eval()


def with_spec(spec: FusionSpec, **changes) -> FusionSpec:
    """A copy of ``spec`` with some fields changed (for derived methods such as ``x@joint-seg``)."""
    return replace(spec, **changes)

"""Fusion methods: registry, built-in methods, official-weight ports, plug-ins.

Public API::

    from fusion_models import create_fusion_model, list_fusion_models, register_fusion_model
"""

from fusion_models.registry import (
    FUSION_MODELS,
    FusionSpec,
    create_fusion_model,
    get_fusion_spec,
    list_fusion_models,
    register_fusion_model,
)

__all__ = [
    "FUSION_MODELS",
    "FusionSpec",
    "create_fusion_model",
    "get_fusion_spec",
    "list_fusion_models",
    "register_fusion_model",
]

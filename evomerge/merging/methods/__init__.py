"""The registry of merge methods. A new method is one module defining a `MergeMethod` and a line here."""

from __future__ import annotations

from evomerge.core.errors import UserError
from evomerge.merging.methods.base import MergeMethod, ParamSpec, TensorContext
from evomerge.merging.methods.arcee_fusion import ARCEE_FUSION
from evomerge.merging.methods.linear import LINEAR
from evomerge.merging.methods.model_stock import MODEL_STOCK
from evomerge.merging.methods.nearswap import NEARSWAP
from evomerge.merging.methods.passthrough import PASSTHROUGH
from evomerge.merging.methods.ram import RAM, RAMPLUS_TL
from evomerge.merging.methods.sce import SCE
from evomerge.merging.methods.slerp import KARCHER, MULTISLERP, NUSLERP, SLERP
from evomerge.merging.methods.task_arithmetic import (
    BREADCRUMBS,
    BREADCRUMBS_TIES,
    DARE_LINEAR,
    DARE_TIES,
    DELLA,
    DELLA_LINEAR,
    TASK_ARITHMETIC,
    TIES,
)

_REGISTRY: dict[str, MergeMethod] = {
    m.name: m
    for m in (LINEAR, TASK_ARITHMETIC, TIES, DARE_TIES, DARE_LINEAR, BREADCRUMBS, BREADCRUMBS_TIES, DELLA,
              DELLA_LINEAR, MODEL_STOCK, SCE, SLERP, NUSLERP, MULTISLERP, KARCHER, NEARSWAP, ARCEE_FUSION, RAM, RAMPLUS_TL, PASSTHROUGH)
}


def method_names() -> list[str]:
    return list(_REGISTRY)


def get_method(name: str) -> MergeMethod:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UserError(f"unknown merge method {name!r}; known: {', '.join(_REGISTRY)}") from None


__all__ = ["MergeMethod", "ParamSpec", "TensorContext", "get_method", "method_names"]

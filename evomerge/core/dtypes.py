"""Dtype names, in one place: what recipes and configs may say (with mergekit's aliases), and the torch dtypes
they stand for, including safetensors' own names for them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import torch

DtypeName = Literal["float32", "float16", "bfloat16", "float64"]
NAMES: tuple[str, ...] = ("float32", "float16", "bfloat16", "float64")
ALIASES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16", "half": "float16", "float": "float32"}
SAFETENSORS = {"F32": "float32", "F16": "float16", "BF16": "bfloat16", "F64": "float64"}


def canonical(name: str) -> str:
    """The dtype's name as evomerge writes it (`bf16` -> `bfloat16`); a ValueError for anything else."""
    name = ALIASES.get(name, name)
    if name not in NAMES:
        raise ValueError(f"unknown dtype {name!r}; use one of {', '.join(NAMES)}")
    return name


def torch_dtype(name: str) -> "torch.dtype":
    import torch

    return getattr(torch, canonical(name))

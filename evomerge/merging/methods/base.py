"""What a merge method is: a declared parameter list and input contract, plus one tensor function.

The engine resolves every parameter for a tensor before calling `merge`, so a method never sees recipes, filters
or gradients: only float32 tensors, the index of the base among them, and plain numbers.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, Literal

import torch

from evomerge.core.errors import UserError

REQUIRED = object()
Scope = Literal["shared", "input", "non_base"]


@dataclass(frozen=True)
class ParamSpec:
    """One parameter: `shared` has one value per tensor, `input` one per input, `non_base` one per non-base input."""

    name: str
    kind: type = float
    scope: Scope = "shared"
    default: Any = REQUIRED
    low: float | None = None
    high: float | None = None

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    def check(self, value: Any, where: str) -> Any:
        """Validate and coerce one value, raising UserError that names `where`."""
        if self.kind is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "false"):
                return value.lower() == "true"
            raise UserError(f"expected true or false, got {value!r}", where)
        if self.kind is int:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
                raise UserError(f"expected a whole number, got {value!r}", where)
            value = int(value)
            if (self.low is not None and value < self.low) or (self.high is not None and value > self.high):
                raise UserError(f"{value} is out of range [{_fmt(self.low)}, {_fmt(self.high)}]", where)
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            try:
                value = float(value)  # mergekit accepts "1e-3" written as a string
            except (TypeError, ValueError):
                raise UserError(f"expected a number, got {value!r}", where) from None
        value = float(value)
        if not math.isfinite(value):
            raise UserError(f"expected a finite number, got {value!r}", where)
        if (self.low is not None and value < self.low) or (self.high is not None and value > self.high):
            raise UserError(f"{value:g} is out of range [{_fmt(self.low)}, {_fmt(self.high)}]", where)
        return value


def _fmt(v: float | None) -> str:
    return "-inf" if v is None else f"{v:g}"


@dataclass
class TensorContext:
    """Per-tensor facts a method may need: the tensor's name, and reproducible uniform numbers per input index
    (from evomerge.core.rng, keyed by seed, tensor and source): DARE's and DELLA's masks, Arcee Fusion's sample."""

    name: str
    uniform: Callable[[int, torch.Size, torch.device], torch.Tensor] | None = None

    def mask(self, i: int, density: float, shape: torch.Size, device: torch.device) -> torch.Tensor:
        """DARE's Bernoulli(density) keep-mask for input i."""
        return self.uniform(i, shape, device) < density


@dataclass(frozen=True)
class FusedForm:
    """How the fused GPU kernels (merging/fused_gpu.py) compute a method in one pass per tensor, declared by the
    method itself; a method without one always runs its reference `merge`.

    weighted_sum: sum_i w_i x_i (divided by the weight sum with normalize); slerp: c0 x_base + c1 x_other with the
    coefficients from the sources' kept norms; task_vectors: base + lambda * mix of sparsified, weighted deltas,
    with `sparsify` random (DARE's counter-based mask, L1 rescale), magnitude (exact top-k via histograms) or
    outliers (Breadcrumbs: a top-k less a smaller top-k), and `consensus` for TIES' sign election. The CPU kernels
    (evomerge/merging/fused_cpu.py) compute every form; the GPU ones those with `gpu`."""

    kind: Literal["weighted_sum", "slerp", "task_vectors"]
    sparsify: Literal["random", "magnitude", "outliers"] | None = None
    consensus: bool = False

    @property
    def gpu(self) -> bool:
        """Whether the GPU kernels have it (Breadcrumbs' two-sided magnitude cut runs fused on the CPU only)."""
        return self.sparsify in (None, "random", "magnitude")


@dataclass(frozen=True)
class MergeMethod(ABC):
    name: str
    params: tuple[ParamSpec, ...] = ()
    base: Literal["required", "optional", "ignored"] = "ignored"
    min_inputs: int = 1
    max_inputs: int | None = None
    randomised: bool = False
    fused: FusedForm | None = None  # its one-pass form for the fused kernels, if it has one
    description: str = ""

    def param(self, name: str) -> ParamSpec | None:
        for p in self.params:
            if p.name == name:
                return p
        return None

    def check_inputs(self, n_inputs: int, has_base: bool, where: str) -> None:
        """Input-count and base checks, as a recipe-level error."""
        if self.base == "required" and not has_base:
            raise UserError(f"merge method {self.name} needs a base_model", where)
        if n_inputs < self.min_inputs:
            raise UserError(f"merge method {self.name} needs at least {self.min_inputs} models, got {n_inputs}", where)
        if self.max_inputs is not None and n_inputs > self.max_inputs:
            exact = "exactly" if self.min_inputs == self.max_inputs else "at most"
            raise UserError(f"merge method {self.name} takes {exact} {self.max_inputs} models, got {n_inputs}", where)

    def check_task(self, shared: dict[str, Any], per_input: list[dict[str, Any]], where: str) -> None:
        """Checks across parameters (e.g. DELLA's density +- epsilon), run while planning: before any output."""

    @abstractmethod
    def merge(
        self,
        tensors: list[torch.Tensor],
        base: int | None,
        shared: dict[str, Any],
        per_input: list[dict[str, Any]],
        ctx: TensorContext,
    ) -> torch.Tensor:
        """Merge float32 tensors of one shape into one float32 tensor."""

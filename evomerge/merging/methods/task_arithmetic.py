"""The task-arithmetic family: task_arithmetic, ties, dare_ties, dare_linear, breadcrumbs(_ties), della(_linear).

delta_i = model_i - base; each delta is sparsified with its own density (ties: top magnitudes, dare: random
keep, breadcrumbs: top magnitudes less the gamma largest outliers, della: random keep, more likely the larger the
magnitude, density +- epsilon), scaled by its weight; the *ties methods and della elect a sign per element (sign
of the weighted sum) and drop entries that disagree; normalize divides by the sum of the weights of the kept
entries; result = base + lambda * mixed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from evomerge.core.errors import UserError
from evomerge.merging.methods.base import FusedForm, MergeMethod, ParamSpec
from evomerge.merging.methods.sparsify import dare, della, magnitude, outliers


@dataclass(frozen=True)
class TaskArithmetic(MergeMethod):
    sparsify: Literal["magnitude", "random", "outliers", "della"] | None = None
    consensus: bool = False

    def check_task(self, shared, per_input, where):
        if self.sparsify != "della":
            return
        for p in per_input:
            density, eps = p.get("density", 1.0), p.get("epsilon", 0.0)
            if 0 < density < 1 and not (density - eps > 0 and density + eps < 1):
                raise UserError(f"DELLA needs density +- epsilon inside (0, 1); density {density:g}, epsilon "
                                f"{eps:g}", where)

    def merge(self, tensors, base, shared, per_input, ctx):
        base_t = tensors[base]
        others = [i for i in range(len(tensors)) if i != base]
        if not others:
            return base_t
        deltas = torch.empty((len(others), *base_t.shape), dtype=base_t.dtype, device=base_t.device)
        weights = torch.empty(len(others), dtype=base_t.dtype, device=base_t.device)
        for row, i in enumerate(others):
            delta = tensors[i] - base_t
            density = per_input[i].get("density", 1.0)
            if self.sparsify == "magnitude":
                delta = magnitude(delta, density, shared["rescale"])
            elif self.sparsify == "random" and density < 1:
                delta = dare(delta, density, ctx.mask(i, density, delta.shape, delta.device), shared["rescale"])
            elif self.sparsify == "outliers":
                delta = outliers(delta, density, per_input[i]["gamma"], shared["rescale"])
            elif self.sparsify == "della" and density < 1:
                u = ctx.uniform(i, delta.shape, delta.device) if density > 0 else None
                delta = della(delta, density, per_input[i]["epsilon"], u, shared["rescale"])
            weights[row] = per_input[i]["weight"]
            deltas[row] = delta
        w = weights.reshape(-1, *([1] * base_t.dim()))
        deltas.mul_(w)
        if self.consensus:
            majority = torch.where(deltas.sum(0) >= 0, 1.0, -1.0).to(deltas.dtype)
            agree = deltas.sign() == majority
            mixed = (deltas * agree).sum(0)
            divisor = (w * agree).sum(0)
            divisor[divisor == 0] = 1
        else:
            mixed = deltas.sum(0)
            divisor = w.sum(0)
            divisor[divisor.abs() < 1e-8] = 1
        if shared["normalize"]:
            mixed = mixed / divisor
        if shared["lambda"] != 1:
            mixed = mixed * shared["lambda"]
        return base_t + mixed


def _params(normalize: bool, rescale: bool, density: bool, extra: tuple[ParamSpec, ...] = ()) -> tuple[ParamSpec, ...]:
    p = [
        ParamSpec("weight", scope="non_base"),
        ParamSpec("normalize", kind=bool, default=normalize),
        ParamSpec("rescale", kind=bool, default=rescale),
        ParamSpec("lambda", default=1.0),
        ParamSpec("int8_mask", kind=bool, default=False),  # a memory option in mergekit; no numerical effect
    ]
    if density:
        p.insert(1, ParamSpec("density", scope="non_base", default=1.0, low=0.0, high=1.0))
    return (*p, *extra)


# mergekit's defaults: breadcrumbs drops the top 1% as outliers; DELLA's probabilities span density +- 0.15
_GAMMA = ParamSpec("gamma", scope="non_base", default=0.01, low=0.0, high=1.0)
_EPSILON = ParamSpec("epsilon", scope="non_base", default=0.15, low=0.0, high=0.5)


TASK_ARITHMETIC = TaskArithmetic(
    name="task_arithmetic", params=_params(False, False, density=False), base="required",
    fused=FusedForm("task_vectors"),
    description="base + lambda * sum(weight_i * (model_i - base))",
)
TIES = TaskArithmetic(
    name="ties", params=_params(True, False, density=True), base="required", sparsify="magnitude", consensus=True,
    fused=FusedForm("task_vectors", "magnitude", consensus=True),
    description="TIES: top-magnitude sparsification, sign election, disjoint mean",
)
DARE_TIES = TaskArithmetic(
    name="dare_ties", params=_params(False, True, density=True), base="required", sparsify="random", consensus=True,
    fused=FusedForm("task_vectors", "random", consensus=True),
    randomised=True, description="DARE masks (seeded), L1 rescale, TIES sign election",
)
DARE_LINEAR = TaskArithmetic(
    name="dare_linear", params=_params(False, True, density=True), base="required", sparsify="random",
    fused=FusedForm("task_vectors", "random"),
    randomised=True, description="DARE masks (seeded), L1 rescale, weighted sum",
)
BREADCRUMBS = TaskArithmetic(
    name="breadcrumbs", params=_params(False, False, density=True, extra=(_GAMMA,)), base="required",
    sparsify="outliers", fused=FusedForm("task_vectors", "outliers"), description="Model Breadcrumbs: drop the smallest and the gamma largest magnitudes, sum",
)
BREADCRUMBS_TIES = TaskArithmetic(
    name="breadcrumbs_ties", params=_params(False, False, density=True, extra=(_GAMMA,)), base="required",
    sparsify="outliers", consensus=True, fused=FusedForm("task_vectors", "outliers", consensus=True),
    description="Model Breadcrumbs sparsification with TIES sign election",
)
DELLA = TaskArithmetic(
    name="della", params=_params(True, True, density=True, extra=(_EPSILON,)), base="required", sparsify="della",
    consensus=True, randomised=True,
    description="DELLA: keep-probability rising with magnitude rank (seeded), L1 rescale, TIES sign election",
)
DELLA_LINEAR = TaskArithmetic(
    name="della_linear", params=_params(False, True, density=True, extra=(_EPSILON,)), base="required",
    sparsify="della", randomised=True,
    description="DELLA: keep-probability rising with magnitude rank (seeded), L1 rescale, weighted sum",
)

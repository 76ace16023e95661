"""RAM, Reinforced Agent Merging: each element of the merged task vector is the mean over the models that change
it (|delta| > epsilon); an element only one model changes keeps that change whole instead of being diluted.
ramplus_tl (tensor-local RAM+) also scales each model's unique changes by 1 + r * min(alpha, shared / unique),
its count of shared over unique changed elements in this tensor."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from evomerge.merging.methods.base import MergeMethod, ParamSpec


@dataclass(frozen=True)
class Ram(MergeMethod):
    plus: bool = False

    def merge(self, tensors, base, shared, per_input, ctx):
        base_t = tensors[base]
        if len(tensors) == 1:
            return base_t
        tvs = torch.stack([(t - base_t).reshape(-1) for i, t in enumerate(tensors) if i != base])
        changed = tvs.abs() > shared["epsilon"]
        counts = changed.sum(dim=0, keepdim=True)
        unique, overlap = counts == 1, counts > 1
        tvs = tvs * changed
        boost = torch.ones(len(tvs), 1, dtype=tvs.dtype, device=tvs.device)
        if self.plus:
            rho = (changed & overlap).sum(dim=1) / (changed & unique).sum(dim=1).clamp(min=shared["epsilon"])
            boost = (1 + shared["r"] * rho.clamp(min=0, max=shared["alpha"])).unsqueeze(-1)
        merged = (tvs * unique * boost + tvs * overlap / counts.clamp(min=1)).sum(dim=0)
        return base_t + merged.reshape(base_t.shape)


_EPSILON = ParamSpec("epsilon", default=1e-5, low=0.0)
RAM = Ram(name="ram", params=(_EPSILON,), base="required",
          description="task vectors averaged over the models that change each element")
RAMPLUS_TL = Ram(
    name="ramplus_tl", params=(ParamSpec("r", default=0.1), ParamSpec("alpha", default=0.2), _EPSILON),
    base="required", plus=True, description="RAM with each model's unique changes scaled up by its overlap ratio",
)

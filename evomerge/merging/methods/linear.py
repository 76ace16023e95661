"""Weighted average of the inputs (model soup)."""

from __future__ import annotations

import torch

from evomerge.merging.methods.base import FusedForm, MergeMethod, ParamSpec


class Linear(MergeMethod):
    def merge(self, tensors, base, shared, per_input, ctx):
        weights = [p["weight"] for p in per_input]
        out = torch.zeros_like(tensors[0])
        for t, w in zip(tensors, weights):
            out.add_(t, alpha=w)
        if shared["normalize"]:
            out.div_(sum(weights))
        return out


LINEAR = Linear(
    name="linear",
    fused=FusedForm("weighted_sum"),
    params=(ParamSpec("weight", scope="input"), ParamSpec("normalize", kind=bool, default=True)),
    description="weighted average; weights divided by their sum unless normalize: false",
)

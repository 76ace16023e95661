"""Arcee Fusion: take the other model's change only where it matters most. Each element's importance is
|other - base| times the KL divergence between the rows' softmaxes (other vs base); elements whose importance
reaches median + 1.5 IQR (the outlier fence) take the other model's value, the rest keep the base's.

The quartiles come from the sorted importances; above a million elements, from a sample of a million drawn
with replacement. mergekit draws that sample from torch's global RNG; here it comes from evomerge.core.rng, keyed by
the recipe's seed and the tensor, so the merge is reproducible.
"""

from __future__ import annotations

import torch

from evomerge.merging.methods.base import MergeMethod

SAMPLE = 1_000_000
_EPS = 1e-8


def importance(other: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
    p = torch.softmax(other, dim=-1) + _EPS
    q = torch.softmax(base, dim=-1) + _EPS
    return (other - base).abs() * (p * torch.log(p / q)).sum(dim=-1, keepdim=True)


def outlier_fence(values: torch.Tensor, u: torch.Tensor | None = None) -> torch.Tensor:
    """median + 1.5 * (q3 - q1), with quantile i = sorted[int(q * (n - 1))]; `u` (uniform numbers, one per sample)
    picks the sample for large tensors."""
    flat = values.reshape(-1)
    if flat.numel() > SAMPLE:
        flat = flat[(u * flat.numel()).long().clamp(max=flat.numel() - 1)]
    ordered = torch.sort(flat).values
    q1, median, q3 = (ordered[int(q * (ordered.numel() - 1))] for q in (0.25, 0.5, 0.75))
    return median + 1.5 * (q3 - q1)


class ArceeFusion(MergeMethod):
    def merge(self, tensors, base, shared, per_input, ctx):
        b, other = tensors[base], tensors[1 - base]
        score = importance(other, b)
        u = ctx.uniform(1 - base, torch.Size([SAMPLE]), b.device) if score.numel() > SAMPLE else None
        return b + (other - b) * (score >= outlier_fence(score, u))


ARCEE_FUSION = ArceeFusion(
    name="arcee_fusion",
    base="required",
    min_inputs=2,
    max_inputs=2,
    description="the other model's values where their importance is an outlier, the base's elsewhere",
)

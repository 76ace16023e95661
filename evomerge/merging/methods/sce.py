"""SCE (FuseChat, Wan et al., 2024): Select the elements where the task vectors vary most, Calculate each task
vector's weight from its mean square, Erase entries against the elected sign; no weights to tune."""

from __future__ import annotations

import torch

from evomerge.merging.methods.base import MergeMethod, ParamSpec
from evomerge.merging.methods.sparsify import top_k


class Sce(MergeMethod):
    def merge(self, tensors, base, shared, per_input, ctx):
        base_t = tensors[base]
        if len(tensors) == 1:
            return base_t
        tvs = torch.stack([t - base_t for i, t in enumerate(tensors) if i != base])
        topk = shared["select_topk"]
        if topk < 1:
            var = tvs.var(dim=0, unbiased=False).reshape(-1)
            keep = top_k(var.abs(), int(torch.count_nonzero(var).item() * topk))
            tvs = tvs * keep.reshape(base_t.shape).to(tvs.dtype)
        energy = tvs.square().reshape(len(tvs), -1).mean(dim=1)
        total = energy.sum().item()
        w = energy / total if abs(total) >= 1e-6 else torch.full_like(energy, 1 / len(tvs))
        w = w.reshape(-1, *([1] * base_t.dim()))
        majority = torch.where(tvs.sum(0) >= 0, 1.0, -1.0).to(tvs.dtype)
        kept = w * (tvs.sign() == majority)
        return base_t + (tvs * kept).sum(0) / kept.sum(0).clamp(min=1e-6)


SCE = Sce(
    name="sce",
    params=(
        ParamSpec("select_topk", default=1.0, low=0.0, high=1.0),
        ParamSpec("int8_mask", kind=bool, default=False),  # a memory option in mergekit; no numerical effect
    ),
    base="required",
    description="SCE: top-variance selection, weights from task-vector energy, TIES sign election",
)

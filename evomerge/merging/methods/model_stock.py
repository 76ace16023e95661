"""Model Stock (Jang et al., 2024): interpolate between the base and the average of the fine-tuned models, by a
ratio that comes from the angle between their task vectors (the closer they agree, the more of the average).

With k fine-tuned models and cos the mean pairwise cosine between their deltas from the base,
t = k cos / (1 + (k - 1) cos) and the result is t * mean(models) + (1 - t) * base. `filter_wise` computes one t
per row of a weight matrix (one per output unit) instead of one per tensor. Where 1 + (k - 1) cos is 0, the
base is kept.
"""

from __future__ import annotations

import torch

from evomerge.merging.methods.base import MergeMethod, ParamSpec

_NORM_FLOOR = 1e-6
_SINGULAR = 1e-6


class ModelStock(MergeMethod):
    def merge(self, tensors, base, shared, per_input, ctx):
        w0 = tensors[base]

        def rows(t: torch.Tensor) -> torch.Tensor:
            """The vectors whose angle sets t: the whole tensor, or each slice along the last dimension."""
            if not shared["filter_wise"]:
                return t.reshape(-1)
            return t.unsqueeze(0) if t.dim() == 1 else t

        b = rows(w0)
        ws = [rows(t) for i, t in enumerate(tensors) if i != base]
        deltas = [w - b for w in ws]
        cosines = []
        for j, a in enumerate(deltas):
            for c in deltas[j + 1:]:
                norms = (a.norm(dim=-1) * c.norm(dim=-1)).clamp(min=_NORM_FLOOR)
                cosines.append(((a * c).sum(dim=-1) / norms).clamp(-1, 1))
        cos = torch.stack(cosines).mean(dim=0).unsqueeze(-1)
        k = len(ws)
        denom = 1 + (k - 1) * cos
        singular = denom.abs() < _SINGULAR
        t = torch.where(singular, torch.zeros_like(cos), k * cos / torch.where(singular, torch.ones_like(denom), denom))
        return (t * (sum(ws) / k) + (1 - t) * b).reshape(w0.shape)


MODEL_STOCK = ModelStock(
    name="model_stock",
    params=(ParamSpec("filter_wise", kind=bool, default=False),),
    base="required",
    min_inputs=3,
    description="Model Stock: base-to-average interpolation set by the task vectors' mutual angle",
)

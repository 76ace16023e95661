"""NearSwap: take the other model's value where it is near the base's, keep the base's where they differ.
Each element moves towards the other model by min(1, t / |base - other|): differences below t are swapped whole."""

from __future__ import annotations

from evomerge.merging.methods.base import MergeMethod, ParamSpec


class NearSwap(MergeMethod):
    def merge(self, tensors, base, shared, per_input, ctx):
        a, b = tensors[base], tensors[1 - base]
        w = (shared["t"] / (a - b).abs().clamp(min=1e-6)).clamp(0, 1)
        return w * b + (1 - w) * a


NEARSWAP = NearSwap(
    name="nearswap",
    params=(ParamSpec("t"),),
    base="required",
    min_inputs=2,
    max_inputs=2,
    description="per element, move from base to the other model by min(1, t / |difference|)",
)

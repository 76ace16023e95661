"""Copy one input unchanged (optionally scaled): the building block of layer stacking."""

from __future__ import annotations

from evomerge.merging.methods.base import MergeMethod, ParamSpec


class Passthrough(MergeMethod):
    def merge(self, tensors, base, shared, per_input, ctx):
        scale = per_input[0].get("scale")
        return tensors[0] if scale is None else tensors[0] * scale


PASSTHROUGH = Passthrough(
    name="passthrough",
    params=(ParamSpec("scale", scope="input", default=None),),
    max_inputs=1,
    description="one source per slice, copied as is; slices may repeat layers",
)

"""Spherical interpolation between the base and one other model, per tensor."""

from __future__ import annotations

import math

import torch

from evomerge.methods.base import MergeMethod, ParamSpec

DOT_THRESHOLD = 0.9995  # nearly collinear: fall back to linear interpolation
EPS = 1e-8


def slerp(t: float, v0: torch.Tensor, v1: torch.Tensor) -> torch.Tensor:
    """Interpolate along the great circle between v0 (t=0) and v1 (t=1), treating each tensor as one vector."""
    a = v0.reshape(-1).double()
    b = v1.reshape(-1).double()
    na, nb = a.norm().item(), b.norm().item()
    na = na if na > EPS else 1.0
    nb = nb if nb > EPS else 1.0
    dot = max(-1.0, min(1.0, float(torch.dot(a / na, b / nb))))
    if abs(dot) > DOT_THRESHOLD:
        ca, cb = 1 - t, t
    else:
        theta = math.acos(dot)
        s = math.sin(theta)
        ca, cb = math.sin((1 - t) * theta) / s, math.sin(t * theta) / s
    return (ca * v0 + cb * v1).to(v0.dtype)


class Slerp(MergeMethod):
    def merge(self, tensors, base, shared, per_input, ctx):
        other = 1 - base
        return slerp(shared["t"], tensors[base], tensors[other])


SLERP = Slerp(
    name="slerp",
    params=(ParamSpec("t", low=0.0, high=1.0),),
    base="required",
    min_inputs=2,
    max_inputs=2,
    description="spherical interpolation from base_model (t=0) to the other model (t=1)",
)

"""Spherical interpolation between the base and one other model, per tensor."""

from __future__ import annotations

import math

import torch

from evomerge.methods.base import MergeMethod, ParamSpec

DOT_THRESHOLD = 0.9995  # nearly collinear: fall back to linear interpolation
EPS = 1e-8


def coefficients(t: float, cos: float) -> tuple[float, float]:
    """(c0, c1) with slerp = c0 * v0 + c1 * v1, from the cosine of the angle between v0 and v1."""
    cos = max(-1.0, min(1.0, cos))
    if abs(cos) > DOT_THRESHOLD:
        return 1 - t, t
    theta = math.acos(cos)
    s = math.sin(theta)
    return math.sin((1 - t) * theta) / s, math.sin(t * theta) / s


def slerp(t: float, v0: torch.Tensor, v1: torch.Tensor) -> torch.Tensor:
    """Interpolate along the great circle between v0 (t=0) and v1 (t=1), treating each tensor as one vector."""
    a = v0.reshape(-1).double()
    b = v1.reshape(-1).double()
    na, nb = a.norm().item(), b.norm().item()
    na = na if na > EPS else 1.0
    nb = nb if nb > EPS else 1.0
    ca, cb = coefficients(t, float(torch.dot(a / na, b / nb)))
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

"""Spherical interpolation: slerp (base to one other model, each tensor one vector) and nuslerp (two models by
their weights, optionally as task vectors from a base, per row or per tensor)."""

from __future__ import annotations

import math

import torch

from evomerge.errors import UserError
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


def slerp_rows(t: float, v0: torch.Tensor, v1: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Slerp of each row (last dimension) of v0 towards v1's; rows at a zero angle interpolate linearly."""
    def unit(x: torch.Tensor) -> torch.Tensor:
        return x / x.norm(dim=-1, keepdim=True).clamp(min=1e-7)

    cos = (unit(v0) * unit(v1)).sum(dim=-1, keepdim=True).clamp(-1, 1)
    collinear = (1 - cos.square()) <= eps**2
    theta = torch.acos(torch.where(collinear, 0, cos))
    spherical = (torch.sin((1 - t) * theta) * v0 + torch.sin(t * theta) * v1) / torch.sin(theta)
    return torch.where(collinear, (1 - t) * v0 + t * v1, spherical)


class NuSlerp(MergeMethod):
    """t = w_2 / (w_1 + w_2) from the two non-base models' weights; with a base, their task vectors are slerped and
    added to it. `nuslerp_flatten` (default) treats the tensor as one vector; otherwise each row is one
    (`nuslerp_row_wise`: each column)."""

    def check_inputs(self, n_inputs, has_base, where):
        if n_inputs - has_base != 2:
            raise UserError(f"merge method nuslerp takes exactly 2 models besides the base_model, got "
                            f"{n_inputs - has_base}", where)

    def merge(self, tensors, base, shared, per_input, ctx):
        a, b = (i for i in range(len(tensors)) if i != base)
        wa, wb = per_input[a]["weight"], per_input[b]["weight"]
        t = 0.5 if abs(wa + wb) < 1e-6 else wb / (wa + wb)
        origin = tensors[base] if base is not None else None
        v0, v1 = (tensors[a], tensors[b]) if origin is None else (tensors[a] - origin, tensors[b] - origin)
        shape = v0.shape
        if shared["nuslerp_flatten"]:
            out = slerp_rows(t, v0.reshape(-1), v1.reshape(-1)).reshape(shape)
        elif shared["nuslerp_row_wise"]:
            out = slerp_rows(t, v0.transpose(0, -1), v1.transpose(0, -1)).transpose(0, -1)
        else:
            out = slerp_rows(t, v0, v1)
        return out if origin is None else origin + out


NUSLERP = NuSlerp(
    name="nuslerp",
    params=(
        ParamSpec("weight", scope="non_base"),
        ParamSpec("nuslerp_flatten", kind=bool, default=True),
        ParamSpec("nuslerp_row_wise", kind=bool, default=False),
    ),
    base="optional",
    min_inputs=2,
    description="slerp of two models (or their task vectors from a base) at t = w2 / (w1 + w2)",
)

"""Spherical interpolation: slerp (base to one other model, each tensor one vector), nuslerp (two models by their
weights, optionally as task vectors from a base, per row or per tensor), and weighted means of many models on
the sphere: multislerp (one step in the tangent space) and karcher (the Karcher mean, iterated)."""

from __future__ import annotations

import math

import torch

from evomerge.core.errors import UserError
from evomerge.merging.methods.base import FusedForm, MergeMethod, ParamSpec

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
    fused=FusedForm("slerp"),
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


class MultiSlerp(MergeMethod):
    """Project the non-base models (their task vectors, with a base) onto the unit sphere, average them in the
    tangent space at their weighted mean direction, map back, and scale by the weighted mean norm."""

    def check_inputs(self, n_inputs, has_base, where):
        if n_inputs - has_base < 1:
            raise UserError("merge method multislerp needs at least 1 model besides the base_model", where)

    def merge(self, tensors, base, shared, per_input, ctx):
        others = [i for i in range(len(tensors)) if i != base]
        if len(others) == 1:
            return tensors[others[0]]
        eps = shared["eps"]
        stacked = torch.stack([tensors[i] for i in others])
        if base is not None:
            stacked = stacked - tensors[base]
        flat = stacked.reshape(len(others), -1)
        w = torch.tensor([per_input[i]["weight"] for i in others], dtype=flat.dtype, device=flat.device)
        if shared["normalize_weights"]:
            w = w / w.sum()
        norms = flat.norm(dim=-1, keepdim=True)
        units = flat / (norms + eps)
        mean = (units * w.view(-1, 1)).sum(0)
        mean_norm = mean.norm()
        if mean_norm < eps:
            if len(others) != 2:
                raise UserError("multislerp: the weighted directions cancel out (antipodal models with balancing "
                                "weights); change the weights", ctx.name)
            out = (stacked[0] * w[0] + stacked[1] * w[1])
            return out if base is None else out + tensors[base]
        mean = mean / mean_norm
        tangent = ((units - (units * mean).sum(-1, keepdim=True) * mean) * w.view(-1, 1)).sum(0)
        length = tangent.norm() + eps
        out = (mean * torch.cos(length) + tangent * (torch.sin(length) / length)) * (norms.squeeze(-1) * w).sum()
        out = out.reshape(tensors[0].shape)
        return out if base is None else out + tensors[base]


class Karcher(MergeMethod):
    """The Karcher (Riemannian) mean of all inputs' directions with equal weights, by at most `max_iter`
    gradient steps until the step is below `tol`, scaled by the mean norm. Inputs with norm <= tol are left out
    of the direction."""

    def merge(self, tensors, base, shared, per_input, ctx):
        if len(tensors) == 1:
            return tensors[0]
        tol = shared["tol"]
        alphas = [1.0 / len(tensors)] * len(tensors)
        norms = [t.norm() for t in tensors]
        valid = [i for i, n in enumerate(norms) if n.item() > tol]
        if not valid:
            return torch.zeros_like(tensors[0])
        total = sum(alphas[i] for i in valid)
        weights = [alphas[i] / total for i in valid]
        units = [tensors[i] / norms[i] for i in valid]
        mean = sum(a * u for a, u in zip(weights, units))
        mean = units[0].clone() if mean.norm().item() < tol else mean / mean.norm()
        for _ in range(shared["max_iter"]):
            step = torch.zeros_like(mean)
            for a, u in zip(weights, units):
                dot = torch.dot(mean.flatten(), u.flatten()).clamp(-1.0, 1.0)
                theta = torch.arccos(dot)
                if theta.item() >= tol:
                    step += a * (theta / torch.sin(theta)) * (u - dot * mean)
            length = step.norm()
            if length.item() < tol:
                break
            mean = torch.cos(length) * mean + torch.sin(length) * (step / length)
            if mean.norm().item() > tol:
                mean = mean / mean.norm()
        return sum(a * n for a, n in zip(alphas, norms)) * mean


MULTISLERP = MultiSlerp(
    name="multislerp",
    params=(
        ParamSpec("weight", scope="non_base"),
        ParamSpec("normalize_weights", kind=bool, default=True),
        ParamSpec("eps", default=1e-8, low=0.0),
    ),
    base="optional",
    description="weighted spherical mean of any number of models (or task vectors), one tangent-space step",
)
KARCHER = Karcher(
    name="karcher",
    params=(ParamSpec("max_iter", kind=int, default=10, low=0), ParamSpec("tol", default=1e-5, low=0.0)),
    base="optional",
    description="Karcher mean of all inputs on the sphere, scaled by their mean norm",
)

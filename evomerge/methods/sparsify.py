"""Sparsifying task vectors: TIES keeps the largest magnitudes, DARE keeps a random subset."""

from __future__ import annotations

import torch

_EPS = 1e-7


def l1_rescale(delta: torch.Tensor, kept: torch.Tensor) -> torch.Tensor:
    """Scale the kept entries so the L1 norm matches the full task vector's (mergekit's `rescale`)."""
    before = delta.abs().sum()
    after = kept.abs().sum()
    if before < _EPS or after < _EPS:
        return kept
    return kept * (before / after)


def magnitude(delta: torch.Tensor, density: float, rescale: bool = False) -> torch.Tensor:
    """Keep the k = max(1, int(density * n)) entries of largest magnitude. Entries equal to the k-th largest
    magnitude are kept lowest index first (mergekit's sort leaves that choice to the sort), so the fused GPU
    kernel and this reference keep the same entries."""
    if density >= 1:
        return delta
    if density <= 0 or delta.numel() == 0:
        return torch.zeros_like(delta)
    flat = delta.reshape(-1)
    k = max(1, int(density * flat.numel()))
    a = flat.abs()
    thr = torch.kthvalue(a.cpu() if a.is_cuda else a, a.numel() - k + 1).values.to(a.device)
    greater = a > thr
    equal = a == thr
    room = k - int(greater.sum())
    keep = greater | (equal & (equal.cumsum(0) <= room))
    kept = torch.where(keep, flat, 0.0).reshape_as(delta)
    return l1_rescale(delta, kept) if rescale else kept


def dare(delta: torch.Tensor, density: float, keep: torch.Tensor | None, rescale: bool = True) -> torch.Tensor:
    """Drop entries where `keep` is False; `keep` is a Bernoulli(density) mask from evomerge.rng."""
    if density >= 1:
        return delta
    kept = delta * keep
    return l1_rescale(delta, kept) if rescale else kept

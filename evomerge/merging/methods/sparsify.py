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
    keep = top_k(flat.abs(), max(1, int(density * flat.numel())))
    kept = torch.where(keep, flat, 0.0).reshape_as(delta)
    return l1_rescale(delta, kept) if rescale else kept


def top_k(values: torch.Tensor, k: int) -> torch.Tensor:
    """Bool mask of the k largest of a 1-d tensor, equal values lowest index first."""
    if k <= 0:
        return torch.zeros_like(values, dtype=torch.bool)
    if k >= values.numel():
        return torch.ones_like(values, dtype=torch.bool)
    thr = torch.kthvalue(values.cpu() if values.is_cuda else values, values.numel() - k + 1).values.to(values.device)
    greater = values > thr
    equal = values == thr
    room = k - int(greater.sum())
    return greater | (equal & (equal.cumsum(0) <= room))


def dare(delta: torch.Tensor, density: float, keep: torch.Tensor | None, rescale: bool = True) -> torch.Tensor:
    """Drop entries where `keep` is False; `keep` is a Bernoulli(density) mask from evomerge.core.rng."""
    if density >= 1:
        return delta
    kept = delta * keep
    return l1_rescale(delta, kept) if rescale else kept


def outliers(delta: torch.Tensor, density: float, gamma: float, rescale: bool = False) -> torch.Tensor:
    """Model Breadcrumbs: drop the int(gamma * n) largest magnitudes (outliers) and then the smallest, keeping
    int(density * n) entries; the outlier cut shrinks when both cuts would not leave that many. Equal magnitudes
    are ordered by index (a stable sort), so every device keeps the same entries."""
    if density >= 1:
        return delta
    flat = delta.reshape(-1)
    n = flat.numel()
    target = max(0, int(density * n))
    n_bottom = max(0, n - target - int(gamma * n))
    order = torch.sort(flat.abs(), stable=True).indices
    keep = torch.zeros(n, dtype=torch.bool, device=delta.device)
    keep[order[n_bottom:n_bottom + target]] = True
    kept = torch.where(keep, flat, 0.0).reshape_as(delta)
    return l1_rescale(delta, kept) if rescale else kept


def della_probabilities(delta: torch.Tensor, density: float, epsilon: float) -> torch.Tensor:
    """DELLA's MagPrune keep-probabilities: within each row, linear in the magnitude's rank, from density - epsilon
    (smallest) to density + epsilon (largest). A 1-d tensor is one row; equal magnitudes rank by index."""
    rows = delta.reshape(1, -1) if delta.dim() < 2 else delta.reshape(delta.shape[0], -1)
    n = rows.shape[1]
    ranks = torch.argsort(torch.argsort(rows.abs(), dim=1, stable=True), dim=1).to(torch.float32)
    rank_norm = ranks / (n - 1) if n > 1 else torch.zeros_like(ranks)
    return ((density - epsilon) + rank_norm * 2 * epsilon).reshape_as(delta)


def della(delta: torch.Tensor, density: float, epsilon: float, u: torch.Tensor, rescale: bool = True) -> torch.Tensor:
    """Keep each entry where its uniform number `u` (from evomerge.core.rng) falls below its DELLA probability."""
    if density >= 1:
        return delta
    if density <= 0:
        return torch.zeros_like(delta)
    kept = delta * (u < della_probabilities(delta, density, epsilon))
    return l1_rescale(delta, kept) if rescale else kept

"""The sparsifiers beyond mergekit's reach in the equivalence tests: DELLA's keep-probabilities and the
reproducibility of its seeded masks (mergekit draws from torch's global RNG, so only the arithmetic is compared
there), and Breadcrumbs' cuts at the edges."""

from __future__ import annotations

import pytest
import torch

from evomerge.core import rng
from evomerge.merging.methods.sparsify import della, della_probabilities, outliers


def test_della_probabilities_rise_linearly_with_rank_per_row():
    delta = torch.tensor([[3.0, -1.0, 2.0, 0.5], [0.1, 0.4, -0.3, 0.2]])
    p = della_probabilities(delta, density=0.5, epsilon=0.2)
    # ranks by |value| within each row: smallest -> 0.3, largest -> 0.7, evenly spaced
    expected = torch.tensor([[0.7, 0.3 + 0.4 / 3, 0.3 + 0.8 / 3, 0.3], [0.3, 0.7, 0.3 + 0.8 / 3, 0.3 + 0.4 / 3]])
    assert torch.allclose(p, expected, atol=1e-6)
    assert torch.allclose(della_probabilities(torch.tensor([1.0, -4.0, 2.0]), 0.5, 0.1), torch.tensor([0.4, 0.6, 0.5]))


def test_della_keeps_large_magnitudes_more_often_at_the_mean_density():
    delta = torch.randn(256, 1024, generator=torch.Generator().manual_seed(0))
    u = rng.uniform_like(rng.stream_keys(3, "w", "src"), delta.shape)
    kept = della(delta, density=0.4, epsilon=0.3, u=u, rescale=False) != 0
    assert abs(kept.float().mean().item() - 0.4) < 0.01
    order = delta.abs().argsort(dim=1)
    top = kept.gather(1, order[:, -100:]).float().mean().item()  # probability about 0.4 + 0.3 * 0.9
    bottom = kept.gather(1, order[:, :100]).float().mean().item()  # about 0.4 - 0.3 * 0.9
    assert top == pytest.approx(0.4 + 0.3 * 0.9, abs=0.02)
    assert bottom == pytest.approx(0.4 - 0.3 * 0.9, abs=0.02)


def test_della_rescale_keeps_the_l1_norm_and_the_same_u_gives_the_same_mask():
    delta = torch.randn(64, 64, generator=torch.Generator().manual_seed(1))
    u = rng.uniform_like(rng.stream_keys(9, "w", "src"), delta.shape)
    a = della(delta, 0.5, 0.2, u, rescale=True)
    assert a.abs().sum().item() == pytest.approx(delta.abs().sum().item(), rel=1e-5)
    assert torch.equal(a, della(delta, 0.5, 0.2, u.clone(), rescale=True))
    other = rng.uniform_like(rng.stream_keys(10, "w", "src"), delta.shape)
    assert not torch.equal(a != 0, della(delta, 0.5, 0.2, other, rescale=True) != 0)


def test_breadcrumbs_cuts_outliers_then_small_values():
    delta = torch.arange(1.0, 101.0)  # magnitudes 1..100
    kept = outliers(delta, density=0.5, gamma=0.1)
    assert torch.equal(kept != 0, (delta > 40) & (delta <= 90))  # top 10 dropped, then the smallest 40
    # the outlier cut shrinks (to the top 5) when it would leave fewer than density * n entries
    assert torch.equal(outliers(delta, density=0.95, gamma=0.1) != 0, delta <= 95)
    assert not outliers(delta, density=0.0, gamma=0.1).any()
    assert torch.equal(outliers(delta, density=1.0, gamma=0.1), delta)

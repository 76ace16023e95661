"""The DARE mask RNG is a compatibility contract: exported recipes rely on it regenerating the same masks."""

from __future__ import annotations

import pytest
import torch

from evomerge.core import rng

KEY = rng.stream_keys(7, "model.layers.0.mlp.up_proj.weight", "org/model")


def test_golden_values():
    """Frozen outputs: if these change, every exported DARE recipe changes meaning."""
    assert KEY == (337063646, 1787818133)
    assert rng.uniform(KEY, 5).tolist() == pytest.approx(
        [0.13019824028015137, 0.35778623819351196, 0.7753327488899231, 0.6542689800262451, 0.18543601036071777],
        abs=0)
    # across a chunk boundary (65536) the stream is continuous
    assert rng.uniform(KEY, 70000)[65534:65538].tolist() == pytest.approx(
        [0.279779314994812, 0.9225916862487793, 0.28287428617477417, 0.9479421377182007], abs=0)


def test_prefix_property_and_determinism():
    a = rng.uniform(KEY, 200_000)
    assert torch.equal(a[:1000], rng.uniform(KEY, 1000))
    assert torch.equal(a, rng.uniform(KEY, 200_000))


def test_statistics():
    u = rng.uniform(KEY, 1_000_000)
    assert 0 <= u.min() and u.max() < 1
    assert abs(u.mean().item() - 0.5) < 0.002
    assert abs(u.var().item() - 1 / 12) < 0.001
    hist = torch.histc(u, bins=10, min=0, max=1) / u.numel()
    assert (hist - 0.1).abs().max() < 0.003
    # neighbours are uncorrelated
    assert abs(torch.corrcoef(torch.stack([u[:-1], u[1:]]))[0, 1].item()) < 0.005


def test_streams_are_independent():
    other = rng.stream_keys(7, "model.layers.0.mlp.up_proj.weight", "org/other")
    reseeded = rng.stream_keys(8, "model.layers.0.mlp.up_proj.weight", "org/model")
    u = rng.uniform(KEY, 100_000)
    for k in (other, reseeded):
        v = rng.uniform(k, 100_000)
        assert abs(torch.corrcoef(torch.stack([u, v]))[0, 1].item()) < 0.02
        assert ((u < 0.3) == (v < 0.3)).float().mean().item() == pytest.approx(0.3 * 0.3 + 0.7 * 0.7, abs=0.01)


@pytest.mark.parametrize("density", [0.1, 0.5, 0.9])
def test_keep_mask_density(density):
    mask = rng.keep_mask(KEY, torch.Size([300, 400]), density)
    assert mask.shape == (300, 400) and mask.dtype == torch.bool
    assert mask.float().mean().item() == pytest.approx(density, abs=0.01)

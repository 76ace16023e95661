"""DARE's rescale sums, summed any way, rounded to one float32; a live merge's DARE tables (fused_cpu.DareTables)
give every candidate the export's result bit for bit."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch

from evomerge.merging import fused_cpu
from evomerge.merging.cpu_kernels import _exact_acc
from evomerge.merging.kernels import merge_into
from evomerge.merging.methods import get_method
from evomerge.merging.plan import MergePlan, TensorTask


def nearest_f32(values: np.ndarray) -> np.float32:
    """The float32 nearest the exact sum (ties to even), by rational arithmetic."""
    exact = sum((Fraction(float(v)) for v in values), Fraction(0))
    c = np.float32(float(exact))
    best = None
    for cand in (np.nextafter(c, np.float32(-np.inf)), c, np.nextafter(c, np.float32(np.inf))):
        d = abs(Fraction(float(cand)) - exact)
        key = (d, int(np.array(cand).view(np.uint32)) & 1)  # ties: the even mantissa
        if best is None or key < best[0]:
            best = (key, cand)
    return best[1]


def exact_of(values: np.ndarray) -> np.float32:
    acc = np.zeros(256, np.int64)
    _exact_acc(np.ascontiguousarray(values, np.float32), acc)
    return fused_cpu._exact_f32(acc)


@pytest.mark.parametrize("kind", ["normal", "wide", "subnormal", "ties"])
def test_the_exact_sum_is_the_nearest_float32(kind):
    rs = np.random.default_rng(0)
    for trial in range(20):
        if kind == "normal":
            v = np.abs(rs.standard_normal(500)).astype(np.float32) * 0.01
        elif kind == "wide":  # magnitudes from 1e-30 to 1e30
            v = (10.0 ** rs.uniform(-30, 30, 200)).astype(np.float32)
        elif kind == "subnormal":
            v = (rs.integers(1, 1 << 20, 50) * 2.0**-149).astype(np.float32)
        else:  # sums that land exactly halfway between two float32
            v = np.array([1.0 + trial * 2.0**-23, 2.0**-24], np.float32)
        assert exact_of(v) == nearest_f32(v), (kind, trial)
    assert np.isnan(exact_of(np.array([1.0, np.inf], np.float32)))


def test_any_summation_order_rounds_to_the_same_float32():
    rs = np.random.default_rng(1)
    v = np.abs(rs.standard_normal(100_000)).astype(np.float32)
    want = nearest_f32(v[:2000])
    w = v[:2000]
    approxes = [float(w.astype(np.float64).sum()), float(np.cumsum(w.astype(np.float64))[-1]),
                float(w[::-1].astype(np.float64).sum()), float(sum(sorted(w.astype(np.float64).tolist())))]
    for a in approxes:
        assert fused_cpu._rounded(a, len(w), lambda: exact_of(w)) == want


def test_a_sum_near_a_rounding_boundary_is_summed_exactly():
    """1 + 2**-24 + 2**-60 lies just above the midpoint of 1 and 1 + 2**-23: float64 loses the 2**-60 and a plain
    float32 cast would round down; the error bound sends it to the exact sum, which rounds up."""
    v = np.array([1.0, 2.0**-24, 2.0**-60], np.float32)
    calls = []

    def exact():
        calls.append(1)
        return exact_of(v)

    approx = float(v.astype(np.float64).sum())
    assert np.float32(approx) == np.float32(1.0)  # what a plain cast gives
    assert fused_cpu._rounded(approx, 3, exact) == np.float32(1.0 + 2.0**-23) and calls


SHAPE = (300, 700)


def _merge(method, tensors, per_input, base, seed, tables=None, in_dtype=None, out_dtype=torch.float32):
    task = TensorTask("model.layers.3.mlp.up_proj.weight", [(f"m{i}", "t") for i in range(len(tensors))], base,
                      {"normalize": False, "rescale": True, "lambda": 1.0, "int8_mask": False}, per_input)
    plan = MergePlan(get_method(method), [task], [], "m0", None)
    out = torch.full(SHAPE, float("nan"), dtype=out_dtype)
    assert merge_into(plan, task, lambda m, n: tensors[int(m[1:])], seed, out, in_dtype, tables)
    return out


@pytest.mark.parametrize("method", ["dare_ties", "dare_linear"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_tables_give_the_export_bit_for_bit_at_every_density(method, dtype, monkeypatch):
    g = torch.Generator().manual_seed(0)
    base = torch.randn(SHAPE, generator=g) * 0.02
    tensors = [base + 0.002 * torch.randn(SHAPE, generator=g), base, base + 0.002 * torch.randn(SHAPE, generator=g)]
    tensors = [t.to(dtype) for t in tensors]
    seed = 11
    tables = fused_cpu.dare_tables(get_method(method), tensors, 1, {"rescale": True}, seed,
                                   "model.layers.3.mlp.up_proj.weight", None)
    assert tables is not None and tables.nbytes == 8 * 2 * base.numel()
    # densities that fall exactly on an element's mask number (u24 / 2**24): that element is out
    on = [float(tables.sorted_u[0, i]) * 2.0**-24 for i in (5, 40_000, 123_456)]
    for d0, d1 in ((0.1, 0.9), (0.5, 0.5), (0.37, 1.0), (2.0**-24, 0.999999), (0.0, 0.75), *zip(on, on[::-1])):
        per = [{"weight": 0.6, "density": d0}, {}, {"weight": 0.5, "density": d1}]
        export = _merge(method, tensors, per, 1, seed)
        live = _merge(method, tensors, per, 1, seed, tables)
        assert torch.equal(export, live), (d0, d1)
    # and where every sum takes the exact path, both still agree with what they gave
    monkeypatch.setattr(fused_cpu, "_rounded", lambda approx, terms, exact: exact())
    per = [{"weight": 0.6, "density": 0.3}, {}, {"weight": 0.5, "density": 0.8}]
    assert torch.equal(_merge(method, tensors, per, 1, seed), _merge(method, tensors, per, 1, seed, tables))
    monkeypatch.undo()
    assert torch.equal(_merge(method, tensors, per, 1, seed), _merge(method, tensors, per, 1, seed, tables))


def test_the_exact_fallback_of_an_export_matches_its_float64_sums_for_every_sparsifier(monkeypatch):
    """TIES (magnitude) and Breadcrumbs (outliers) with rescale: the exact pass keeps the same elements."""
    g = torch.Generator().manual_seed(3)
    base = torch.randn(SHAPE, generator=g) * 0.02
    tensors = [base, base + 0.002 * torch.randn(SHAPE, generator=g), base + 0.002 * torch.randn(SHAPE, generator=g)]
    for method, extra in (("ties", {}), ("breadcrumbs", {"gamma": 0.01}), ("dare_ties", {})):
        per = [{}, {"weight": 0.6, "density": 0.4, **extra}, {"weight": 0.5, "density": 0.7, **extra}]
        fast = _merge(method, tensors, per, 0, 5)
        with monkeypatch.context() as m:
            m.setattr(fused_cpu, "_rounded", lambda approx, terms, exact: exact())
            assert torch.equal(_merge(method, tensors, per, 0, 5), fast), method


def test_live_merge_with_tables_equals_the_export(family, tmp_path):
    from evomerge.merging.merge import run_merge
    from evomerge.sources.models import ModelPool
    from evomerge.merging.recipe import recipe_from_dict
    from evomerge.runtime.live import LiveMerge

    from conftest import load_state

    def recipe(d):
        return recipe_from_dict({"merge_method": "dare_ties", "base_model": str(family["base"]), "seed": 4,
                                 "dtype": "float32", "models": [
                                     {"model": str(family["ja"]), "parameters": {"weight": 0.6, "density": d}},
                                     {"model": str(family["math"]), "parameters": {"weight": 0.5, "density": 0.5}}]})

    with ModelPool() as pool:
        live = LiveMerge(recipe(0.3), pool, device="cpu")
        none = LiveMerge(recipe(0.3), pool, device="cpu", tables_bytes=0)
        for d in (0.3, 0.8):
            live.apply(recipe(d))
            none.apply(recipe(d))
            run_merge(recipe(d), tmp_path / f"out{d}", device="cpu", progress=False)
            exported = load_state(tmp_path / f"out{d}")
            for name, p in live.params.items():
                assert torch.equal(p, exported[name]) and torch.equal(none.params[name], p), name
        assert any(t is not None for _, t in live._tables.values())
        assert not any(t is not None for _, t in none._tables.values())

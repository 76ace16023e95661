"""The CPU kernels (evomerge/merging/fused_cpu.py) against each method's plain-torch reference `merge`: every fused
form, both kernel dtypes, the recipe dtype's rounding, sparsification edge cases and TIES' tie-break by index."""

from __future__ import annotations

import pytest
import torch

from evomerge.merging import fused_cpu
from evomerge.merging.kernels import merge_into, merge_task
from evomerge.merging.methods import get_method
from evomerge.merging.plan import MergePlan, TensorTask

NAME = "model.layers.0.mlp.up_proj.weight"
SHAPE = (96, 1000)  # 96 000 elements: several kernel blocks, a partial last one


def sources(n: int, dtype: torch.dtype, seed: int = 0, quantised: bool = False) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(SHAPE, generator=g) * 0.02
    out = [base] + [base + 0.002 * torch.randn(SHAPE, generator=g) for _ in range(n - 1)]
    if quantised:  # few distinct magnitudes: many ties at TIES' threshold
        out = [base] + [base + 0.001 * torch.randint(-3, 4, SHAPE, generator=g).float() for _ in range(n - 1)]
    return [t.to(dtype) for t in out]


def run_both(method: str, tensors, shared, per_input, base=0, out_dtype=None, in_dtype=None, seed=7):
    task = TensorTask(NAME, [(f"m{i}", "t") for i in range(len(tensors))], base, shared, per_input)
    plan = MergePlan(get_method(method), [task], [], "m0", None)
    lookup = dict(zip(task.inputs, tensors))
    fetch = lambda m, n: lookup[(m, n)]  # noqa: E731
    out = torch.full(SHAPE, float("nan"), dtype=out_dtype or tensors[0].dtype)  # every element must be written
    assert fused_cpu.supports(plan.method, tensors, out, in_dtype)
    assert merge_into(plan, task, fetch, seed, out, in_dtype)
    ref = merge_task(plan, task, fetch, seed, torch.device("cpu"), in_dtype).to(out.dtype)
    return out, ref


def assert_close(out, ref, ulps=2):
    tol = ulps * torch.finfo(out.dtype).eps * float(ref.float().abs().max())
    err = float((out.float() - ref.float()).abs().max())
    assert err <= tol, f"max abs difference {err:.3g} > {tol:.3g}"


TV = {"normalize": False, "rescale": False, "lambda": 1.0, "int8_mask": False}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_linear(dtype):
    out, ref = run_both("linear", sources(3, dtype), {"normalize": True},
                        [{"weight": 0.3}, {"weight": 0.5}, {"weight": 0.4}])
    assert_close(out, ref)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_task_arithmetic_equals_the_reference_exactly(dtype):
    out, ref = run_both("task_arithmetic", sources(3, dtype), {**TV, "lambda": 0.8},
                        [{}, {"weight": 0.7}, {"weight": -0.4}])
    assert torch.equal(out, ref)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("quantised", [False, True])
def test_ties_keeps_exactly_the_reference_entries(dtype, quantised):
    """Top-k by two histogram passes, equal magnitudes at the threshold kept lowest index first: the same
    entries as the reference's kthvalue, so the results are equal bit for bit (no whole-tensor sums)."""
    tensors = sources(4, dtype, quantised=quantised)
    per = [{}, {"weight": 0.5, "density": 0.3}, {"weight": 0.4, "density": 0.55}, {"weight": 0.9, "density": 0.01}]
    out, ref = run_both("ties", tensors, {**TV, "normalize": True}, per)
    assert torch.equal(out, ref)


def test_ties_edge_densities():
    tensors = sources(3, torch.float32, quantised=True)
    for d0, d1 in [(0.0, 1.0), (1e-9, 0.999999), (1.0, 1.0), (0.5, 0.0)]:
        out, ref = run_both("ties", tensors, {**TV, "normalize": True, "rescale": True},
                            [{}, {"weight": 0.5, "density": d0}, {"weight": 0.4, "density": d1}])
        assert_close(out, ref)


@pytest.mark.parametrize("method", ["dare_ties", "dare_linear"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_dare_draws_the_reference_masks(method, dtype):
    """The counter hash in the loop gives evomerge.core.rng's numbers: without rescale the result is exact."""
    tensors = sources(3, dtype)
    per = [{}, {"weight": 0.6, "density": 0.7}, {"weight": 0.5, "density": 0.3}]
    out, ref = run_both(method, tensors, {**TV, "rescale": False}, per, seed=3)
    assert torch.equal(out, ref)
    out, ref = run_both(method, tensors, {**TV, "rescale": True, "normalize": True, "lambda": 1.3}, per, seed=3)
    assert_close(out, ref)  # rescale: whole-tensor L1 sums, summed in another order


def test_dare_with_a_source_at_full_density_and_a_base_in_the_middle():
    tensors = sources(3, torch.float32)
    per = [{"weight": 0.6, "density": 1.0}, {}, {"weight": 0.5, "density": 0.0}]
    out, ref = run_both("dare_ties", tensors, {**TV, "rescale": True}, per, base=1)
    assert_close(out, ref)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_slerp(dtype):
    for t in (0.0, 0.3, 1.0):
        out, ref = run_both("slerp", sources(2, dtype), {"t": t}, [{}, {}])
        assert_close(out, ref)


def test_recipe_dtype_rounds_float32_sources_and_bf16_output_rounds_to_nearest_even():
    tensors = sources(3, torch.float32)
    out, ref = run_both("task_arithmetic", tensors, TV, [{}, {"weight": 0.7}, {"weight": 0.4}],
                        out_dtype=torch.bfloat16, in_dtype=torch.bfloat16)
    assert torch.equal(out, ref)


def test_non_finite_results_are_counted():
    tensors = sources(2, torch.bfloat16)
    task = TensorTask(NAME, [("m0", "t"), ("m1", "t")], 0, {**TV, "lambda": 1e38}, [{}, {"weight": 1e38}])
    plan = MergePlan(get_method("task_arithmetic"), [task], [], "m0", None)
    out = torch.empty(SHAPE, dtype=torch.bfloat16)
    assert not merge_into(plan, task, lambda m, n: tensors[int(m[1])], 0, out)


def test_what_the_kernels_do_not_take_goes_to_the_reference_path():
    ties = get_method("ties")
    f32 = sources(2, torch.float32)
    out = torch.empty(SHAPE)
    assert fused_cpu.supports(ties, f32, out, None)
    assert not fused_cpu.supports(ties, [t.half() for t in f32], out, None)  # float16 sources
    assert not fused_cpu.supports(ties, [f32[0], f32[1].bfloat16()], out, None)  # mixed dtypes
    assert not fused_cpu.supports(ties, f32, out, torch.float16)  # a float16 recipe dtype
    assert not fused_cpu.supports(ties, f32, out.half(), None)  # a float16 output
    assert not fused_cpu.supports(get_method("della"), f32, out, None)  # no fused form
    task = TensorTask(NAME, [("m0", "t"), ("m1", "t")], 0, {**TV, "normalize": True}, [{}, {"weight": 1, "density": .5}])
    plan = MergePlan(get_method("ties"), [task], [], "m0", None)
    half = torch.empty(SHAPE, dtype=torch.float16)
    assert merge_into(plan, task, lambda m, n: f32[int(m[1])], 0, half)
    assert torch.equal(half, merge_task(plan, task, lambda m, n: f32[int(m[1])], 0, torch.device("cpu")).half())


@pytest.mark.parametrize("method", ["breadcrumbs", "breadcrumbs_ties"])
@pytest.mark.parametrize("quantised", [False, True])
def test_breadcrumbs_keeps_exactly_the_reference_ranks(method, quantised):
    """The band of ascending magnitude ranks [bottom, bottom + target) of the reference's stable sort: two
    top-k cuts with equal magnitudes ranked by index, highest first."""
    tensors = sources(3, torch.bfloat16, quantised=quantised)
    for (d1, g1), (d2, g2) in [((0.5, 0.01), (0.3, 0.05)), ((0.9, 0.2), (0.0, 0.01)), ((0.999, 0.0), (1e-6, 0.0)),
                               ((0.2, 0.9), (0.5, 1.0))]:
        per = [{}, {"weight": 0.5, "density": d1, "gamma": g1}, {"weight": 0.8, "density": d2, "gamma": g2}]
        out, ref = run_both(method, tensors, {**TV, "normalize": method.endswith("ties")}, per)
        assert torch.equal(out, ref), (d1, g1, d2, g2)


@pytest.mark.parametrize("method", ["dare_ties", "slerp", "ties"])
def test_the_result_does_not_depend_on_the_number_of_threads(method, monkeypatch):
    """Whole-tensor sums are summed per fixed block, then in order: one thread and the whole pool agree bit for
    bit (an export on another machine equals the scored candidate)."""
    n = 2 if method == "slerp" else 3
    tensors = sources(n, torch.float32)
    per = [{}, {}] if method == "slerp" else [{}] + [{"weight": 0.5, "density": 0.4}] * (n - 1)
    shared = {"t": 0.3} if method == "slerp" else {**TV, "rescale": True, "normalize": True}
    monkeypatch.setattr(fused_cpu, "_PARALLEL_FROM", 0)
    parallel, ref = run_both(method, tensors, shared, per)
    monkeypatch.setattr(fused_cpu, "_PARALLEL_FROM", 1 << 40)
    serial, _ = run_both(method, tensors, shared, per)
    assert torch.equal(parallel, serial)
    assert_close(parallel, ref)


def test_the_integer_threshold_keeps_exactly_the_uniforms_below_the_density():
    """DARE's kernels compare the hash's 24 bits with an integer instead of the float32 uniform with the density:
    the same elements for every density, including exact multiples of 2**-24 and densities that round in
    float32."""
    u24 = torch.arange(1 << 24, dtype=torch.int64)
    uniform = u24.float() * 2.0**-24  # evomerge.core.rng's numbers (exact in float32)
    for d in (0.0, 2.0**-24, 0.3, 0.5, 0.7000001, 1 - 2.0**-24, 1 - 2.0**-26, 1.0, -0.5, 1.5):
        want = uniform < torch.tensor(d, dtype=torch.float32)
        assert torch.equal(u24 < fused_cpu._keep_below(d), want), d


@pytest.mark.parametrize("out_dtype", [torch.float32, torch.bfloat16])
def test_one_nan_or_a_value_beyond_the_output_dtype_is_caught(out_dtype):
    tensors = sources(2, torch.float32)
    tensors[1][7, 11] = float("nan")
    out = torch.empty(SHAPE, dtype=out_dtype)
    task = TensorTask(NAME, [("m0", "t"), ("m1", "t")], None, {"normalize": False}, [{"weight": 0.5}, {"weight": 0.5}])
    plan = MergePlan(get_method("linear"), [task], [], "m0", None)
    assert not merge_into(plan, task, lambda m, n: tensors[int(m[1])], 0, out)
    big = [torch.full(SHAPE, 3.40e38), torch.full(SHAPE, 3.40e38)]  # finite in float32, inf in bfloat16
    finite = merge_into(plan, task, lambda m, n: big[int(m[1])], 0, out)
    assert finite == (out_dtype == torch.float32)

"""The fused merge kernels (Triton, run in its interpreter on CPU) against the reference merge, method by method:
random fp32 and bf16 tensors, DARE masks regenerated exactly, exact-k TIES with shared threshold values, and
the live model merged through either path."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")

from evomerge.merging.kernels import merge_task  # noqa: E402
from evomerge.merging.methods import get_method  # noqa: E402
from evomerge.merging.fused_gpu import FusedMerger  # noqa: E402
from evomerge.merging.plan import MergePlan, TensorTask  # noqa: E402


def make_task(method, n_src, params, shared, with_base=True):
    inputs = [(f"m{i}", "w") for i in range(n_src + with_base)]
    base = 0 if with_base else None
    per = []
    for i in range(len(inputs)):
        per.append({} if i == base else dict(params[i - with_base]))
    return TensorTask(f"layer.{method}.w", inputs, base, shared, per)


def reference(method, task, tensors, seed, in_dtype):
    plan = MergePlan(get_method(method), [task], [], "m0", None)
    lookup = {inp: t for inp, t in zip(task.inputs, tensors)}
    return merge_task(plan, task, lambda m, n: lookup[(m, n)], seed, torch.device("cpu"), in_dtype)


def fused(method, task, tensors, seed, in_dtype, out_dtype):
    out = torch.full(tensors[0].shape, float("nan"), dtype=out_dtype)  # poisoned: every element must be written
    bad = torch.zeros(1, dtype=torch.int32)
    FusedMerger(in_dtype).merge_into(method, task, tensors, out, seed, bad)
    return out, int(bad)


def sources(n, shape=(37, 53), dtype=torch.float32, seed=0, quantize=None):
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(shape, generator=g)
    out = [base]
    for _ in range(n):
        delta = 0.05 * torch.randn(shape, generator=g)
        if quantize:  # coarse task vectors: many entries share each magnitude, so the TIES threshold is shared
            delta = torch.round(delta * quantize) / quantize
        out.append(base + delta)
    return [t.to(dtype) for t in out]


SHARED = {
    "task_arithmetic": {"normalize": False, "rescale": False, "lambda": 1.0, "int8_mask": False},
    "ties": {"normalize": True, "rescale": False, "lambda": 1.0, "int8_mask": False},
    "dare_ties": {"normalize": False, "rescale": True, "lambda": 1.0, "int8_mask": False},
    "dare_linear": {"normalize": False, "rescale": True, "lambda": 1.0, "int8_mask": False},
}


@pytest.mark.parametrize("method", ["task_arithmetic", "ties", "dare_ties", "dare_linear"])
@pytest.mark.parametrize("n_src", [1, 3])
@pytest.mark.parametrize("stored,in_dtype", [(torch.float32, None), (torch.bfloat16, None),
                                             (torch.float32, torch.bfloat16)])
def test_task_vector_methods_match_reference(method, n_src, stored, in_dtype):
    tensors = sources(n_src, dtype=stored, seed=n_src)
    params = [{"weight": w, "density": d} for w, d in zip([0.7, -0.4, 1.3], [0.35, 1.0, 0.6])][:n_src]
    shared = dict(SHARED[method], **({"lambda": 0.8, "normalize": True} if method == "dare_linear" else {}))
    task = make_task(method, n_src, params, shared)
    ref = reference(method, task, tensors, 11, in_dtype)
    out, bad = fused(method, task, tensors, 11, in_dtype, torch.float32)
    assert bad == 0
    torch.testing.assert_close(out, ref, rtol=2e-6, atol=1e-7)
    if method.startswith("dare"):  # the same entries were dropped: the masks are regenerated exactly
        base = tensors[0].float() if in_dtype is None else tensors[0].to(in_dtype).float()
        assert torch.equal(out == base, ref == base)


def test_ties_exact_k_with_shared_threshold_values():
    tensors = sources(3, shape=(64, 48), seed=5, quantize=40)  # ~10 distinct magnitudes: heavy ties
    params = [{"weight": w, "density": d} for w, d in zip([0.5, 1.0, 0.8], [0.3, 0.55, 0.9])]
    task = make_task("ties", 3, params, SHARED["ties"])
    ref = reference("ties", task, tensors, 0, None)
    out, _ = fused("ties", task, tensors, 0, None, torch.float32)
    assert torch.equal(out, ref)
    # exactly k entries kept per source, as mergekit's top-k
    from evomerge.merging.methods.sparsify import magnitude

    delta = tensors[1] - tensors[0]
    kept = magnitude(delta, 0.3)
    assert int((kept != 0).sum()) == int(0.3 * delta.numel())


@pytest.mark.parametrize("normalize", [True, False])
def test_linear_and_slerp_match_reference(normalize):
    tensors = sources(2, seed=9)
    task = make_task("linear", 3, [{"weight": 0.2}, {"weight": 0.5}, {"weight": 0.9}],
                     {"normalize": normalize}, with_base=False)
    ref = reference("linear", task, tensors, 0, None)
    out, _ = fused("linear", task, tensors, 0, None, torch.float32)
    torch.testing.assert_close(out, ref, rtol=1e-6, atol=1e-7)
    for t in (0.0, 0.3, 1.0):
        task = TensorTask("w", [("m0", "w"), ("m1", "w")], 0, {"t": t}, [{}, {}])
        ref = reference("slerp", task, tensors[:2], 0, None)
        out, _ = fused("slerp", task, tensors[:2], 0, None, torch.float32)
        torch.testing.assert_close(out, ref, rtol=1e-6, atol=1e-7)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the interpreter's numpy overflows on purpose below
def test_bf16_output_and_non_finite_flag():
    tensors = sources(2, dtype=torch.bfloat16, seed=3)
    params = [{"weight": 0.6, "density": 0.5}, {"weight": 0.6, "density": 0.5}]
    task = make_task("dare_ties", 2, params, SHARED["dare_ties"])
    ref = reference("dare_ties", task, tensors, 4, None).to(torch.bfloat16)
    out, bad = fused("dare_ties", task, tensors, 4, None, torch.bfloat16)
    assert bad == 0 and (out.float() - ref.float()).abs().max() <= 2 ** -7 * ref.float().abs().max()
    task = make_task("task_arithmetic", 2, [{"weight": 1e38}, {"weight": 1e38}], SHARED["task_arithmetic"])
    assert fused("task_arithmetic", task, [t.float() * 1e3 for t in tensors], 0, None, torch.float32)[1] == 1


@pytest.mark.parametrize("method", ["dare_ties", "ties", "linear"])
def test_live_model_fused_equals_reference(family, method):
    from evomerge.runtime.live import LiveMerge
    from evomerge.sources.models import ModelPool
    from evomerge.merging.recipe import recipe_from_dict

    models = [{"model": str(family[n]), "parameters": {"weight": w, "density": d}}
              for n, w, d in (("ja", 0.7, 0.4), ("math", 0.5, 0.7), ("code", 0.3, 0.9))]
    if method == "linear":
        models = [{"model": m["model"], "parameters": {"weight": m["parameters"]["weight"]}} for m in models]
    base = {} if method == "linear" else {"base_model": str(family["base"])}
    recipe = recipe_from_dict({"merge_method": method, **base, "models": models, "seed": 21, "dtype": "float32"})
    with ModelPool() as pool:
        fast = LiveMerge(recipe, pool, "cpu", fused=True)
        slow = LiveMerge(recipe, pool, "cpu", fused=False)
        fast.apply(recipe)
        slow.apply(recipe)
        a, b = fast.model.state_dict(), slow.model.state_dict()
    assert set(a) == set(b)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=2e-6, atol=1e-7, msg=k)

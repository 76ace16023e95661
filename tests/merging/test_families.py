"""Every family users merge merges equal to mergekit 0.1.5 (the reference for recipe semantics), on tiny seeded
models of each transformers class saved as the hub stores them: a merge with a base (TIES: top-k and sign
election over each whole tensor, fused expert tensors included), a passthrough of two slices (embeddings from the
first slice, final norm and output head from the last), and slerp for the families whose tensors are fused.
Mixture-of-experts checkpoints come in both layouts (transformers 5's fused one, and the hub's one tensor per
expert, which both tools read fused: evomerge/sources/experts.py); the outputs are compared tensor for tensor."""

from __future__ import annotations

import pytest

pytest.importorskip("mergekit")

from conftest import load_state  # noqa: E402
from families import build_family  # noqa: E402
from mergekit_reference import assert_same, run_mergekit, run_ours  # noqa: E402

ARCHS = ["llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3_text", "phi3", "stablelm", "starcoder2", "gpt2",
         "gpt_neox", "mixtral", "qwen3_moe",
         # the rest of mergekit's decoder architectures that transformers builds (no remote code)
         "gemma", "olmo2", "cohere", "cohere2", "granite", "phi", "gpt_bigcode", "falcon", "glm4", "arcee", "apertus"]


@pytest.fixture(scope="module")
def families(tmp_path_factory):
    root = tmp_path_factory.mktemp("families")
    out = {arch: build_family(root / arch, arch) for arch in ARCHS}
    for arch in ("mixtral", "qwen3_moe"):  # experts one tensor each, as the hub stores them
        out[f"{arch}-hub"] = build_family(root / f"{arch}-hub", arch, hub_experts=True)
    return out


def recipes(m: dict) -> dict[str, str]:
    return {
        "ties": f"""
merge_method: ties
base_model: {m['base']}
models:
  - {{model: {m['base']}}}
  - {{model: {m['ft0']}, parameters: {{weight: 0.6, density: 0.5}}}}
  - {{model: {m['ft1']}, parameters: {{weight: 0.4, density: 0.7}}}}
dtype: float32
""",
        "passthrough": f"""
merge_method: passthrough
slices:
  - sources: [{{model: {m['ft0']}, layer_range: [0, 2]}}]
  - sources: [{{model: {m['ft1']}, layer_range: [1, 3]}}]
dtype: float32
""",
        "slerp": f"""
merge_method: slerp
base_model: {m['base']}
models:
  - {{model: {m['base']}}}
  - {{model: {m['ft0']}}}
parameters: {{t: 0.3}}
dtype: float32
""",
    }


CASES = [(a, r) for a in ARCHS for r in ("ties", "passthrough")] + [(a, "slerp") for a in ("gpt_neox", "mixtral",
                                                                                            "qwen3_moe", "phi3")]
# hub MoE checkpoints: a layer's experts are one tensor for TIES' top-k and slerp's norms, as in mergekit
CASES += [(f"{a}-hub", r) for a in ("mixtral", "qwen3_moe") for r in ("ties", "slerp", "passthrough")]


@pytest.mark.parametrize("arch, kind", CASES, ids=[f"{a}-{r}" for a, r in CASES])
def test_merges_equal_mergekit(families, tmp_path, arch, kind):
    text = recipes(families[arch])[kind]
    ours = run_ours(text, tmp_path / "ours")
    try:
        ref = run_mergekit(text, tmp_path / "mk")
    except Exception as e:  # noqa: BLE001 (huggingface_hub's validation error)
        # mergekit 0.1.5 writes the tensors, then cannot save the config of a deeper stack when the sources list
        # one attention type per layer (`layer_types`: transformers 5 refuses the count mismatch). The tensors
        # are what is compared here; evomerge writes the right config (tests/merging/test_export.py).
        assert kind == "passthrough" and "layer_types" in str(e), e
        ref = load_state(tmp_path / "mk")
    assert_same(ours, ref)

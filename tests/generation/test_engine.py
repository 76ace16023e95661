"""The fast generation engine equals plain greedy `generate` token for token (float32, CPU), on tiny Llama, Qwen3,
Phi-3, Mixtral and Qwen3-MoE models (other families fall back to `generate`, saying so once), and on tiny Llama,
Mistral and Qwen2 models, the real SmolLM2, data-flow hop models and live merges; finished rows stop costing."""

from __future__ import annotations

import pytest
import torch

from evomerge.generation.engine import Engine, supports
from evomerge.generation.greedy import greedy_generate

PROMPTS = [[1, 5, 9], [1, 7], [1, 3, 4, 5, 6, 7, 8, 9, 10, 11], [1, 20, 21, 22], [1, 40], [1, 8, 8, 8, 8], [1, 33, 2]]


def hf_greedy(model, ids, max_new, eos=None):
    out = model.generate(torch.tensor([ids]), max_new_tokens=max_new, do_sample=False, num_beams=1,
                         pad_token_id=0, eos_token_id=eos, attention_mask=torch.ones(1, len(ids), dtype=torch.long))
    toks = out[0, len(ids):].tolist()
    if eos is not None and eos in toks:
        toks = toks[: toks.index(eos)]
    return toks


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    from transformers import AutoModelForCausalLM

    from conftest import build_model

    root = tmp_path_factory.mktemp("engine")
    out = {}
    for arch in ("llama", "mistral", "qwen2"):
        build_model(root / arch, arch=arch, seed=5, layers=3)
        out[arch] = AutoModelForCausalLM.from_pretrained(str(root / arch), dtype=torch.float32).eval()
    return out


@pytest.mark.parametrize("arch", ["llama", "mistral", "qwen2"])
@pytest.mark.parametrize("max_batch,sync_every", [(8, 1), (3, 4), (2, 8)])
def test_equals_plain_greedy(tiny_models, arch, max_batch, sync_every):
    model = tiny_models[arch]
    ours = Engine(model, max_batch=max_batch, sync_every=sync_every).generate(PROMPTS, 12)
    assert ours == [hf_greedy(model, p, 12) for p in PROMPTS]


def test_eos_ends_rows_and_finished_rows_stop_costing(tiny_models):
    model = tiny_models["llama"]
    free = [hf_greedy(model, p, 30) for p in PROMPTS]
    eos = free[0][3]  # a token the model does emit: rows end at different steps
    ref = [hf_greedy(model, p, 30, eos=eos) for p in PROMPTS]
    assert len({len(r) for r in ref}) > 1 and min(len(r) for r in ref) < 30
    engine = Engine(model, max_batch=4, sync_every=2)
    assert engine.generate(PROMPTS, 30, eos_ids=[eos]) == ref
    # rows leave the batch within sync_every steps of finishing; waiting prompts take their slots
    generated = sum(min(len(r) + 1, 30) for r in ref)
    assert engine.stats["row_steps"] <= generated + 2 * len(PROMPTS)
    static = 4 * 30 * 2  # what fixed batches of 4 cost when every batch runs to its longest row
    assert engine.stats["row_steps"] < static
    assert engine.stats["prefills"] >= 2  # freed slots were refilled


def test_smollm2_fast_equals_hf_path_with_stop_strings(smollm2):
    model, tok = smollm2
    prompts = ["The capital of France is", "1 + 1 =", "Count: 1, 2, 3, 4,", "def fib(n):", "日本の首都は",
               "Write a haiku about rain:", "Q: What is 12 times 3?\nA:"]
    kw = dict(max_new_tokens=24, stop=[" 7", "\n\n"], batch_size=3)
    fast = greedy_generate(model, tok, prompts, engine="fast", **kw)
    assert fast == greedy_generate(model, tok, prompts, engine="hf", **kw)
    assert fast[2].endswith("6,")  # cut at the stop string


def test_hop_models_and_live_merges(family):
    from transformers import AutoModelForCausalLM

    from evomerge.merging.dataflow import DataflowPath, Hop
    from evomerge.runtime.dataflow import HopModel
    from evomerge.runtime.live import LiveMerge
    from evomerge.sources.models import ModelPool
    from evomerge.merging.recipe import recipe_from_dict

    a = AutoModelForCausalLM.from_pretrained(str(family["ja"]), dtype=torch.float32).eval()
    b = AutoModelForCausalLM.from_pretrained(str(family["math"]), dtype=torch.float32).eval()
    hop = HopModel(a, b).build(DataflowPath(model_a="a", model_b="b", hops=[
        Hop(model="a", layer=0), Hop(model="b", layer=1, scale=1.3), Hop(model="a", layer=1, scale=0.7),
        Hop(model="b", layer=1), Hop(model="a", layer=3)]))
    assert Engine(hop, max_batch=3).generate(PROMPTS, 10) == [hf_greedy(hop, p, 10) for p in PROMPTS]

    def recipe(w):
        return recipe_from_dict({"merge_method": "linear", "models": [
            {"model": str(family["ja"]), "parameters": {"weight": w}},
            {"model": str(family["math"]), "parameters": {"weight": 1 - w}}], "dtype": "float32"})

    with ModelPool() as pool:
        live = LiveMerge(recipe(0.5), pool, "cpu")
        engine = Engine(live.model, max_batch=4)
        outs = []
        for w in (0.0, 1.0):  # the engine reads the weights at call time: in-place merges are seen
            live.apply(recipe(w))
            outs.append(engine.generate(PROMPTS, 10))
            assert outs[-1] == [hf_greedy(live.model, p, 10) for p in PROMPTS]
        assert outs[0] != outs[1]


def test_unsupported_models_fall_back_or_refuse(tiny_models):
    from transformers import GPT2Config, GPT2LMHeadModel

    from evomerge.core.errors import UserError
    from evomerge.generation.greedy import use_engine

    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=64)).eval()
    assert supports(gpt2) is not None and not use_engine(gpt2, "auto")
    with pytest.raises(UserError, match="engine: fast"):
        use_engine(gpt2, "fast")
    assert not use_engine(tiny_models["llama"], "auto")  # CPU: the plain path unless asked
    assert use_engine(tiny_models["llama"], "fast")


HEADER = [1, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22]  # an instruction every prompt starts with


@pytest.mark.parametrize("arch", ["llama", "mistral", "qwen2"])
@pytest.mark.parametrize("max_batch", [8, 3])
def test_a_shared_prompt_prefix_is_computed_once_and_changes_nothing(tiny_models, arch, max_batch):
    model = tiny_models[arch]
    prompts = [HEADER + tail for tail in ([5, 9], [7], [3, 4, 5, 6, 7, 8], [40, 41, 42], [33])]
    engine = Engine(model, max_batch=max_batch, sync_every=3)
    ours = engine.generate(prompts, 10)
    assert engine.stats["shared_prefix"] == len(HEADER)
    assert ours == [hf_greedy(model, p, 10) for p in prompts]
    engine.generate([HEADER + [5], [1, 2, 3]], 4)  # no common prefix worth sharing: nothing shared
    assert engine.stats["shared_prefix"] == 0


def test_the_smollm2_mgsm_header_is_shared(smollm2):
    """The ja-alpaca-cot instruction is about half of every MGSM-JA prompt: computed once per candidate."""
    from evomerge.evaluators.mgsm_ja import JA_ALPACA_COT
    from evomerge.generation.greedy import engine_for

    model, tok = smollm2
    prompts = [JA_ALPACA_COT.format(question=q) for q in ("りんごが3個あります。2個食べました。残りは？",
                                                          "7たす5は？", "12 × 3 はいくつですか。")]
    kw = dict(max_new_tokens=16, stop=["### 指示"], batch_size=3)
    fast = greedy_generate(model, tok, prompts, engine="fast", **kw)
    assert fast == greedy_generate(model, tok, prompts, engine="hf", **kw)
    shared = engine_for(model, 3).stats["shared_prefix"]
    assert shared >= 0.4 * min(len(tok(p).input_ids) for p in prompts)


ENGINE_FAMILIES = ["qwen3", "phi3", "mixtral", "qwen2_moe", "qwen3_moe", "gemma2", "gemma3_text", "starcoder2",
                   "stablelm"]
FALLBACK_FAMILIES = ["gpt2", "gpt_neox"]


@pytest.fixture(scope="module")
def family_models(tmp_path_factory):
    """One tiny model of each family beyond the Llama-likes, loaded from its saved folder as users load it."""
    from transformers import AutoModelForCausalLM

    from families import build_family

    root = tmp_path_factory.mktemp("engine-families")
    return {arch: AutoModelForCausalLM.from_pretrained(str(build_family(root / arch, arch, n_tunes=0)["base"]),
                                                       dtype=torch.float32).eval()
            for arch in ENGINE_FAMILIES + FALLBACK_FAMILIES}


@pytest.mark.parametrize("arch", ENGINE_FAMILIES)
def test_the_engine_equals_plain_greedy_on_qwen3_phi3_and_mixtures_of_experts(family_models, arch):
    model = family_models[arch]
    assert supports(model, max_len=64) is None  # Gemma's sliding window is no wider than that
    ours = Engine(model, max_batch=3, sync_every=4).generate(PROMPTS, 10)
    assert ours == [hf_greedy(model, p, 10) for p in PROMPTS]


@pytest.mark.parametrize("arch", FALLBACK_FAMILIES)
def test_other_families_fall_back_to_generate_saying_so_once(family_models, arch, capsys, monkeypatch):
    from evomerge.generation import greedy

    model = family_models[arch]
    assert supports(model) is not None
    monkeypatch.setattr(greedy, "_on_gpu", lambda m: True)  # where `auto` would take the engine
    assert not greedy.use_engine(model, "auto") and not greedy.use_engine(model, "auto")
    err = capsys.readouterr().err
    assert err.count("cannot run this model") == 1 and "transformers' generate" in err


def test_the_engine_equals_plain_greedy_on_a_phi_with_partial_rotary():
    """Phi-4-mini rotates only part of each head (partial_rotary_factor): the model's own rotary function runs."""
    import transformers as tf

    from families import COMMON

    torch.manual_seed(0)
    model = tf.AutoModelForCausalLM.from_config(tf.Phi3Config(**COMMON, partial_rotary_factor=0.5)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.2)
    assert supports(model) is None
    assert Engine(model, max_batch=3, sync_every=4).generate(PROMPTS, 10) == [hf_greedy(model, p, 10) for p in PROMPTS]


@pytest.mark.parametrize("arch", ["gemma2", "gemma3_text"])
def test_the_engine_equals_plain_greedy_on_gemma_local_and_global_layers(arch):
    """Gemma 2 (soft-capped attention scores and logits) and Gemma 3 (local and global layers rotating with
    different bases) with both kinds of layer, a shared prompt prefix, and rows that finish at different steps.
    The settings make each of these matter here: without the attention cap, the logit cap's tie-breaking, or
    Gemma 3's second base, the engine's tokens differ from `generate`'s (checked when the test was written)."""
    import transformers as tf

    from families import COMMON

    kinds = ["sliding_attention", "full_attention", "sliding_attention"]
    if arch == "gemma2":  # caps low enough to bite on a tiny model (the real ones: 50 and 30)
        config = tf.Gemma2Config(**COMMON, head_dim=8, layer_types=kinds, sliding_window=128, query_pre_attn_scalar=8,
                                 attn_logit_softcapping=3.0, final_logit_softcapping=0.5)
    else:  # bases far enough apart that a layer rotated with the other one answers differently
        config = tf.Gemma3TextConfig(**COMMON, head_dim=8, layer_types=kinds, sliding_window=128, rope_parameters={
            "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
            "full_attention": {"rope_type": "default", "rope_theta": 3.0}})
    torch.manual_seed(1)
    model = tf.AutoModelForCausalLM.from_config(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3 if arch == "gemma2" else 0.2)
    assert supports(model, max_len=128) is None and supports(model, max_len=129) is not None
    header = [1, 9, 8, 7, 6, 5, 4, 3, 2, 11]  # longer than the engine's shared-prefix threshold
    prompts = [header + p for p in PROMPTS]
    engine = Engine(model, max_batch=2, sync_every=3)
    budgets = [12, 5, 9, 7, 3, 10, 6]
    assert engine.generate(prompts, budgets) == [hf_greedy(model, p, n) for p, n in zip(prompts, budgets)]
    assert engine.stats["shared_prefix"] == len(header) + 1  # and every prompt's own first token


@pytest.mark.parametrize("qk_norm_and_parallel", [False, True])
def test_the_engine_equals_plain_greedy_on_stablelm_2(qk_norm_and_parallel):
    """StableLM 2: a quarter of each head rotated (split off in its attention, not in its rotary function), and,
    as in its 12B model, LayerNorms per head on queries and keys and attention beside the MLP (parallel residual)."""
    import transformers as tf

    from families import COMMON

    config = tf.StableLmConfig(**COMMON, qk_layernorm=qk_norm_and_parallel,
                               use_parallel_residual=qk_norm_and_parallel)
    torch.manual_seed(2)
    model = tf.AutoModelForCausalLM.from_config(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.2)
    assert model.model.layers[0].self_attn.rotary_ndims < config.hidden_size // config.num_attention_heads
    assert supports(model, max_len=64) is None
    assert Engine(model, max_batch=3, sync_every=4).generate(PROMPTS, 10) == [hf_greedy(model, p, 10) for p in PROMPTS]

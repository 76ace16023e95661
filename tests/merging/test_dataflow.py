"""Data-flow (layer path) models: exact identity, a hand-written reference forward, per-hop KV cache, export."""

from __future__ import annotations

import pytest
import torch

from evomerge.merging.dataflow import DataflowPath, Hop, export_dataflow
from evomerge.runtime.dataflow import HopModel


@pytest.fixture(scope="module")
def models(family):
    from transformers import AutoModelForCausalLM

    a = AutoModelForCausalLM.from_pretrained(str(family["ja"]), dtype=torch.float32).eval()
    b = AutoModelForCausalLM.from_pretrained(str(family["math"]), dtype=torch.float32).eval()
    return a, b


def path_of(family, hops):
    return DataflowPath(model_a=str(family["ja"]), model_b=str(family["math"]),
                        hops=[Hop(model=m, layer=i, scale=s) for m, i, s in hops])


IDS = torch.tensor([[1, 5, 9, 13, 17, 21, 4]])
MIXED = [("a", 0, 1.0), ("a", 1, 1.0), ("b", 1, 0.8), ("b", 2, 1.3), ("a", 1, 0.9), ("b", 1, 1.1), ("a", 3, 1.0)]


def reference_forward(a, b, path, ids):
    """The path written out by hand: embed, each layer on its scaled input with a causal mask, norm, head."""
    inner = a.model
    h = inner.embed_tokens(ids)
    n = ids.shape[1]
    pos = torch.arange(n)[None]
    pe = inner.rotary_emb(h, pos)
    mask = torch.full((n, n), float("-inf")).triu(1)[None, None]
    for hop in path.hops:
        layer = (a if hop.model == "a" else b).model.layers[hop.layer]
        h = layer(h * hop.scale, attention_mask=mask, position_embeddings=pe, position_ids=pos)
    return a.lm_head(inner.norm(h))


def test_identity_path_reproduces_model_a_exactly(family, models):
    a, b = models
    path = path_of(family, [("a", i, 1.0) for i in range(4)])
    hop = HopModel(a, b).build(path)
    with torch.no_grad():
        assert torch.equal(hop(IDS).logits, a(IDS).logits)
        ga = a.generate(IDS, max_new_tokens=6, do_sample=False, pad_token_id=0)
        assert torch.equal(hop.generate(IDS, max_new_tokens=6, do_sample=False, pad_token_id=0), ga)


def test_repeated_layers_and_scales_match_reference(family, models):
    a, b = models
    path = path_of(family, MIXED)
    with torch.no_grad():
        ours = HopModel(a, b).build(path)(IDS).logits
        ref = reference_forward(a, b, path, IDS)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(ours, a(IDS).logits, atol=1e-3)  # the path really changes the function


def test_each_hop_has_its_own_cache_slot(family, models):
    """Cached decoding equals recomputing the whole sequence at every step, with layers used twice."""
    a, b = models
    hop = HopModel(a, b).build(path_of(family, MIXED))
    with torch.no_grad():
        cached = hop.generate(IDS, max_new_tokens=8, do_sample=False, pad_token_id=0)
        uncached = hop.generate(IDS, max_new_tokens=8, do_sample=False, pad_token_id=0, use_cache=False)
    assert torch.equal(cached, uncached)


def test_layers_are_shared_not_copied(family, models):
    a, b = models
    hop = HopModel(a, b).build(path_of(family, MIXED))
    assert hop.model.layers[1].layer is a.model.layers[1] and hop.model.layers[4].layer is a.model.layers[1]
    assert hop.model.embed_tokens is a.model.embed_tokens
    assert a.model.layers[1].self_attn.layer_idx == 1  # restored after use


@pytest.mark.parametrize("scaled", [False, True], ids=["plain", "scaled"])
def test_export_reload_gives_identical_logits_and_generations(family, models, tmp_path, scaled):
    from transformers import AutoModelForCausalLM

    a, b = models
    hops = MIXED if scaled else [(m, i, 1.0) for m, i, _ in MIXED]
    path = path_of(family, hops)
    out = tmp_path / "dfs"
    export_dataflow(path, out, progress=False)
    files = {p.name for p in out.iterdir()}
    assert ("modeling_evomerge_dataflow.py" in files) == scaled
    reloaded = AutoModelForCausalLM.from_pretrained(str(out), trust_remote_code=scaled, dtype=torch.float32).eval()
    assert reloaded.config.num_hidden_layers == len(hops)
    hop = HopModel(a, b).build(path)
    with torch.no_grad():
        assert torch.equal(reloaded(IDS).logits, hop(IDS).logits)
        kw = dict(max_new_tokens=8, do_sample=False, pad_token_id=0)
        assert torch.equal(reloaded.generate(IDS, **kw), hop.generate(IDS, **kw))
    assert DataflowPath.from_yaml((out / "evomerge_dataflow.yaml").read_text()) == path


def test_path_must_start_and_end_in_a(family):
    with pytest.raises(ValueError, match="model A"):
        path_of(family, [("b", 0, 1.0), ("a", 1, 1.0)])

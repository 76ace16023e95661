"""Perplexity over documents: each blank-line-separated document is an item, so subset fitness can estimate the
set's score; the set's number is the token-weighted mean log-likelihood, whichever way it was scored."""

from __future__ import annotations

import math

import pytest
import torch

from evomerge.core.errors import UserError
from evomerge.evaluators.perplexity import Perplexity, PerplexityOptions
from evomerge.search.config import search_config_from_dict
from evomerge.search.records.store import RunStore
from helpers import make_config, search

DOCS = ["w1 w2 w3 w4 w5 w6", "w7 w8", "w9 w10 w11 w12 w13 w14 w15 w16 w17 w18 w19 w20", "w3 w1", "w5 w6 w7",
        "w30 w31 w32 w33", "w40 w41 w42", "w2 w4 w6 w8 w10"]


@pytest.fixture
def text(tmp_path):
    path = tmp_path / "docs.txt"
    path.write_text("\n\n".join(DOCS) + "\n\n\n")
    return path


def load(folder):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return (AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval(),
            AutoTokenizer.from_pretrained(str(folder)))


def test_documents_are_scored_alone_and_weighted_by_their_tokens(family, text):
    model, tok = load(family["math"])
    ev = Perplexity(PerplexityOptions(data=str(text), unit="documents", max_length=8, batch_size=3))
    assert ev.num_items() == len(DOCS) and ev.scores_items("neg_log_perplexity")
    assert not ev.scores_items("perplexity") and ev.item_range is None
    metrics = ev.evaluate(model, tok)
    nll = count = 0.0
    for doc in DOCS:  # by hand: each document's windows of 8 tokens, one at a time
        ids = tok(doc, return_tensors="pt").input_ids[0]
        for i in range(0, len(ids) - 1, 8):
            w = ids[i:i + 8]
            if len(w) > 1:
                with torch.no_grad():
                    loss = model(input_ids=w[None], labels=w[None]).loss.item()
                nll += loss * (len(w) - 1)
                count += len(w) - 1
    assert metrics["neg_log_perplexity"] == pytest.approx(-nll / count, rel=1e-5)
    assert metrics["perplexity"] == pytest.approx(math.exp(nll / count), rel=1e-5)
    values = ev.last_item_values("neg_log_perplexity")
    chunks = [[5, 2, 7], [0, 3], [1, 6, 4]]
    items = {i: v for c in chunks for i, v in zip(c, ev.score_items(model, tok, c))}
    assert [items[i]["neg_log_perplexity"] for i in range(len(DOCS))] == pytest.approx(values, rel=1e-5)
    rebuilt = ev.aggregate_items([items[i] for i in range(len(DOCS))])
    assert rebuilt["neg_log_perplexity"] == pytest.approx(metrics["neg_log_perplexity"], rel=1e-6)
    assert Perplexity(PerplexityOptions(data=str(text), unit="documents", max_documents=3)).num_items() == 3


def test_the_windows_unit_is_unchanged_and_not_an_item_set(family, text):
    model, tok = load(family["math"])
    ev = Perplexity(PerplexityOptions(data=str(text), max_length=8))
    assert not ev.scores_items("neg_log_perplexity")
    whole = tok(text.read_text(), return_tensors="pt").input_ids[0]
    nll = count = 0.0
    for i in range(0, len(whole) - 1, 8):
        w = whole[i:i + 8]
        if len(w) > 1:
            with torch.no_grad():
                nll += model(input_ids=w[None], labels=w[None]).loss.item() * (len(w) - 1)
            count += len(w) - 1
    assert ev.evaluate(model, tok)["neg_log_perplexity"] == pytest.approx(-nll / count, rel=1e-5)


def perplexity_config(family, target, text, **extra):
    cfg = make_config(family, target, budget=12)
    cfg["fitness"] = [{"name": "perplexity", "data": str(text), "max_length": 8, "unit": "documents"}]
    cfg.update(extra)
    return cfg


def test_racing_needs_a_bounded_item_and_subset_fitness_does_not(family, target, text, tmp_path):
    with pytest.raises(UserError, match="known range"):
        search(perplexity_config(family, target, text, racing={}), tmp_path / "r")
    cfg = perplexity_config(family, target, text, subset={"items": 3})
    cfg["fitness"][0]["unit"] = "windows"
    with pytest.raises(UserError, match="one by one"):
        search(cfg, tmp_path / "w")
    bad = perplexity_config(family, target, text)
    bad["fitness"][0]["max_tokens"] = 100
    with pytest.raises(UserError, match="max_documents"):
        search_config_from_dict(bad, "t")
    assert not (tmp_path / "r").exists() and not (tmp_path / "w").exists()


def test_a_subset_search_on_perplexity_documents(family, target, text, tmp_path):
    search(perplexity_config(family, target, text, subset={"items": 3}), tmp_path / "run")
    with RunStore(tmp_path / "run") as store:
        done = store.trials()
        assert any(t.status == "estimated" and t.items_used == 3 for t in done)
        checked = [t for t in done if t.estimate is not None]
        assert checked and all(t.items_used == len(DOCS) and t.status == "complete" for t in checked)
        best = store.result()
        assert best.status == "complete" and best.fitness < 0  # a full-set negative log-perplexity


def test_a_perplexity_run_replays_subset_settings_but_not_racing(family, target, text, tmp_path, capsys):
    from helpers import cli

    search(perplexity_config(family, target, text), tmp_path / "run")
    assert cli("replay", tmp_path / "run", "--subset", "items=3") == 0
    capsys.readouterr()
    assert cli("replay", tmp_path / "run", "--racing", "chunk=2") == 2
    assert "known range" in capsys.readouterr().err

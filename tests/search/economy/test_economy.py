"""What a search spends is counted and kept (tokens, seconds), and no candidate is scored twice."""

from __future__ import annotations

import json

import torch

from helpers import cli, dfs_config, search, trials, write


def test_generated_and_prompt_tokens_are_counted_on_both_paths(family):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from evomerge.generation.greedy import TokenCount, greedy_generate

    model = AutoModelForCausalLM.from_pretrained(str(family["ja"]), dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(str(family["ja"]))
    prompts = ["w3 w4 w5", "w7", "w9 w10 w11 w12 w13"]
    counts = {}
    for engine in ("fast", "hf"):
        counts[engine] = TokenCount()
        greedy_generate(model, tok, prompts, 6, [], batch_size=2, engine=engine, count=counts[engine])
    assert counts["fast"] == counts["hf"]
    assert counts["hf"].prompt == sum(len(tok(p).input_ids) for p in prompts)
    assert 0 < counts["hf"].generated <= 3 * 6


def test_a_search_keeps_what_each_trial_spent(family, tmp_path, capsys):
    rows = [{"question": f"w{i} w{i + 1}", "answer_number": i} for i in range(3, 7)]
    data = write(tmp_path / "p.jsonl", "\n".join(json.dumps(r) for r in rows))
    cfg = {"merge": {"merge_method": "linear", "models": [{"model": str(family["ja"])}, {"model": str(family["math"])}]},
           "genome": {"parameters": ["weight"]}, "optimizer": {"name": "cma", "seed": 1, "popsize": 3},
           "budget": {"max_trials": 3}, "device": "cpu",
           "fitness": [{"name": "mgsm_ja", "data": str(data), "prompt": "{question}", "max_new_tokens": 5,
                        "metric": "acc"}]}
    search(cfg, tmp_path / "run")
    from evomerge.search.records.store import RunStore

    with RunStore(tmp_path / "run") as store:
        done = store.trials("complete")
        assert all(t.prompt_tokens > 0 and 0 < t.generated_tokens <= 4 * 5 for t in done)
        assert all(t.scores["mgsm_ja"]["generated_tokens"] == t.generated_tokens for t in done)
        spent = store.spent()
    assert spent["generated_tokens"] == sum(t.generated_tokens for t in done)
    assert cli("status", tmp_path / "run") == 0
    assert f"{spent['generated_tokens']} generated tokens" in capsys.readouterr().out


def test_a_candidate_scored_before_is_not_scored_again(family, other, target_logits, tmp_path):
    """Data-flow genes are thresholds: many gene vectors give the same path. Each distinct path is scored once;
    repeats take the earlier result, and the run is the same as if they had been scored."""
    from evomerge.search.records.store import RunStore

    calls = tmp_path / "calls"
    cfg = dfs_config(family, target_logits, other, budget=24, optimizer={"name": "cma", "seed": 2, "popsize": 8,
                                                                        "sigma0": 0.05})
    cfg["fitness"][0]["name"] = "fitness_fixtures:CountingLogitsTarget"
    cfg["fitness"][0]["calls_file"] = str(calls)
    search(cfg, tmp_path / "run")
    with RunStore(tmp_path / "run") as store:
        done = store.trials("complete")
        repeats = [t for t in done if t.duplicate_of is not None]
        assert repeats, "the test needs repeated paths"
        for t in repeats:
            twin = store.trial(t.duplicate_of)
            assert t.recipe == twin.recipe and t.fitness == twin.fitness and twin.duplicate_of is None
            assert t.eval_s == 0 and t.generated_tokens == 0
        assert store.spent()["duplicates"] == len(repeats)
    assert int(calls.read_text()) == len(done) - len(repeats)  # the evaluator ran once per distinct path
    search(dict(cfg, budget={"max_trials": 32}), tmp_path / "run", resume=True)  # resume replays them exactly
    search(dict(cfg, budget={"max_trials": 32}), tmp_path / "straight")
    assert trials(tmp_path / "run") == trials(tmp_path / "straight") and len(trials(tmp_path / "run")) == 32

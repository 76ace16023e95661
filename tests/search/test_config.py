"""Search configs: the fingerprint that guards resume stays what older versions recorded, so their runs resume."""

from __future__ import annotations

from evomerge.search.config import search_config_from_dict

PS = {"merge": {"merge_method": "dare_ties", "base_model": "org/base", "models": [{"model": "org/a"}, {"model": "org/b"}],
                "dtype": "bfloat16"},
      "genome": {"parameters": ["weight", "density"], "granularity": "layer_group", "group_size": 8},
      "optimizer": {"name": "cma", "seed": 1, "popsize": 12}, "budget": {"max_trials": 100},
      "fitness": [{"name": "mgsm_ja", "data": "x.jsonl", "metric": "acc_ja"}], "device": "cpu"}
DFS = {"dataflow": {"model_a": "org/a", "model_b": "org/b", "repeats": 2, "dtype": "bfloat16"},
       "optimizer": {"name": "cma", "seed": 2, "popsize": 8}, "fitness": [{"name": "perplexity", "data": "t.txt"}]}


def test_fingerprints_equal_those_recorded_by_the_previous_release():
    # computed by evomerge at f02dcd3 (before racing, subset and self_check existed)
    assert search_config_from_dict(PS, "t").fingerprint() == "4ec1ef61cef40690"
    assert search_config_from_dict(DFS, "t").fingerprint() == "5994325bfbc6ca5f"


def test_what_may_change_between_resumes_and_what_may_not():
    base = search_config_from_dict(PS, "t").fingerprint()
    same = [dict(PS, budget={"max_trials": 500}), dict(PS, self_check=False), dict(PS, executor={"name": "ray"}),
            dict(PS, dare_tables_gib=0)]
    assert all(search_config_from_dict(c, "t").fingerprint() == base for c in same)
    other = [dict(PS, racing={}), dict(PS, subset={"items": 8}), dict(PS, optimizer={"name": "cma", "seed": 2})]
    assert all(search_config_from_dict(c, "t").fingerprint() != base for c in other)


def test_dare_tables_memory_is_checked():
    import pytest

    from evomerge.core.errors import UserError

    with pytest.raises(UserError, match="dare_tables_gib"):
        search_config_from_dict(dict(PS, dare_tables_gib=-1), "t")

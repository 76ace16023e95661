"""Every config in search/ is valid; the genome of the paper's PS config is the paper's 6 genes."""

from __future__ import annotations

from pathlib import Path

import pytest

from evomerge.search.config import load_search_config

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "evomerge" / "configs" / "search").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_is_valid(path):
    cfg = load_search_config(path)
    assert cfg.fitness and cfg.budget.max_trials >= 1


def test_paper_ps_config_matches_the_paper():
    cfg = load_search_config(Path(__file__).resolve().parents[2] / "evomerge" / "configs" / "search" / "evollm-jp-v1-7b-ps.yaml")
    template = cfg.template()
    assert template.merge_method == "dare_ties" and template.base_model == "mistralai/Mistral-7B-v0.1"
    assert len(template.models) == 3 and cfg.genome.parameters == ["weight", "density"]
    assert cfg.optimizer.name == "optuna" and cfg.optimizer.sampler == "cmaes"
    assert cfg.optimizer.sigma0 == pytest.approx(1 / 6) and cfg.optimizer.x0 == 0.5
    assert cfg.optimizer.population(6) == 9 and cfg.budget.max_trials == 1000

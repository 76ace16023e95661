"""Every recipe in recipes/ is valid; the ones that need no hub run end to end."""

from __future__ import annotations

from pathlib import Path

import pytest

from evomerge.merging.recipe import load_recipe
from helpers import cli

RECIPES = sorted((Path(__file__).parent.parent / "recipes").glob("*.yaml"))


def offline(path: Path) -> bool:
    return all(m.startswith("builtin:") for m in load_recipe(path).referenced_models())


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_recipe_is_valid(path):
    recipe = load_recipe(path)
    assert recipe.referenced_models()


def builds_specialists(path: Path) -> bool:
    """A recipe naming the miniature's specialists: their (quick) first build trains for minutes on a cold cache."""
    from evomerge.miniature.builtins import SLOW_BUILTINS

    names = set(SLOW_BUILTINS) | set(SLOW_BUILTINS.values())
    return any(m.removeprefix("builtin:") in names for m in load_recipe(path).referenced_models())


@pytest.mark.parametrize("path", [pytest.param(p, marks=[pytest.mark.slow] if builds_specialists(p) else [])
                                  for p in RECIPES if offline(p)], ids=lambda p: p.name)
def test_offline_recipe_runs(path, tmp_path, monkeypatch):
    """End to end through `evomerge merge`; builtins that take minutes to build run with their quick stand-ins
    (same architecture; the slow builds have their own test in test_specialists.py)."""
    from transformers import AutoModelForCausalLM

    from evomerge.core import assets
    from evomerge.core.errors import UserError
    from evomerge.miniature import builtins

    try:
        assets.smollm2_gguf()
    except UserError as e:
        pytest.skip(str(e))
    for slow, quick in builtins.SLOW_BUILTINS.items():
        monkeypatch.setitem(builtins.BUILTINS, slow, builtins.BUILTINS[quick])
    assert cli("merge", path, tmp_path / "out", "--quiet") == 0
    AutoModelForCausalLM.from_pretrained(str(tmp_path / "out"))


def test_there_are_offline_recipes():
    assert any(offline(p) for p in RECIPES)

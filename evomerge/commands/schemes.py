"""The package's own model-reference schemes, wired from the top layer: `builtin:NAME` (the offline miniature's
models) and `run:DIR[@TRIAL]` (a search's best or any trial, exported on first use).

core/references.py keeps the registry and knows no scheme. The resolvers live in the layers that own them
(miniature/, search/); this module, above both, registers a small function for each that imports its owner on
first use: opening a plain model folder loads neither the miniature nor the search, and the import graph shows
every arrow (evomerge/__init__.py calls `register_schemes` once, so library users get the schemes too)."""

from __future__ import annotations

from pathlib import Path

from evomerge.core.references import register_scheme


def builtin_model(name: str) -> Path:
    from evomerge.miniature.builtins import builtin_model as resolve

    return resolve(name)


def run_model(rest: str) -> Path:
    from evomerge.search.records.results import run_best_model

    return run_best_model(rest)


def register_schemes() -> None:
    register_scheme("builtin", builtin_model)
    register_scheme("run", run_model)

"""The corpus of broken inputs: every way of breaking a search config or a run folder that the tests check.

Add a case here and tests/test_reliability.py runs it. A config case is (id, change, expected): `change(cfg, ctx)`
breaks a working search config in place (`ctx` has the tiny model family, a scratch folder and a model of another
shape); the command must exit 2 with one line containing `expected`, no traceback, and no run folder left behind.
A run-folder case is (id, damage): `damage(path)` spoils run.sqlite in place.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable


def _set(path: str, value: Any) -> Callable[[dict, Any], None]:
    """A change that sets cfg[a][b]... = value (integers index lists)."""
    keys = [int(k) if k.isdigit() else k for k in path.split(".")]

    def change(cfg: dict, ctx: Any) -> None:
        node = cfg
        for k in keys[:-1]:
            node = node[k]
        node[keys[-1]] = value(ctx) if callable(value) else value

    return change


def _dataflow_with_other_shapes(cfg: dict, ctx: Any) -> None:
    cfg.pop("merge")
    cfg.pop("genome")
    cfg["dataflow"] = {"model_a": str(ctx.family["ja"]), "model_b": str(ctx.wide), "repeats": 1}


def _multi_objective(**bounds: float) -> Callable[[dict, Any], None]:
    def change(cfg: dict, ctx: Any) -> None:
        cfg["optimizer"]["name"] = "nsga2"
        cfg["fitness"].append(dict(cfg["fitness"][0], name="perplexity", max_length=16))
        cfg["constraints"] = [{"evaluator": "perplexity", "metric": "perplexity", **bounds}]

    return change


def _text(ctx: Any, name: str, content: str) -> str:
    path = ctx.tmp / name
    path.write_text(content)
    return str(path)


def _documents_with(extra: dict) -> Callable[[dict, Any], None]:
    """Perplexity over 6 documents, scored one by one (an evaluator with items), plus `extra` (`fitness: None`:
    a 7th document of one word)."""

    def change(cfg: dict, ctx: Any) -> None:
        docs = ["\n\n".join(" ".join(f"w{(i * j) % 61}" for i in range(40)) for j in range(1, 7))]
        if "fitness" in extra:
            docs.append("w5")
        path = _text(ctx, "docs.txt", "\n\n".join(docs))
        cfg["fitness"] = [{"name": "perplexity", "data": path, "unit": "documents", "max_length": 32}]
        cfg.update({k: v for k, v in extra.items() if k != "fitness"})

    return change


def _with_missing_model(extra: dict) -> Callable[[dict, Any], None]:
    def change(cfg: dict, ctx: Any) -> None:
        cfg["merge"]["models"][0]["model"] = str(ctx.tmp / "no-such-model")
        cfg.update(extra)

    return change


SEARCH_CONFIGS: list[tuple[str, Callable[[dict, Any], None], str]] = [
    # rejected while reading the config
    ("unknown-evaluator", _set("fitness.0.name", "nope"), "unknown evaluator"),
    ("metric-the-evaluator-lacks", _set("fitness.0.metric", "accuracy"), "fitness[0].metric"),
    ("param-the-method-lacks", _set("genome.parameters", ["weight", "nonsense"]), "nonsense"),
    ("empty-genome", _set("genome.parameters", []), "genome.parameters"),
    ("x0-outside-box", _set("optimizer.x0", 5.0), "optimizer.x0"),
    ("x0-per-gene-outside-box", _set("optimizer.x0", {"ja.weight": -1.0}), "x0 for ja.weight"),
    ("optimizer-name", _set("optimizer.name", "sgd"), "optimizer.name"),
    ("zero-budget", _set("budget", {"max_trials": 0}), "max_trials"),
    ("no-fitness", _set("fitness", []), "fitness"),
    ("merge-method", _set("merge.merge_method", "nonsense"), "unknown merge method"),
    ("reversed-bounds", _set("genome", {"parameters": ["weight"], "bounds": {"weight": [1, 0]}}), "bounds"),
    ("unknown-key", _set("extra_key", 1), "extra_key"),
    ("device-banana", _set("device", "banana"), "not a device"),
    ("device-missing-gpu", _set("device", "cuda:0"), "no CUDA GPU"),
    ("dataflow-dtype", lambda c, ctx: (_dataflow_with_other_shapes(c, ctx), c["dataflow"].update(dtype="fp8")),
     "dataflow.dtype"),
    # rejected once the models or data are opened, still before the run folder is made
    ("missing-source", _set("merge.models.0.model", lambda ctx: str(ctx.tmp / "no-such-model")), "model not found"),
    ("missing-fitness-data", _set("fitness.0.data", lambda ctx: str(ctx.tmp / "no-such.txt")), "no such text file"),
    ("x0-unknown-gene", _set("optimizer.x0", {"nope.weight": 0.5}), "x0 names unknown genes"),
    ("genome-selects-no-model", _set("genome.models", []), "genome.models"),
    ("genome-names-another-model", _set("genome.models", ["org/other"]), "is not one of merge.models"),
    ("dataflow-other-shapes", _dataflow_with_other_shapes, "different layer shapes"),
    # settings that can never work
    ("constraint-min-above-max", _multi_objective(min=10.0, max=5.0), "is above max"),
    ("subset-as-large-as-the-fitness-set", _documents_with({"subset": {"items": 6}}), "subset.items (6) must be below"),
    # what needs no model is refused before any model is opened (the source here is missing as well)
    ("racing-needs-items-before-models", _with_missing_model({"racing": {}}), "racing needs"),
    ("subset-needs-items-before-models", _with_missing_model({"subset": {}}), "subset needs"),
    # data that scores nothing: refused at the first candidate (the tokenizer is the model's), and the new run
    # leaves nothing behind
    ("text-that-tokenizes-to-nothing", _set("fitness.0.data", lambda ctx: _text(ctx, "one.txt", "w1")),
     "gives no token to predict"),
    ("a-document-that-tokenizes-to-nothing", _documents_with({"fitness": None}), "document 7"),
]

# `run:` model references that do not resolve: (id, reference(ctx), expected). ctx.run is a finished run folder
# (a copy), ctx.tmp a scratch folder. Refused in one line, naming the reference once, creating nothing.
RUN_REFERENCES: list[tuple[str, Callable[[Any], str], str]] = [
    ("run-folder-missing", lambda ctx: f"run:{ctx.tmp / 'no-run'}@3", "not a run folder"),
    ("trial-missing", lambda ctx: f"run:{ctx.run}@999", "trial 999 is not a completed trial"),
    ("trial-not-a-number", lambda ctx: f"run:{ctx.run}@best", "after @ comes a trial id"),
    ("best-of-a-missing-run", lambda ctx: f"run:{ctx.tmp / 'no-run'}", "not a run folder"),
]

# `evomerge replay` settings outside the limits of the search config's racing/subset sections: (id, args, expected)
REPLAY_SETTINGS: list[tuple[str, list[str], str]] = [
    ("chunk-zero", ["--racing", "chunk=0"], "chunk"),
    ("chunk-negative", ["--racing", "chunk=-2"], "chunk"),
    ("confidence-above-one", ["--racing", "confidence=1.5"], "confidence"),
    ("confidence-zero", ["--racing", "confidence=0.0"], "confidence"),
    ("min-items-zero", ["--racing", "min_items=0"], "min_items"),
    ("subset-items-zero", ["--subset", "items=0"], "items"),
    ("subset-first-random-two", ["--subset", "first_random=2"], "first_random"),
]

# lines of an `eval --samples` file that `evomerge compare` cannot pair: (id, line, expected)
COMPARE_LINES: list[tuple[str, str, str]] = [
    ("metric-is-a-string", '{"question": "q", "acc": "yes"}', "not a finite number"),
    ("metric-is-null", '{"question": "q", "acc": null}', "not a finite number"),
    ("metric-is-nan", '{"question": "q", "acc": NaN}', "not a finite number"),
    ("row-is-a-list", "[1, 2]", "not an object"),
    ("row-is-a-number", "3", "not an object"),
    ("metric-missing", '{"question": "q", "other": 1}', "has no 'acc'"),
]


def _random_bytes(path: Path) -> None:
    path.write_bytes(os.urandom(path.stat().st_size))


def _truncated(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _zero_bytes(path: Path) -> None:
    path.write_bytes(b"")


def _torn_page(path: Path) -> None:
    """The last page overwritten with noise: the header and the first pages still read."""
    data = bytearray(path.read_bytes())
    data[-4096:] = os.urandom(4096)
    path.write_bytes(bytes(data))


def _not_a_run(path: Path) -> None:
    import sqlite3

    path.unlink()
    db = sqlite3.connect(str(path))
    db.execute("CREATE TABLE other (x)")
    db.commit()
    db.close()


RUN_DATABASES: list[tuple[str, Callable[[Path], None], str]] = [
    ("random-bytes", _random_bytes, "damaged"),
    ("truncated", _truncated, "run.sqlite"),
    ("zero-bytes", _zero_bytes, "empty (0 bytes)"),
    ("torn-last-page", _torn_page, "run.sqlite"),
    ("another-database", _not_a_run, "holds no evomerge run"),
]

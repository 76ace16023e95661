"""Fitness evaluators: a registry of built-ins, plus `module:Class` import paths for your own.

A fitness is a weighted sum of one metric from each configured evaluator; all metrics are higher-is-better.
"""

from __future__ import annotations

import importlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from evomerge.core.errors import UserError
from evomerge.evaluators.base import Evaluator, Options
from evomerge.evaluators.lm_eval_task import LmEval
from evomerge.evaluators.mgsm_ja import MgsmJa
from evomerge.evaluators.perplexity import Perplexity
from evomerge.evaluators.vqa import JaVgVqa, JaVlmWild

BUILTIN: dict[str, type[Evaluator]] = {e.name: e for e in (MgsmJa, Perplexity, LmEval, JaVgVqa, JaVlmWild)}


def evaluator_class(name: str, where: str) -> type[Evaluator]:
    if name in BUILTIN:
        return BUILTIN[name]
    if ":" in name:
        module, _, attr = name.partition(":")
        try:
            cls = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as e:
            raise UserError(f"cannot import evaluator {name}: {e}", where) from None
        if not (isinstance(cls, type) and issubclass(cls, Evaluator)):
            raise UserError(f"{name} is not an evomerge Evaluator subclass", where)
        return cls
    raise UserError(f"unknown evaluator {name!r}; built-in: {', '.join(BUILTIN)}, or module:Class", where)


def _options(cls: type[Evaluator], cfg: Any, where: str) -> Options:
    from evomerge.core.config_files import first_pydantic_error

    try:
        return cls.Options.model_validate(cfg.options())
    except ValidationError as e:
        raise UserError(first_pydantic_error(e), where) from None


def check_evaluator_config(cfg: Any, where: str) -> None:
    """Validate an evaluator's name, options and metric without loading its data."""
    cls = evaluator_class(cfg.name, where)
    _options(cls, cfg, where)
    if cfg.metric is not None and cls.metrics is not None and cfg.metric not in cls.metrics:
        raise UserError(f"evaluator {cfg.name} has no metric {cfg.metric!r} (it gives: {', '.join(cls.metrics)})",
                        f"{where}.metric")


@dataclass
class Term:
    evaluator: Evaluator
    key: str  # the name scores are recorded under
    weight: float
    metric: str | None


class Fitness:
    """The configured evaluators; `score` runs them all and combines the chosen metrics."""

    def __init__(self, configs: list[Any], where: str = "fitness"):
        self.terms: list[Term] = []
        for i, cfg in enumerate(configs):
            loc = f"{where}[{i}]"
            cls = evaluator_class(cfg.name, loc)
            ev = cls(_options(cls, cfg, loc), loc)
            key = cfg.name if sum(c.name == cfg.name for c in configs) == 1 else f"{cfg.name}#{i}"
            self.terms.append(Term(ev, key, cfg.weight, cfg.metric or cls.default_metric or None))

    def score(self, model: Any, tokenizer: Any) -> tuple[float, dict[str, dict[str, float]]]:
        from evomerge.generation.greedy import TokenCount

        total, scores = 0.0, {}
        for term in self.terms:
            t0 = time.perf_counter()
            term.evaluator.tokens = TokenCount()
            metrics = term.evaluator.evaluate(model, tokenizer)
            metric = term.metric or next(iter(metrics))
            if metric not in metrics:
                raise UserError(f"evaluator {term.key} has no metric {metric!r} (it gives: {', '.join(metrics)})")
            metrics = dict(metrics, seconds=time.perf_counter() - t0)
            if term.evaluator.tokens.prompt or term.evaluator.tokens.generated:  # generative: what it spent
                metrics.update(prompt_tokens=term.evaluator.tokens.prompt,
                               generated_tokens=term.evaluator.tokens.generated)
            scores[term.key] = metrics
            total += term.weight * metrics[metric]
        return total, scores

    def item_record(self) -> dict | None:
        """After `score`: the racing term's item values from that evaluation, as the store keeps them."""
        term = self.racing_term()
        if term is None:
            return None
        values = term.evaluator.last_item_values(term.metric or term.evaluator.default_metric)
        return {"values": dict(enumerate(values)), "items": len(values), "total": len(values)} if values else None

    def racing_term(self, bounded: bool = False) -> Term | None:
        """The one term racing and subset fitness work on: a single evaluator, with a positive weight, whose metric
        follows from per-item values; `bounded`: whose items also have a known range (racing's bound)."""
        if len(self.terms) != 1:
            return None
        term = self.terms[0]
        ev = term.evaluator
        ok = term.weight > 0 and ev.scores_items(term.metric or ev.default_metric)
        return term if ok and (ev.item_range is not None or not bounded) else None

    def score_raced(self, model: Any, tokenizer: Any, cut: float | None, racing: Any = None
                    ) -> tuple[float, dict, dict]:
        """Score on the problems in `racing.seed`'s order, `racing.chunk` at a time, stopping when the upper
        confidence bound on the full-set fitness falls below `cut` (None: score them all; `racing` None: every
        problem in one pass). Returns (fitness, scores, race): race = {items, total, estimate, bound, raced,
        values}. A candidate that is not raced out is scored on every problem, and its fitness is the full-set
        mean."""
        from evomerge.evaluators.racing import Race
        from evomerge.generation.greedy import TokenCount

        term = self.racing_term()
        ev = term.evaluator
        n = ev.num_items()
        metric = term.metric or ev.default_metric
        race = Race.from_config(racing, n, ev.item_range, ev.binary_items, term.weight) if racing else None
        looks = race.looks() if race is not None else [list(range(n))]
        ev.tokens = TokenCount()
        t0 = time.perf_counter()
        items: dict[int, dict[str, float]] = {}
        bound, raced = None, False
        for idx in looks:
            items.update(zip(idx, ev.score_items(model, tokenizer, idx)))
            if race is not None:
                looked, raced = race.stop([v[metric] for v in items.values()], cut)
                bound = looked if looked is not None else bound  # the last bound computed is the one recorded
                if raced:
                    break
        value, scores = self._item_scores(term, items, t0)
        race = {"items": len(items), "total": n, "estimate": value, "bound": bound, "raced": raced,
                "values": {i: v[metric] for i, v in items.items()} if len(items) == n else None}
        return value, scores, race

    def score_subset(self, model: Any, tokenizer: Any, anchors: list[int], weights: list[float],
                     signal: str = "metric") -> tuple[float, dict, dict]:
        """Score the anchor problems only; the fitness is the weighted estimate of the full-set score, or with
        `signal: likelihood` the weighted mean log-probability of their references (nats per problem), with
        `signal: agreement` the weighted mean share of their tokens that are the candidate's greedy pick: the units
        of a ranking within a generation, not of the metric. Both are recorded either way."""
        from evomerge.generation.greedy import TokenCount

        term = self.racing_term()
        ev = term.evaluator
        metric = term.metric or ev.default_metric
        ev.tokens = TokenCount()
        t0 = time.perf_counter()
        if signal in ("likelihood", "agreement"):
            items = dict(zip(anchors, ev.reference_items(model, tokenizer, list(anchors))))
            logprob = sum(w * items[a]["logprob"] for a, w in zip(anchors, weights))
            agreement = sum(w * items[a]["agree"] / items[a]["tokens"] for a, w in zip(anchors, weights))
            value = term.weight * (logprob if signal == "likelihood" else agreement)
            scores = {term.key: {"ref_logprob": logprob, "ref_agreement": agreement,
                                 "ref_tokens": sum(v["tokens"] for v in items.values()),
                                 "items": len(items), "seconds": time.perf_counter() - t0,
                                 "prompt_tokens": ev.tokens.prompt, "generated_tokens": 0}}
            return value, scores, {"items": len(items), "total": ev.num_items(), "estimate": value, "bound": None,
                                   "raced": False, "estimated": True, "values": None}
        items = dict(zip(anchors, ev.score_items(model, tokenizer, list(anchors))))
        _, scores = self._item_scores(term, items, t0)
        value = term.weight * sum(w * items[a][metric] for a, w in zip(anchors, weights))
        scores[term.key][metric] = value / term.weight  # the estimate, in the metric's own units
        return value, scores, {"items": len(items), "total": ev.num_items(), "estimate": value, "bound": None,
                               "raced": False, "estimated": True, "values": None}

    def _item_scores(self, term: Term, items: dict[int, dict[str, float]], t0: float) -> tuple[float, dict]:
        ev = term.evaluator
        k = len(items)
        ordered = [items[i] for i in sorted(items)]  # in item order, as `evaluate` sums: the same number
        metrics = ev.aggregate_items(ordered)
        metrics.update(seconds=time.perf_counter() - t0, items=k)
        if ev.tokens.prompt or ev.tokens.generated:
            metrics.update(prompt_tokens=ev.tokens.prompt, generated_tokens=ev.tokens.generated)
        return term.weight * metrics[term.metric or ev.default_metric], {term.key: metrics}

    def check_generation(self, model: Any, tokenizer: Any) -> list[str]:
        """The self-check of the fast generation path: for each evaluator that generates with the engine here,
        the engine's answers on a few of its prompts against `generate`'s. An evaluator whose answers differ (or
        whose engine fails) falls back to `generate` for the rest of the run; returns one line per fallback."""
        from evomerge.generation.greedy import check_engine

        notes = []
        for term in self.terms:
            ev, opts = term.evaluator, term.evaluator.options
            if not hasattr(ev, "prompts") or getattr(opts, "engine", "hf") == "hf":
                continue
            why = check_engine(model, tokenizer, ev.prompts(tokenizer), opts.max_new_tokens, opts.stop, opts.engine)
            if why is not None:
                opts.engine = "hf"
                notes.append(f"{term.key}: {why}; generating with transformers' generate instead")
        return notes

    def data_fingerprints(self, section: str) -> dict[str, str]:
        """{section[i] evaluator: data hash} for every evaluator with data of its own (see Evaluator)."""
        out = {}
        for i, term in enumerate(self.terms):
            key = term.evaluator.data_fingerprint()
            if key is not None:
                out[f"{section}[{i}] {term.key}"] = key
        return out

    def samples(self) -> list[dict[str, Any]]:
        """Every evaluator's per-item records from the last `score`, each tagged with the evaluator's key."""
        return [{"evaluator": term.key, **rec} for term in self.terms for rec in term.evaluator.samples()]

    def write_samples(self, path: Path, keep_empty: bool = False) -> bool:
        """Write `samples()` as JSON lines, atomically; without any, write an empty file only if `keep_empty`."""
        import json

        rows = self.samples()
        if not rows and not keep_empty:
            return False
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
        tmp.replace(path)
        return True


__all__ = ["Evaluator", "Options", "Fitness", "BUILTIN", "check_evaluator_config", "evaluator_class"]

"""Replaying a recorded run under racing or subset settings: what they would have decided and saved.

A run whose trials were scored on every problem keeps each trial's item results (`item_values`). Replaying its
generations, in the order the trials ran, with a racing or subset setting gives, per generation, how many problems
each candidate would have used and whether the candidates CMA-ES recombines (the top half) would have been the
same, at the cost of reading the store: many settings can be compared on one full run. The generation-0 decisions
equal what a real run with the setting makes (same candidates, same problem order, same arithmetic); later
generations of a real run differ because the optimiser is then told other values.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pydantic import BaseModel, ValidationError

from evomerge.core.errors import UserError
from evomerge.evaluators.racing import Race, parents_cut
from evomerge.core.config_files import first_pydantic_error
from evomerge.search.config import RacingConfig, SubsetConfig
from evomerge.search.records.store import RunStore, Trial


def _checked(cls: type[BaseModel], option: str, **settings: Any) -> BaseModel:
    """Replay settings obey the same limits as the search config's `racing:` / `subset:`."""
    try:
        return cls(**settings)
    except ValidationError as e:
        raise UserError(first_pydantic_error(e), option) from None


def _generations(run_dir: Path) -> tuple[list[list[Trial]], dict[str, Any]]:
    with RunStore(run_dir) as store:
        config = store.config()
        done = [t for t in store.trials() if t.status == "complete" and t.duplicate_of is None]
        cheap = store.count("raced") + store.count("estimated")
    mode = next((m for m in ("racing", "subset") if config.get(m)), None)
    if mode is not None or cheap:
        raise UserError(f"replay needs a run scored in full; this one used {mode or 'racing or subset'} fitness, so "
                        f"only the few trials it checked in full have every item's result (replay would compare "
                        f"those alone)", str(run_dir))
    if not done or any(t.item_values is None for t in done):
        raise UserError("replay needs a run whose trials kept their item results (a fitness that scores problems "
                        "one by one, run without racing or subset)", str(run_dir))
    gens: dict[int, list[Trial]] = {}
    for t in sorted(done, key=lambda t: (t.generation, t.ask_index if t.ask_index is not None else t.id)):
        gens.setdefault(t.generation, []).append(t)
    return [gens[g] for g in sorted(gens)], config


def _top(values: list[float], mu: int) -> set[int]:
    return set(sorted(range(len(values)), key=lambda i: (-values[i], i))[:mu])


def _item_kind(config: dict[str, Any]) -> tuple[tuple[float, float], bool]:
    """The run's fitness evaluator's item range and whether its items are right-or-wrong (racing's bound)."""
    from evomerge.evaluators import evaluator_class

    cls = evaluator_class(config["fitness"][0]["name"], "fitness[0]")
    if cls.item_range is None:
        raise UserError(f"racing needs item values in a known range; {cls.name}'s have none (replay --subset works)")
    return cls.item_range, cls.binary_items


def replay_racing(run_dir: str | Path, chunk: int = 16, confidence: float = 0.95, min_items: int = 16, seed: int = 0,
                  binary: int | None = None) -> dict[str, Any]:
    """Per generation: problems used, candidates raced out, and top-half agreement with full evaluation.
    `binary` (0 or 1) overrides the evaluator's kind of items, to compare the two bounds."""
    _checked(RacingConfig, "--racing", chunk=chunk, confidence=confidence, min_items=min_items, seed=seed)
    gens, config = _generations(Path(run_dir))
    weight = config["fitness"][0].get("weight", 1.0)
    (lo, hi), is_binary = _item_kind(config)
    if binary is not None:
        is_binary = bool(binary)
    rows, used_all, total_all = [], 0, 0
    for trials in gens:
        n = len(trials[0].item_values)
        race = Race(n, chunk, min_items, confidence, seed, (lo, hi), is_binary, weight)  # as the search races
        mu = max(1, len(trials) // 2)
        full: list[float] = []
        told, used, raced = [], [], []
        for t in trials:
            cut = parents_cut(full, len(trials))
            values, out = [], False
            for idx in race.looks():
                values += [t.item_values[i] for i in idx]
                if race.stop(values, cut)[1]:
                    out = True
                    break
            k = len(values)
            used.append(k)
            raced.append(out)
            told.append(weight * sum(values) / k if out else t.fitness)
            if not out:
                full.append(t.fitness)
        truth = [t.fitness for t in trials]
        agree = len(_top(truth, mu) & _top(told, mu)) / mu
        rows.append({"generation": trials[0].generation, "candidates": len(trials), "raced": sum(raced),
                     "problems": sum(used), "of": n * len(trials), "top_half_agreement": agree,
                     "raced_ids": [t.id for t, r in zip(trials, raced) if r]})
        used_all += sum(used)
        total_all += n * len(trials)
    return {"setting": {"chunk": chunk, "confidence": confidence, "min_items": min_items, "seed": seed,
                        "bound": "exact binary" if is_binary else "Hoeffding-Serfling"},
            "generations": rows, "problems_used": used_all, "problems_full": total_all,
            "saving": total_all / max(used_all, 1),
            "mean_top_half_agreement": float(np.mean([r["top_half_agreement"] for r in rows]))}


def replay_subset(run_dir: str | Path, items: int = 32, seed: int = 0, first_random: int = 0, final: int = 0,
                  finalists: int = 2, grow_step: int = 0, grow_min: float = 4.0, grow_max: int = 12,
                  grow_mean: float = 6.0, from_run: int = 0) -> dict[str, Any]:
    """Per generation: top-half agreement of the estimates with full scores, and the error of the
    best-by-estimate's estimate, with anchors from what a subset run would have scored in full. The first
    generation is scored in full, or with `first_random=1` estimated from a random subset as well. `final=1`
    replays `check: final`: no check per generation (each draws a fresh random subset), and at the end the best by
    estimate of each of the last `finalists` generations scored in full (`from_run=1`: the `finalists` best by
    estimate of the whole run, `finalists_from: run`); `final_choice` says which it picks.
    `grow_step=3,grow_min=4,grow_max=12,grow_mean=5` (with `final=1`) replays `grow`."""
    from evomerge.search.economy.subset import SubsetPolicy, estimate

    _checked(SubsetConfig, "--subset", items=items, seed=seed)
    if grow_step and not final:
        raise UserError("grow_step needs final=1 (growth is a setting of `check: final`)", "--subset")
    if from_run and not final:
        raise UserError("from_run needs final=1 (it chooses the finalists of `check: final`)", "--subset")
    for name, value in (("first_random", first_random), ("final", final), ("from_run", from_run)):
        if value not in (0, 1):
            raise UserError(f"{name} is 0 or 1, got {value}", "--subset")
    if finalists < 1:
        raise UserError(f"finalists must be at least 1, got {finalists}", "--subset")
    # the setting as a search config's `subset:` section: the same limits, and the same policy object decides
    setting_config = _checked(
        SubsetConfig, "--subset", items=items, seed=seed, first_generation="random" if first_random else "full",
        check="final" if final else "generation", **({"finalists": finalists} if final else {}),
        **({"finalists_from": "run" if from_run else "generations"} if final else {}),
        **({"grow": {"step": grow_step, "min_total": grow_min, "max_items": grow_max, "mean_items": grow_mean}}
           if grow_step else {}))
    grow = setting_config.grow
    gens, config = _generations(Path(run_dir))
    weight = config["fitness"][0].get("weight", 1.0)
    n = len(gens[0][0].item_values)
    if items >= n:
        raise UserError(f"items ({items}) must be below the number of fitness problems ({n})", "--subset")
    popsize = config.get("optimizer", {}).get("popsize") or len(gens[0])
    policy = SubsetPolicy(setting_config, n, max(popsize, 1), config.get("budget", {}).get("max_trials", 0))
    # every scored trial as the policy ranks finalists: (estimate, id, generation, proposed again), and its full score
    pool: list[tuple[float, int, int, bool]] = []
    full_of: dict[int, float] = {}
    if first_random:
        known: list[dict[int, float]] = []
        rows, used_all, total_all = [], 0, 0
    else:  # the first generation is scored in full
        known = [dict(enumerate(t.item_values)) for t in gens[0]]
        rows, used_all, total_all = [], n * len(gens[0]), n * len(gens[0])
        pool += [(t.fitness, t.id, t.generation, False) for t in gens[0]]
        full_of.update({t.id: t.fitness for t in gens[0]})
        gens = gens[1:]
    sizes: list[int] = []  # problems per candidate of each estimated generation (growth's budget)
    for trials in gens:
        g = trials[0].generation
        anchors, weights = policy.anchors(g, known)
        if grow is not None:  # as the driver grows a generation: the same draws, totals and budget
            sizes.append(len(anchors))
            while policy.wants_more(sum(t.item_values[a] for t in trials for a in anchors), sizes):
                anchors = anchors + policy.more(anchors, g)
                sizes[-1] = len(anchors)
            weights = [1.0 / len(anchors)] * len(anchors)
        est = [weight * estimate(dict(enumerate(t.item_values)), anchors, weights) for t in trials]
        truth = [t.fitness for t in trials]
        mu = max(1, len(trials) // 2)
        best_id = policy.best_of([(e, t.id) for e, t in zip(est, trials)])
        best = next(i for i, t in enumerate(trials) if t.id == best_id)
        pool += [(e, t.id, g, False) for e, t in zip(est, trials)]
        full_of.update({t.id: t.fitness for t in trials})
        if not final:
            known.append(dict(enumerate(trials[best].item_values)))  # its full-set check
        rows.append({"generation": g, "candidates": len(trials), "anchors": len(anchors), "anchor_ids": anchors,
                     "estimates": est,
                     "top_half_agreement": len(_top(truth, mu) & _top(est, mu)) / mu,
                     "best_error": est[best] - truth[best], "best_is_true_best": truth[best] == max(truth),
                     "best_id": trials[best].id, "best_full": truth[best]})
        used_all += len(anchors) * len(trials) + (0 if final else n)
        total_all += n * len(trials)
    choice = None
    if final and rows:
        chosen, note = policy.finalists(pool)
        generation_of = {r[1]: r[2] for r in pool}
        estimated = {r[1] for r in pool if policy.estimated(r[2])}
        used_all += n * sum(1 for i in chosen if i in estimated)  # one scored in full already costs nothing more
        pick = max(chosen, key=lambda i: (full_of[i], -i))
        choice = {"trial": pick, "generation": generation_of[pick], "full": full_of[pick], "finalists": chosen,
                  "note": note, "run_best_full": max(full_of.values())}
    errors = [abs(r["best_error"]) for r in rows]
    setting = {"items": items, "seed": seed, "first_generation": "random" if first_random else "full",
               "check": "final" if final else "generation", **({"finalists": finalists} if final else {}),
               **({"finalists_from": "run" if from_run else "generations"} if final else {}),
               **({"grow": grow.model_dump()} if grow is not None else {})}
    return {"setting": setting, "generations": rows, "final_choice": choice, "problems_used": used_all,
            "problems_full": total_all, "saving": total_all / max(used_all, 1),
            "mean_top_half_agreement": float(np.mean([r["top_half_agreement"] for r in rows])) if rows else None,
            "mean_abs_best_error": float(np.mean(errors)) if errors else None}

"""What a run folder gives back: its status, any trial's exact candidate, exports, and `run:DIR` references."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from evomerge.core.errors import UserError
from evomerge.search.records.store import MASK_KEYS, RunStore, Trial

BOOKKEEPING = {"seconds", "prompt_tokens", "generated_tokens", "items"}  # in a trial's scores beside the metrics


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)


def resolve_run_ref(ref: str, log=_stderr) -> str:
    """`run:DIR` names the result of a finished search: its best model, exported once to DIR/best_model (and
    again when a resumed run found a better one). Any other reference is returned as it is."""
    if not ref.startswith("run:"):
        return ref
    return str(run_best_model(ref[4:], log))


def run_best_model(run_dir: str | Path, log=_stderr) -> Path:
    """The `run` reference scheme (evomerge/core/references.py): the folder of the run's best model; `run:DIR@ID`
    names trial ID instead (a Pareto-front member, an archive elite), exported once to DIR/trials/ID. A reference
    that does not resolve is refused, naming the reference, before anything is made."""
    try:
        return _run_best_model(str(run_dir), log)
    except UserError as e:
        if e.where == f"run:{run_dir}":
            raise
        raise UserError(e.message, f"run:{run_dir}") from None


def _run_best_model(text: str, log) -> Path:
    if "@" in text:
        folder, _, trial = text.rpartition("@")
        if not trial.isdigit():
            raise UserError(f"after @ comes a trial id (run:DIR@ID), not {trial!r}", f"run:{text}")
        out = Path(folder) / "trials" / trial
        if not (out / "config.json").exists():
            trial_candidate(folder, trial)  # a missing run or trial is refused before anything is made
            log(f"exporting trial {trial} of {folder} to {out}")
            made = not out.parent.exists()
            out.parent.mkdir(parents=True, exist_ok=True)
            try:
                export_trial(folder, out, trial, progress=False, force=True, log=log)
            except BaseException:
                if made and not any(out.parent.iterdir()):
                    out.parent.rmdir()
                raise
        return out
    run_dir = Path(text)
    with RunStore(run_dir) as store:
        best, out, current = store.result(), store.best_model_dir, store.exported_best()
        if best is None:
            raise UserError("the run has no completed trial yet", f"run:{run_dir}")
        if current != str(best.id):
            log(f"exporting the best model of {run_dir} (trial {best.id}) to {out}")
            store.set_exported_best(None)
            export_trial(run_dir, out, "best", progress=False, force=True, log=log)
            store.set_exported_best(best.id)
    return out


def run_status(run_dir: str | Path) -> dict[str, Any]:
    """What `evomerge status --json` prints."""
    with RunStore(Path(run_dir)) as store:
        config = store.config()
        best = store.result()
        gens = store.generations()
        by_reference = reference_estimates(config)
        return {
            "run_dir": str(run_dir),
            "completed": store.count("complete"),
            "failed": store.count("failed"),
            "raced": store.count("raced"),
            "estimated": store.count("estimated"),
            # estimates from references (log-probabilities, agreement) are not the metric: no error to compare
            "estimation_error": None if by_reference else _estimation_error(store.trials("complete")),
            "estimates": {"likelihood": "log-probability", "agreement": "agreement"}.get(
                (config.get("subset") or {}).get("signal"), "metric"),
            "running": store.count("running"),
            "budget": config["budget"]["max_trials"],
            "generations": len(gens),
            "best": {"trial": best.id, "fitness": best.fitness, "validation": best.val_fitness,
                     "params": best.params, "scores": best.scores} if best else None,
            "history": [{"generation": g["generation"], "best": g["best"], "mean": g["mean"]} for g in gens],
            "self_check": store.notes("self_check"),
            "spent": store.spent(),  # fallbacks of the GPU path (executors.Runner)
            "front": _front(store, config),
            "archive": _archive(store),
        }


def _archive(store: RunStore) -> list[dict[str, Any]] | None:
    """Quality-diversity runs: each objective's archive (cells and their elites)."""
    from evomerge.search.optimize.quality_diversity import archive_of_run, describe

    built = archive_of_run(store)
    return describe(*built) if built else None


def _front(store: RunStore, config: dict) -> dict[str, Any] | None:
    """Multi-objective runs: the Pareto front among the trials that meet the constraints, each value in its
    metric's own units (perplexity, not its negative log)."""
    from evomerge.search.optimize.optimizers import OPTIMIZERS
    from evomerge.search.optimize import pareto

    if not getattr(OPTIMIZERS.get(config["optimizer"]["name"]), "multi_objective", False):
        return None
    objs, constraints = pareto.for_run(store)
    info = pareto.front(store.trials("complete"), objs, constraints)
    info["shown"] = [pareto.shown(o["metric"]) for o in info["objectives"]]
    for m in info["members"]:
        m["shown"] = [pareto.shown_value(o["metric"], v) for o, v in zip(info["objectives"], m["values"])]
    history = pareto.hypervolume_history(store.trials("complete"), objs, constraints)
    info["hypervolume"] = history[-1][1] if history else None
    return info


def reference_estimates(config: dict) -> bool:
    """Whether a run's estimated trials score references (`subset.signal: likelihood` or `agreement`), not values
    of the metric."""
    return (config.get("subset") or {}).get("signal") in ("likelihood", "agreement")


def _estimation_error(trials: list[Trial]) -> dict[str, float] | None:
    """Subset fitness: how far the estimates of the generations' bests were from their full-set scores."""
    errors = [t.estimate - t.fitness for t in trials if t.estimate is not None]
    if not errors:
        return None
    return {"checked": len(errors), "mean_abs": sum(map(abs, errors)) / len(errors), "mean": sum(errors) / len(errors),
            "max_abs": max(map(abs, errors))}


def no_best_reason(run_dir: str | Path) -> str:
    """Why a run has no best trial, in one line (what `search` prints before exiting non-zero)."""
    with RunStore(Path(run_dir)) as store:
        failed = store.trials("failed")
    if not failed:
        return "no trial completed (the budget ended before the first one finished), so there is no best"
    return (f"no trial completed: all {len(failed)} failed, so there is no best; the first error was: "
            f"{(failed[0].error or '')[:300]}")


def trial_candidate(run_dir: str | Path, trial: str = "best"):
    """The exact candidate of a trial ('best' or an id): a Recipe, or a DataflowPath for data-flow runs."""
    from evomerge.search.space.spaces import candidate_from_yaml

    with RunStore(Path(run_dir)) as store:
        if trial == "best":
            t = store.result()
            if t is None:
                raise UserError("the run has no completed trial yet", str(run_dir))
        else:
            try:
                t = store.trial(int(trial))
            except ValueError:
                raise UserError(f"--trial takes 'best' or a trial id, got {trial!r}") from None
            if t is None or t.status != "complete":
                raise UserError(f"trial {trial} is not a completed trial of this run", str(run_dir))
        config = store.config()
    return candidate_from_yaml(t.recipe, f"trial {t.id}", config), t


def export_trial(run_dir: str | Path, out: str | Path, trial: str = "best", *, device: str = "auto",
                 force: bool = False, progress: bool = True, log=_stderr) -> Trial:
    """Write a trial as a Hugging Face model folder (what `evomerge export` does)."""
    from evomerge.merging.dataflow import DataflowPath
    from evomerge.merging.export import check_out_dir
    from evomerge.merging.methods import get_method
    from evomerge.search.space.spaces import export_candidate

    cand, t = trial_candidate(run_dir, trial)
    check_out_dir(Path(out), force)
    if not isinstance(cand, DataflowPath) and get_method(cand.merge_method).randomised:
        with RunStore(Path(run_dir)) as store:
            keyed = store.get_meta("mask_keys")
        if keyed != MASK_KEYS:
            log(f"warning: {run_dir} was recorded before DARE masks were keyed by source position: the exported "
                "model's masks differ from the scored one's (score it with `evomerge eval`)")
    scores = "; ".join(k + " " + ", ".join(f"{m}={x:.4g}" for m, x in v.items() if m not in BOOKKEEPING)
                       for k, v in t.scores.items())
    extra = f"Found by evolutionary search: trial {t.id}, fitness {t.fitness:.6g} ({scores})."
    if t.val_fitness is not None:
        extra += f" Validation fitness {t.val_fitness:.6g}."
    export_candidate(cand, Path(out), device=device, force=force, progress=progress, card_extra=extra)
    return t

"""The search loop: ask a generation, merge and score each candidate in place, tell, record; resume by replay.

Trial ids are `generation * popsize + k`, so a candidate's identity does not depend on when it ran. On resume the
optimiser is rebuilt and every finished generation replayed into it (checking that it proposes exactly the
recorded genes); in the unfinished generation, trials already complete are taken from the store, the rest run.
"""

from __future__ import annotations

import gc
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from tqdm import tqdm

from evomerge.architecture import num_layers
from evomerge.errors import UserError
from evomerge.models import ModelPool
from evomerge.search.config import SearchConfig, search_config_from_dict
from evomerge.search.genome import Genome
from evomerge.search.optimizers import make_optimizer
from evomerge.search.store import DB_NAME, LOCK_NAME, RunLock, RunStore, Trial

CONFIG_FILE = "config.yaml"
MASK_KEYS = "source-position"  # how this version keys DARE masks (evomerge.rng.mask_keys); runs record it
BEST_RECIPE = "best_recipe.yaml"


def resolve_run_ref(ref: str, log=print) -> str:
    """`run:DIR` names the result of a finished search: its best model, exported once to DIR/best_model."""
    if not ref.startswith("run:"):
        return ref
    run_dir = Path(ref[4:])
    out = run_dir / "best_model"
    best = run_status(run_dir)["best"]
    if best is None:
        raise UserError("the run has no completed trial yet", ref)
    marker = run_dir / "best_model.trial"  # which trial best_model holds: a resumed run may have a new best
    current = marker.read_text().strip() if marker.exists() else None
    if not (out / "config.json").exists() or current != str(best["trial"]):
        log(f"exporting the best model of {run_dir} (trial {best['trial']}) to {out}")
        marker.unlink(missing_ok=True)
        export_trial(run_dir, out, "best", progress=False, force=True, log=log)
        marker.write_text(f"{best['trial']}\n")
    return str(out)


@dataclass
class Search:
    """Everything a run needs that is derived from its config (no models loaded yet)."""

    config: SearchConfig
    genome: Any  # Genome (parameter space) or DataflowGenome (layer paths)
    seed: int  # DARE seed shared by all candidates: common random numbers make candidates comparable

    @classmethod
    def build(cls, config: SearchConfig, pool: ModelPool, where: str = "search config", log=print) -> "Search":
        if config.dataflow is not None:
            from evomerge.search.dataflow_genome import DataflowGenome

            d = config.dataflow
            a, b = resolve_run_ref(d.model_a, log), resolve_run_ref(d.model_b, log)
            from evomerge.dataflow import check_layer_shapes

            check_layer_shapes(pool.get(a), pool.get(b))
            genome = DataflowGenome(d, a, b, num_layers(pool.get(a).config), num_layers(pool.get(b).config),
                                    config.optimizer.sigma0)
            return cls(config, genome, config.optimizer.seed)
        template = config.template(where)
        for ref in template.referenced_models():
            pool.get(ref)  # every source opens (exists, has weights and a config) before anything is written
        donor = template.base_model or template.models[0].model
        genome = Genome(config.genome, template, num_layers(pool.get(donor).config), f"{where}: genome")
        if len(genome) == 0:
            raise UserError("the genome has no genes: no source model has a parameter to evolve",
                            f"{where}: genome")
        seed = template.seed if template.seed is not None else config.optimizer.seed
        return cls(config, genome, seed)

    @property
    def dataflow(self) -> bool:
        return self.config.dataflow is not None

    def sources(self) -> list[str]:
        """The models the candidates are made of (run: references resolved)."""
        if self.dataflow:
            return [self.genome.model_a, self.genome.model_b]
        return self.config.template().referenced_models()

    def x0(self) -> np.ndarray:
        return self.genome.x0(self.config.optimizer.x0)

    def candidate(self, x: np.ndarray):
        """A recipe (parameter space) or a path (data flow); both know `to_yaml`."""
        return self.genome.path(x) if self.dataflow else self.genome.recipe(x, self.seed)

    def check(self, pool: ModelPool) -> None:
        """What building the live model would refuse, without building it (for executors that build it
        elsewhere): the first candidate's merge plans (data flow: `build` compared the layer shapes)."""
        if self.dataflow:
            return None
        from evomerge.plan import plan_merge

        plan_merge(self.candidate(self.x0()), pool.get, "search config: merge")
        return None

    def live(self, pool: ModelPool):
        if self.dataflow:
            from evomerge.dataflow import DataflowLive

            return DataflowLive(self.candidate(self.x0()), self.config.dataflow.dtype, self.config.device)
        from evomerge.live import LiveMerge

        devices = None
        if self.config.gpus > 1:
            from evomerge.placement import parse_devices

            devices = parse_devices(self.config.gpus)
        return LiveMerge(self.candidate(self.x0()), pool, self.config.device, sources_on=self.config.sources,
                         devices=devices)


def check_run_dir(run_dir: Path, resume: bool) -> None:
    """Refuse a run folder that does not fit the request, before anything is loaded or written."""
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError("--run-dir is a file, not a folder", str(run_dir))
    has_run = (run_dir / DB_NAME).exists()
    if resume and not has_run:
        what = "does not exist" if not run_dir.exists() else "holds no run"
        raise UserError(f"nothing to resume: the folder {what} (leave out --resume to start a new run)",
                        str(run_dir))
    if has_run and not resume:
        raise UserError("this run folder already holds a run; add --resume to continue it", str(run_dir))
    if not has_run and run_dir.exists() and any(p.name != LOCK_NAME for p in run_dir.iterdir()):
        raise UserError("the run folder exists and is not empty", str(run_dir))


def _open_store(config: SearchConfig, run_dir: Path, resume: bool, config_text: str, sources: dict[str, str],
                data: dict[str, str]) -> RunStore:
    store = RunStore(run_dir, create=True)
    try:
        if resume:
            if store.get_meta("fingerprint") != config.fingerprint():
                raise UserError("the config differs from the one this run started with (only `budget` may change)",
                                str(run_dir))
            _same_as_before(store, "sources", sources, "model {} changed since this run started (its trials were "
                            "scored on the old one); start a new run folder", run_dir)
            _same_as_before(store, "data", data, "the data of {} changed since this run started (its trials were "
                            "scored on the old data); restore it or start a new run folder", run_dir)
        else:
            store.set_meta("fingerprint", config.fingerprint())
            store.set_meta("created", str(time.time()))
            store.set_meta("mask_keys", MASK_KEYS)
        store.set_meta("config", json.dumps(config.model_dump(mode="json")))
        store.set_meta("sources", json.dumps(sources))
        store.set_meta("data", json.dumps(data))
        (run_dir / CONFIG_FILE).write_text(config_text, encoding="utf-8")
    except BaseException:
        store.close()
        raise
    return store


def _same_as_before(store: RunStore, key: str, now: dict[str, str], message: str, run_dir: Path) -> None:
    """Refuse a resume whose models or data differ from those the recorded trials were scored on."""
    before = json.loads(store.get_meta(key) or "{}")
    changed = [name for name, value in now.items() if name in before and before[name] != value]
    if changed:
        raise UserError(message.format(changed[0]), str(run_dir))


def run_search(config: SearchConfig, run_dir: str | Path, *, resume: bool = False, progress: bool = True,
               config_text: str | None = None, log=print) -> Trial | None:
    """Run (or resume) a search to its budget; returns the best trial (None if no trial completed).

    Everything that can be checked without scoring a candidate (run folder, device, genome, optimiser start,
    models present and compatible, fitness data) is checked before the run folder is touched; a new run that
    still fails before its first trial leaves nothing behind. The run folder is locked while the search runs.
    """
    run_dir = Path(run_dir)
    check_run_dir(run_dir, resume)
    text = config_text or yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
    from evomerge.devices import pick_device
    from evomerge.evaluators import Fitness
    from evomerge.models import fingerprint

    pick_device(config.device, "search config: device")
    with ModelPool() as pool:
        search = Search.build(config, pool, log=log)
        opt = make_optimizer(config.optimizer, search.x0(), search.genome.names)
        fitness = Fitness(config.fitness, "fitness")
        validation = Fitness(config.validation, "validation") if config.validation else None
        sources = {ref: fingerprint(ref) for ref in search.sources()}
        data = fitness.data_fingerprints("fitness")
        if validation is not None:
            data.update(validation.data_fingerprints("validation"))
        # the local executor's live model is built here, so that sources that cannot be merged (missing,
        # incompatible shapes) fail before the run folder exists; Ray workers build their own
        live = search.live(pool) if config.executor.name == "local" else search.check(pool)
        created = not run_dir.exists()
        run_dir.mkdir(parents=True, exist_ok=True)
        lock = RunLock(run_dir)
        try:
            lock.acquire()
        except BaseException:
            if created:
                shutil.rmtree(run_dir, ignore_errors=True)
            raise
        store = None
        try:
            check_run_dir(run_dir, resume)  # again, now that no other process can be starting a run here
            store = _open_store(config, run_dir, resume, text, sources, data)
            return _loop(search, opt, fitness, validation, store, pool, live, progress, log)
        except BaseException:
            if not resume and (store is None or store.count("complete") + store.count("failed") == 0):
                _remove_new_run(run_dir, created, store)
                store = None
            raise
        finally:
            if store is not None:
                store.close()
            lock.release()


def _remove_new_run(run_dir: Path, created: bool, store: RunStore | None) -> None:
    """A new run that failed before its first trial leaves nothing that would block the corrected config."""
    if store is not None:
        store.close()
    if created:
        shutil.rmtree(run_dir, ignore_errors=True)
        return
    for name in (DB_NAME, f"{DB_NAME}-wal", f"{DB_NAME}-shm", CONFIG_FILE, BEST_RECIPE, LOCK_NAME):
        (run_dir / name).unlink(missing_ok=True)


@dataclass
class Outcome:
    status: str  # complete | failed
    fitness: float | None
    scores: dict
    error: str | None
    merge_s: float | None
    eval_s: float | None


def evaluate_candidate(search: Search, live, fitness, x: np.ndarray) -> Outcome:
    """Merge (or build) one candidate into the live model and score it; failures are outcomes, not exceptions."""
    from evomerge.live import CandidateError

    t0 = time.perf_counter()
    merge_s = None
    try:
        live.apply(search.candidate(x))
        merge_s = time.perf_counter() - t0
        value, scores = fitness.score(live.model, live.tokenizer)
        if not np.isfinite(value):
            raise CandidateError(f"fitness is {value}")
    except UserError:
        raise
    except Exception as e:  # a failed candidate is data, not the end of the search
        _free_memory()
        return Outcome("failed", None, {}, f"{type(e).__name__}: {e}", merge_s, None)
    return Outcome("complete", value, scores, None, merge_s, time.perf_counter() - t0 - merge_s)


def record(store: RunStore, trial_id: int, outcome: Outcome) -> None:
    if outcome.status == "complete":
        store.finish_trial(trial_id, outcome.fitness, outcome.scores, outcome.merge_s, outcome.eval_s)
    else:
        store.fail_trial(trial_id, outcome.error, outcome.merge_s)


def replay(opt, store: RunStore, failed_fitness: float) -> int:
    """Bring a fresh optimiser to the state after the finished generations; returns the next generation.

    Each generation is re-asked in its recorded order (the initial population, then any steady-state extras) and
    told exactly the trials it was told, so the optimiser ends in the interrupted run's state.
    """
    pop = opt.popsize
    done = {g["generation"] for g in store.generations()}
    gen = 0
    while gen in done:
        trials = store.generation_trials(gen)
        xs = opt.ask()
        asked = {k: x for k, x in enumerate(xs)}
        for t in trials:
            k = t.ask_index if t.ask_index is not None else trials.index(t)
            if k >= pop:
                asked[k] = opt.ask_extra()
            if k not in asked or not np.allclose(asked[k], t.genes, rtol=0, atol=1e-12):
                raise UserError(f"replaying generation {gen} did not reproduce trial {t.id}; "
                                "the run cannot be resumed with this optimiser", str(store.folder))
        told = sorted((t for t in trials if t.told is not None), key=lambda t: t.told) or trials[:pop]
        opt.tell([np.array(t.genes) for t in told], [_fitness_of(t, failed_fitness) for t in told])
        gen += 1
    return gen


def _loop(search: Search, opt, fitness, validation, store: RunStore, pool: ModelPool, live, progress: bool,
          log) -> Trial | None:
    config, genome = search.config, search.genome
    gen = replay(opt, store, config.failed_fitness)
    if gen:
        log(f"resumed after {gen} finished generations ({store.count('complete')} complete, "
            f"{store.count('failed')} failed trials)")
    log(f"genome: {len(genome)} genes ({', '.join(genome.names[:6])}{', ...' if len(genome) > 6 else ''}); "
        f"population {opt.popsize}; budget {config.budget.max_trials} trials")
    if config.executor.name == "ray":
        from evomerge.search.ray_executor import run_ray

        run_ray(search, opt, gen, validation, store, progress, log)
        return _finish(store, log)
    return _local(search, opt, gen, fitness, validation, store, live, progress, log)


def _local(search: Search, opt, gen: int, fitness, validation, store: RunStore, live, progress: bool,
           log) -> Trial | None:
    config, genome = search.config, search.genome
    pop, budget = opt.popsize, config.budget
    t_start = time.time()
    finished = store.count("complete") + store.count("failed")
    bar = tqdm(total=budget.max_trials, initial=min(finished, budget.max_trials), desc="trials", unit="trial",
               disable=not progress, dynamic_ncols=True)
    best = store.best()
    try:
        while True:
            if budget.max_generations is not None and gen >= budget.max_generations:
                break
            if gen * pop >= budget.max_trials or _out_of_time(budget, t_start):
                break
            xs = opt.ask()
            values: list[float] = []
            gen_bar = tqdm(total=pop, desc=f"generation {gen}", unit="cand", leave=False,
                           disable=not progress, dynamic_ncols=True)
            for k, x in enumerate(xs):
                trial_id = gen * pop + k
                if trial_id >= budget.max_trials or _out_of_time(budget, t_start):
                    gen_bar.close()
                    return _finish(store, log)
                done = store.trial(trial_id)
                if done is not None and done.status in ("complete", "failed"):
                    values.append(_fitness_of(done, config.failed_fitness))
                    gen_bar.update()
                    continue
                store.start_trial(trial_id, gen, [float(v) for v in x], genome.values(x),
                                  search.candidate(x).to_yaml(), ask_index=k)
                outcome = evaluate_candidate(search, live, fitness, x)
                record(store, trial_id, outcome)
                if outcome.status == "failed":
                    values.append(config.failed_fitness)
                    log(f"trial {trial_id} failed: {outcome.error[:200]}")
                else:
                    values.append(outcome.fitness)
                    if best is None or outcome.fitness > best.fitness:
                        best = store.trial(trial_id)
                bar.update()
                gen_bar.update()
                if best is not None:
                    bar.set_postfix(best=f"{best.fitness:.4g}", trial=best.id)
            gen_bar.close()
            end_generation(search, opt, store, gen, xs, values, [gen * pop + k for k in range(pop)], validation,
                           live, log)
            gen += 1
    finally:
        bar.close()
    return _finish(store, log)


def end_generation(search: Search, opt, store: RunStore, gen: int, xs, values, trial_ids, validation, live,
                   log) -> None:
    """Tell the optimiser, remember which trials it was told, validate, and record the generation."""
    opt.tell(xs, values)
    store.mark_told(trial_ids)
    if validation is not None:
        _validate_generation(search, live, validation, store, gen, opt.popsize, log)
    store.finish_generation(gen, opt.snapshot(), values)
    best = store.best()
    if best is not None:
        (store.folder / BEST_RECIPE).write_text(best.recipe, encoding="utf-8")
    log(f"generation {gen}: best {max(values):.4g}, mean {np.mean(values):.4g}"
        + (f"; best so far {best.fitness:.4g} (trial {best.id})" if best else ""))


def _validate_generation(search: Search, live, validation, store: RunStore, gen: int, pop: int, log) -> None:
    """Score the generation's best trial on the validation set (the paper keeps the best-validation snapshot)."""
    done = [t for t in store.generation_trials(gen) if t.status == "complete"]
    if not done:
        return
    top = max(done, key=lambda t: (t.fitness, -t.id))
    if top.val_fitness is not None:
        return
    try:
        live.apply(search.candidate(np.array(top.genes)))
        value, scores = validation.score(live.model, live.tokenizer)
    except UserError:
        raise
    except Exception as e:
        log(f"validation of trial {top.id} failed: {type(e).__name__}: {str(e)[:200]}")
        return
    store.set_validation(top.id, value, scores)
    log(f"generation {gen}: validation of trial {top.id}: {value:.4g}")


def _finish(store: RunStore, log) -> Trial | None:
    best = store.result()
    if best is None:
        log(f"no trial completed ({store.count('failed')} failed): the run has no best")
    else:
        (store.folder / BEST_RECIPE).write_text(best.recipe, encoding="utf-8")
        val = f", validation {best.val_fitness:.6g}" if best.val_fitness is not None else ""
        log(f"best: trial {best.id}, fitness {best.fitness:.6g}{val}")
        shown = list(best.params.items())[:12]
        more = f", ... ({len(best.params) - 12} more)" if len(best.params) > 12 else ""
        log("  " + ", ".join(f"{k}={v:.4f}" for k, v in shown) + more)
        log(f"  recipe: {store.folder / BEST_RECIPE}")
    return best


def no_best_reason(run_dir: str | Path) -> str:
    """Why a run has no best trial, in one line (what `search` prints before exiting non-zero)."""
    store = RunStore(Path(run_dir))
    try:
        failed = store.trials("failed")
    finally:
        store.close()
    if not failed:
        return "no trial completed (the budget ended before the first one finished), so there is no best"
    return (f"no trial completed: all {len(failed)} failed, so there is no best; the first error was: "
            f"{(failed[0].error or '')[:300]}")


def _fitness_of(trial: Trial | None, failed: float) -> float:
    return trial.fitness if trial is not None and trial.status == "complete" else failed


def _out_of_time(budget, t_start: float) -> bool:
    return budget.max_minutes is not None and (time.time() - t_start) / 60 > budget.max_minutes


def _free_memory() -> None:
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:
        pass


def run_status(run_dir: str | Path) -> dict[str, Any]:
    """What `evomerge status --json` prints."""
    run_dir = Path(run_dir)
    store = RunStore(run_dir)
    try:
        config = json.loads(store.get_meta("config"))
        best = store.result()
        gens = store.generations()
        return {
            "run_dir": str(run_dir),
            "completed": store.count("complete"),
            "failed": store.count("failed"),
            "running": store.count("running"),
            "budget": config["budget"]["max_trials"],
            "generations": len(gens),
            "best": {"trial": best.id, "fitness": best.fitness, "validation": best.val_fitness,
                     "params": best.params, "scores": best.scores} if best else None,
            "history": [{"generation": g["generation"], "best": g["best"], "mean": g["mean"]} for g in gens],
        }
    finally:
        store.close()


def run_config(run_dir: str | Path) -> dict[str, Any]:
    """The search config a run was started with, as recorded in its store."""
    store = RunStore(Path(run_dir))
    try:
        return json.loads(store.get_meta("config"))
    finally:
        store.close()


def trial_candidate(run_dir: str | Path, trial: str = "best"):
    """The exact candidate of a trial ('best' or an id): a Recipe, or a DataflowPath for data-flow runs."""
    from evomerge.dataflow import DataflowPath
    from evomerge.recipe import recipe_from_dict

    store = RunStore(Path(run_dir))
    try:
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
    finally:
        store.close()
    data = yaml.safe_load(t.recipe)
    if isinstance(data, dict) and "dataflow" in data:
        path = DataflowPath.model_validate(data["dataflow"])
        if path.dtype is None:  # recorded before paths carried their dtype: the run's config has it
            path.dtype = ((run_config(run_dir).get("dataflow") or {}).get("dtype"))
        return path, t
    return recipe_from_dict(data, f"trial {t.id}"), t


def export_trial(run_dir: str | Path, out: str | Path, trial: str = "best", *, device: str = "auto",
                 force: bool = False, progress: bool = True, log=print) -> Trial:
    """Write a trial as a Hugging Face model folder (what `evomerge export` does)."""
    from evomerge.dataflow import DataflowPath, export_dataflow
    from evomerge.export import check_out_dir
    from evomerge.merge import run_merge
    from evomerge.methods import get_method

    cand, t = trial_candidate(run_dir, trial)
    check_out_dir(Path(out), force)
    if not isinstance(cand, DataflowPath) and get_method(cand.merge_method).randomised:
        store = RunStore(Path(run_dir))
        try:
            keyed = store.get_meta("mask_keys")
        finally:
            store.close()
        if keyed != MASK_KEYS:
            log(f"warning: {run_dir} was recorded before DARE masks were keyed by source position: the exported "
                "model's masks differ from the scored one's (score it with `evomerge eval`)")
    scores = "; ".join(k + " " + ", ".join(f"{m}={x:.4g}" for m, x in v.items() if m != "seconds")
                       for k, v in t.scores.items())
    extra = f"Found by evolutionary search: trial {t.id}, fitness {t.fitness:.6g} ({scores})."
    if t.val_fitness is not None:
        extra += f" Validation fitness {t.val_fitness:.6g}."
    if isinstance(cand, DataflowPath):
        export_dataflow(cand, Path(out), force=force, progress=progress, card_extra=extra)
    else:
        run_merge(cand, out, device=device, force=force, progress=progress, card_extra=extra)
    return t

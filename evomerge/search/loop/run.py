"""Starting a search: everything that can be checked without scoring a candidate is checked before the run
folder is touched (run folder, device, genome, optimiser start, models present and compatible, fitness data,
the economy settings), then the folder is locked, the store opened (or a resume checked against what the run
recorded) and the Driver (search/loop/driver.py) runs it. A new run that fails before its first trial finishes
leaves nothing behind."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import yaml

from evomerge.core.errors import UserError
from evomerge.sources.models import ModelPool
from evomerge.search.config import SearchConfig
from evomerge.search.loop.driver import Driver
from evomerge.search.loop.executors import LocalExecutor
from evomerge.search.optimize.optimizers import make_optimizer
from evomerge.search.space.spaces import SearchSpace, make_space
from evomerge.search.records.store import (BEST_RECIPE, CONFIG_FILE, DB_NAME, LOCK_NAME, MASK_KEYS, RunLock,
                                           RunStore, Trial)
from evomerge.search.records.tracking import check_trackers, make_trackers


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


def run_search(config: SearchConfig, run_dir: str | Path, *, resume: bool = False, progress: bool = True,
               config_text: str | None = None, log=print) -> Trial | None:
    """Run (or resume) a search to its budget; returns the best trial (None if no trial completed).

    Everything that can be checked without scoring a candidate (run folder, device, genome, optimiser start,
    models present and compatible, fitness data) is checked before the run folder is touched; a new run that
    still fails before its first trial finishes leaves nothing behind. The run folder is locked while it runs.
    """
    from evomerge.core.devices import pick_device
    from evomerge.evaluators import Fitness
    from evomerge.sources.models import fingerprint

    run_dir = Path(run_dir)
    check_run_dir(run_dir, resume)
    text = config_text or yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
    pick_device(config.device, "search config: device")
    check_trackers(config)
    # what needs data but no model is checked before any model is opened
    fitness = Fitness(config.fitness, "fitness")
    validation = Fitness(config.validation, "validation") if config.validation else None
    _check_economy(config, fitness)
    with ModelPool() as pool:
        space = make_space(config, pool)
        opt = make_optimizer(config.optimizer, space.x0(), space.names, len(config.fitness),
                             config.archive.model_dump() if config.archive else None, config.fitness_keys())
        sources = {ref: fingerprint(ref) for ref in space.sources()}
        _note_sources(pool, sources, log)
        data = fitness.data_fingerprints("fitness")
        if validation is not None:
            data.update(validation.data_fingerprints("validation"))
        if config.executor.name == "ray":
            from evomerge.search.loop.ray_executor import RayExecutor

            space.check(pool)  # the workers build their own live models
            executor = RayExecutor(config)
        else:  # built here, so that sources that cannot be merged fail before the run folder exists
            live = space.live(pool)
            for note in getattr(live, "notes", ()):
                log(note)
            executor = LocalExecutor(space, live, fitness, validation)
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
            store = _open_store(config, run_dir, resume, text, sources, data, space)
            store.set_meta("objectives", json.dumps([[t.key, t.metric] for t in fitness.terms]))
            trackers = make_trackers(config, run_dir, store, log)
            term = fitness.racing_term()
            n_items = term.evaluator.num_items() if term is not None else None
            try:
                return Driver(space, opt, store, executor, validation is not None, progress, log, n_items,
                              trackers).run()
            finally:
                trackers.close()
        except BaseException:
            if not resume and (store is None or store.count("complete") + store.count("failed") == 0):
                _remove_new_run(run_dir, created, store)
                store = None
            raise
        finally:
            if store is not None:
                store.close()
            lock.release()


def _note_sources(pool: ModelPool, refs, log) -> None:
    """What the search does differently from the source's own loading, one line each: a source that ships its
    own modeling code (auto_map, as Asagi does) is scored by the transformers class its config's model_type
    names, never by its own code; a processor saved without a patch size (before transformers 4.47, as Asagi's)
    counts image tokens from config.json, or is refused here when config.json cannot say."""
    from evomerge.sources.processors import image_count_note

    for ref in refs:
        source = pool.get(ref)
        cj = source.config_json or {}
        if cj.get("auto_map"):
            log(f"note: {ref} ships its own modeling code (auto_map); the search scores candidates with "
                f"transformers' class for model_type {cj.get('model_type')!r}, and exports keep its code "
                "(load them with trust_remote_code)")
        if source.vlm:
            note = image_count_note(source.folder)
            if note is not None:
                log(f"note: {note}")


def _check_economy(config: SearchConfig, fitness: Any) -> None:
    """Racing and subset fitness need an evaluator that scores problems one by one, and a subset smaller than the
    fitness set (else every "estimate" is a full scoring, recorded as an estimate and checked again)."""
    for mode in ("racing", "subset"):
        if getattr(config, mode) is not None and fitness.racing_term(bounded=mode == "racing") is None:
            need = ", whose item values have a known range" if fitness.racing_term() is not None else ""
            raise UserError(f"{mode} needs one fitness evaluator, with a positive weight, that scores problems "
                            f"one by one{need} (mgsm_ja, ja_vg_vqa, lm_eval with one task, perplexity with "
                            "`unit: documents` for subset only, or your own with Evaluator.score_items)",
                            f"search config: {mode}")
    if config.subset is not None:
        n = fitness.racing_term().evaluator.num_items()
        if config.subset.items >= n:
            raise UserError(f"subset.items ({config.subset.items}) must be below the number of fitness problems "
                            f"({n}); to score every problem, leave `subset:` out", "search config: subset.items")
        why = fitness.racing_term().evaluator.likelihood_problem()
        if config.subset.signal != "metric" and why is not None:
            raise UserError(f"{why}; or leave `signal` at `metric`", "search config: subset.signal")


def _open_store(config: SearchConfig, run_dir: Path, resume: bool, config_text: str, sources: dict[str, str],
                data: dict[str, str], space: SearchSpace) -> RunStore:
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
        store.set_meta("genes", json.dumps(space.genes_info()))
        store.write_config_text(config_text)
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


def _remove_new_run(run_dir: Path, created: bool, store: RunStore | None) -> None:
    """A new run that failed before its first trial finished leaves nothing that would block the corrected
    config."""
    if store is not None:
        store.close()
    if created:
        shutil.rmtree(run_dir, ignore_errors=True)
        return
    for name in (DB_NAME, f"{DB_NAME}-wal", f"{DB_NAME}-shm", CONFIG_FILE, BEST_RECIPE, LOCK_NAME):
        (run_dir / name).unlink(missing_ok=True)

"""Scoring candidates on Ray actors: one actor per GPU (or group of GPUs), each holding the sources once.

Scheduling keeps every worker busy without breaking CMA-ES. A generation starts with `popsize` candidates;
whenever a worker is idle and all of them are handed out, the optimiser draws one *extra* sample from the same,
not yet updated, distribution (steady-state over-asking). The generation is told the first `popsize` candidates
to finish, so every update still sees `popsize` samples of one distribution; later finishers ("stragglers") are
recorded like any trial (one may be the best model) but not told. The caveat: when a candidate's run time
correlates with its fitness, the told set leans towards the fast ones. With one worker no extras are drawn, and
the run equals the local executor's trial for trial. The driver's run store stays the only source of truth: a
worker that dies, or runs past `timeout_s`, is replaced and its candidate re-queued; after a driver crash,
`--resume` replays the recorded asks and told sets (see `loop.replay`).
"""

from __future__ import annotations

import json
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tqdm import tqdm

from evomerge.errors import UserError
from evomerge.search.store import RunStore


def _worker_class(gpus: float, cpus: float):
    import ray

    @ray.remote(num_gpus=gpus, num_cpus=cpus, max_restarts=0)
    class Worker:
        """Loads the sources and the fitness once; then merges and scores candidates in place."""

        def __init__(self, config_json: str):
            from evomerge.evaluators import Fitness
            from evomerge.models import ModelPool
            from evomerge.search.config import SearchConfig
            from evomerge.search.loop import Search

            config = SearchConfig.model_validate(json.loads(config_json))
            self.pool = ModelPool()
            self.search = Search.build(config, self.pool, log=lambda m: None)
            self.fitness = Fitness(config.fitness, "fitness")
            self.validation = Fitness(config.validation, "validation") if config.validation else None
            self.live = self.search.live(self.pool)

        def ready(self) -> bool:
            return True

        def evaluate(self, genes: list[float]):
            from evomerge.search.loop import evaluate_candidate

            return evaluate_candidate(self.search, self.live, self.fitness, np.asarray(genes))

        def validate(self, genes: list[float]):
            """(value, scores) of a candidate on the validation set, or (None, error message)."""
            try:
                self.live.apply(self.search.candidate(np.asarray(genes)))
                return self.validation.score(self.live.model, self.live.tokenizer)
            except Exception as e:  # reported by the driver; the search goes on without this snapshot
                return None, f"{type(e).__name__}: {str(e)[:200]}"

    return Worker


@dataclass
class _Generation:
    index: int
    asked: dict[int, np.ndarray]  # ask_index -> genes
    queue: deque = field(default_factory=deque)  # ask indices waiting for a worker
    finished: list[tuple[int, int, float]] = field(default_factory=list)  # (ask_index, trial_id, value) by finish
    trial_of: dict[int, int] = field(default_factory=dict)  # ask_index -> trial id


def run_ray(search, opt, gen: int, validation, store: RunStore, progress: bool, log) -> None:
    try:
        import ray
    except ImportError:
        raise UserError("executor: ray needs Ray: pip install 'evomerge[ray]'") from None
    config = search.config
    ex = config.executor
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=ex.address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        _Driver(search, opt, gen, validation, store, progress, log).run()
    finally:
        if started_here:
            ray.shutdown()


class _Driver:
    def __init__(self, search, opt, gen, validation, store, progress, log):
        import ray

        self.ray, self.search, self.opt, self.store, self.log = ray, search, opt, store, log
        self.config = search.config
        self.ex, self.budget = self.config.executor, self.config.budget
        self.validation = validation
        gpus = ray.cluster_resources().get("GPU", 0)
        per_worker = max(self.ex.gpus_per_worker, float(self.config.gpus))  # an actor owns a candidate's GPUs
        self.n_workers = self.ex.workers or (max(1, int(gpus // max(per_worker, 1))) if gpus else 2)
        self.Worker = _worker_class(per_worker if gpus else 0, self.ex.cpus_per_worker)
        self.config_json = json.dumps(self.config.model_dump(mode="json"))
        self.progress = progress
        from evomerge.search.optimizers import Optimizer

        self.steady = self.ex.steady_state and type(opt).ask_extra is not Optimizer.ask_extra
        if self.ex.steady_state and not self.steady:
            log(f"{type(opt).__name__} cannot draw extra samples: workers wait at generation ends")
        self.gen = self._open(gen)
        self.busy_s = 0.0
        self.retry: deque = deque()  # (generation, ask_index, trial_id, genes) of lost stragglers
        self.to_validate: deque = deque()  # (trial_id, genes): each closed generation's best, scored by a worker
        if validation is not None:  # on resume: closed generations whose best has no validation yet
            for g in range(gen):
                self._queue_validation(g)

    # -- generations -------------------------------------------------------------------------------------------
    def _open(self, index: int) -> _Generation:
        """Ask a generation; on resume, restore its recorded extras and finished trials."""
        g = _Generation(index, dict(enumerate(self.opt.ask())))
        recorded = self.store.generation_trials(index)
        for t in recorded:
            if t.ask_index is not None and t.ask_index >= self.opt.popsize:
                g.asked[t.ask_index] = self.opt.ask_extra()
        by_index = {t.ask_index: t for t in recorded if t.ask_index is not None}
        for k in sorted(g.asked):
            t = by_index.get(k)
            if t is not None:
                g.trial_of[k] = t.id
            if t is not None and t.status in ("complete", "failed"):
                value = t.fitness if t.status == "complete" else self.config.failed_fitness
                g.finished.append((k, t.id, value))
            else:
                g.queue.append(k)
        return g

    def _maybe_close(self) -> None:
        g, pop = self.gen, self.opt.popsize
        if len(g.finished) < pop:
            return
        told = g.finished[:pop]
        from evomerge.search.loop import end_generation

        xs = [g.asked[k] for k, _, _ in told]
        end_generation(self.search, self.opt, self.store, g.index, xs, [v for _, _, v in told],
                       [tid for _, tid, _ in told], None, None, self.log)
        if self.validation is not None:
            self._queue_validation(g.index)
        self.gen = self._open(g.index + 1)

    def _queue_validation(self, gen: int) -> None:
        """The generation's best finished trial goes to the next idle worker for validation (as local runs do
        right after each generation)."""
        done = [t for t in self.store.generation_trials(gen) if t.status == "complete"]
        if done:
            top = max(done, key=lambda t: (t.fitness, -t.id))
            if top.val_fitness is None:
                self.to_validate.append((top.id, list(top.genes)))

    # -- workers -----------------------------------------------------------------------------------------------
    def _spawn(self):
        """A replacement worker; not waited for: the candidate it gets queues until its sources are loaded."""
        return self.Worker.remote(self.config_json)

    def run(self) -> None:
        ray, store, budget, pop = self.ray, self.store, self.budget, self.opt.popsize
        t0 = time.time()
        self.log(f"starting {self.n_workers} Ray workers")
        workers = [self.Worker.remote(self.config_json) for _ in range(self.n_workers)]
        ray.get([w.ready.remote() for w in workers])  # all load their sources in parallel
        idle = deque(workers)
        pending: dict[Any, tuple[Any, int, int, int, float]] = {}  # ref -> (worker, generation, ask, trial, start)
        dispatched = store.next_id()  # trials created so far; re-running a trial does not count again
        bar = tqdm(total=budget.max_trials, initial=min(dispatched, budget.max_trials), desc="trials",
                   unit="trial", disable=not self.progress, dynamic_ncols=True)
        first_dispatch = last_done = None
        try:
            while True:
                stop = (dispatched >= budget.max_trials
                        or (budget.max_generations is not None and self.gen.index >= budget.max_generations)
                        or (budget.max_minutes is not None and (time.time() - t0) / 60 > budget.max_minutes))
                while idle and self.to_validate:
                    trial_id, x = self.to_validate.popleft()
                    worker = idle.popleft()
                    pending[worker.validate.remote([float(v) for v in x])] = (worker, -1, None, trial_id, time.time())
                while idle and self.retry:
                    gi, k, trial_id, x = self.retry.popleft()
                    worker = idle.popleft()
                    pending[worker.evaluate.remote([float(v) for v in x])] = (worker, gi, k, trial_id, time.time())
                while idle:
                    g = self.gen
                    if g.queue and (not stop or g.queue[0] in g.trial_of):  # re-queued trials always run
                        k = g.queue.popleft()
                    elif stop:
                        break
                    elif self.steady and len(g.asked) < 4 * pop:
                        k = max(g.asked) + 1
                        g.asked[k] = self.opt.ask_extra()
                    else:
                        break
                    x = g.asked[k]
                    trial_id = g.trial_of.get(k)
                    if trial_id is None:
                        trial_id = store.next_id()
                        g.trial_of[k] = trial_id
                        store.start_trial(trial_id, g.index, [float(v) for v in x], self.search.genome.values(x),
                                          self.search.candidate(x).to_yaml(), ask_index=k)
                        dispatched += 1
                    worker = idle.popleft()
                    now = time.time()
                    first_dispatch = first_dispatch or now
                    pending[worker.evaluate.remote([float(v) for v in x])] = (worker, g.index, k, trial_id, now)
                    stop = dispatched >= budget.max_trials
                if not pending and not self.to_validate:
                    break
                done, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
                for ref in done:
                    worker, gi, k, trial_id, start = pending.pop(ref)
                    try:
                        outcome = ray.get(ref)
                    except ray.exceptions.RayError as e:  # the actor died: replace it, re-queue the candidate
                        self.log(f"worker lost on trial {trial_id} ({type(e).__name__}); re-queued")
                        self._requeue(gi, k, trial_id)
                        idle.append(self._spawn())
                        continue
                    if k is None:  # a validation
                        value, scores = outcome
                        if value is None:
                            self.log(f"validation of trial {trial_id} failed: {scores}")
                        else:
                            store.set_validation(trial_id, value, scores)
                            self.log(f"validation of trial {trial_id}: {value:.4g}")
                        idle.append(worker)
                        continue
                    from evomerge.search.loop import record

                    record(store, trial_id, outcome)
                    end = time.time()
                    self.busy_s += end - start
                    last_done = end
                    bar.update()
                    if outcome.status == "failed":
                        self.log(f"trial {trial_id} failed: {outcome.error[:200]}")
                    value = outcome.fitness if outcome.status == "complete" else self.config.failed_fitness
                    if gi == self.gen.index:
                        self.gen.finished.append((k, trial_id, value))
                        self._maybe_close()
                    idle.append(worker)
                if self.ex.timeout_s is not None:
                    for ref, (worker, gi, k, trial_id, start) in list(pending.items()):
                        if time.time() - start > self.ex.timeout_s:
                            self.log(f"trial {trial_id} ran past {self.ex.timeout_s}s; worker replaced, re-queued")
                            pending.pop(ref)
                            ray.kill(worker)
                            self._requeue(gi, k, trial_id)
                            idle.append(self._spawn())
        finally:
            bar.close()
        if first_dispatch and last_done and last_done > first_dispatch:
            utilisation = self.busy_s / (self.n_workers * (last_done - first_dispatch))
            store.set_meta("ray_utilisation", f"{utilisation:.4f}")
            store.set_meta("ray_span_s", f"{last_done - first_dispatch:.4f}")
            self.log(f"worker utilisation {100 * utilisation:.1f}% over {last_done - first_dispatch:.1f}s "
                     f"with {self.n_workers} workers")

    def _requeue(self, generation: int, ask_index: int | None, trial_id: int) -> None:
        if ask_index is None:  # a validation: it runs again on another worker
            t = self.store.trial(trial_id)
            self.to_validate.appendleft((trial_id, list(t.genes)))
            return
        if generation == self.gen.index:
            self.gen.queue.appendleft(ask_index)
        else:  # a straggler of a closed generation: still evaluated, so no trial is lost
            self.retry.append((generation, ask_index, trial_id, np.array(self.store.trial(trial_id).genes)))

"""The search driver: ask a generation, hand its candidates to an executor, record each result, close the
generation (tell, validate), until the budget ends; resume by restoring the optimiser. The same driver runs every executor and
every search space: it only sees genes, trials and outcomes.

Resume: the optimiser is rebuilt from its seed and every finished generation fed to it again (each re-asked in
its recorded order and told exactly what it was told), so the resumed run proposes what the uninterrupted run
would have; trials already finished are taken from the store, never evaluated twice. Steady state (executors
with several slots): when every candidate of the open generation is handed out and a slot is free, the
optimiser draws one extra sample from the same, not yet updated distribution; the generation is told the first
`popsize` candidates to finish, later finishers are recorded but not told.

Trial ids number the trials in the order they were created; a trial keeps its id when it is re-run (a lost
worker, or the trial a killed run left running), and its place in its generation is its `ask_index`.

Starting a run (checks, the store, the executor) is search/loop/run.py; subset fitness's and racing's decisions
are their policies' (search/economy/subset.py, evaluators/racing.py). What stays here is one state machine, the
open generation and its jobs, whose methods share that state: ~450 lines, kept in one file on purpose.
"""

from __future__ import annotations

import json
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

from evomerge.core.errors import UserError
from evomerge.search.loop.executors import Job, Lost, Outcome
from evomerge.search.optimize import pareto
from evomerge.search.optimize.optimizers import Optimizer
from evomerge.search.space.spaces import SearchSpace
from evomerge.search.records.store import SCORED, RunStore, Trial, meta_key


def restore_optimizer(opt: Optimizer, store: RunStore, failed_fitness: float) -> int:
    """Bring a fresh optimiser to the state after the finished generations; returns the next generation.
    (Not `evomerge replay`, economy/replay.py, which replays a finished run under other economy settings.)

    Each generation is re-asked in its recorded order (the initial population, then any steady-state extras) and
    told exactly the trials it was told, so the optimiser ends in the interrupted run's state.
    """
    done = {g["generation"] for g in store.generations()}
    gen = 0
    while gen in done:
        trials = store.generation_trials(gen)
        asked = dict(enumerate(opt.ask()))
        pop = opt.popsize  # read each generation: a restarted CMA-ES changes its population
        for t in trials:
            k = t.ask_index if t.ask_index is not None else trials.index(t)
            if k >= pop:
                asked[k] = opt.ask_extra()
            if k not in asked or not np.allclose(asked[k], t.genes, rtol=0, atol=1e-12):
                raise UserError(f"restoring generation {gen} did not reproduce trial {t.id}; "
                                "the run cannot be resumed with this optimiser", str(store.folder))
        told = sorted((t for t in trials if t.told is not None), key=lambda t: t.told) or trials[:pop]
        tell(opt, store, told, failed_fitness)
        gen += 1
    return gen


def tell(opt: Optimizer, store: RunStore, trials: list[Trial], failed: float) -> None:
    """Tell the optimiser a generation's trials: their fitness, or for a multi-objective optimiser their
    objective vectors (each fitness entry's metric; `failed` for each where a trial has none) and constraint
    violations."""
    xs = [np.array(t.genes) for t in trials]
    if not getattr(opt, "multi_objective", False):
        opt.tell(xs, [fitness_of(t, failed) for t in trials])
        return
    objs, constraints = pareto.for_run(store)
    vectors = [pareto.vector(t.scores, objs) if t.status in SCORED else None for t in trials]
    opt.tell(xs, [v if v is not None else [failed] * len(objs) for v in vectors],
             [pareto.violation(t.scores if t.status in SCORED else None, constraints) for t in trials])


def fitness_of(trial: Trial | None, failed: float) -> float:
    """What the optimiser is told for a trial: its fitness (a raced-out trial's estimate; for a subset-scored
    trial the estimate, even after its full-set check), or `failed_fitness` (CMA-ES uses only ranks)."""
    if trial is None or trial.status not in SCORED:
        return failed
    return trial.estimate if trial.estimate is not None else trial.fitness




@dataclass
class _Generation:
    index: int
    asked: dict[int, np.ndarray]  # ask index -> genes (0..popsize-1, then steady-state extras)
    queue: deque = field(default_factory=deque)  # ask indices waiting for a slot
    trial_of: dict[int, int] = field(default_factory=dict)  # ask index -> trial id, once created
    finished: list[tuple[int, int, float]] = field(default_factory=list)  # (ask index, trial id, fitness)
    full: list[float] = field(default_factory=list)  # fitness of its trials scored on every problem (racing's cut)
    extending: int = 0  # subset growth: extension jobs of this generation not back yet (it closes after them)


class Driver:
    def __init__(self, space: SearchSpace, opt: Optimizer, store: RunStore, executor, validate: bool,
                 progress: bool, log, n_items: int | None = None, trackers=None):
        self.space, self.opt, self.store, self.executor, self.log = space, opt, store, executor, log
        self.config = space.config
        self.budget, self.failed = self.config.budget, self.config.failed_fitness
        self.validate, self.progress = validate, progress
        self.n_items = n_items  # subset fitness: how many problems the fitness has
        self.subset = None  # subset fitness's decisions (economy/subset.py), shared with `evomerge replay`
        if self.config.subset is not None:
            from evomerge.search.economy.subset import SubsetPolicy

            self.subset = SubsetPolicy(self.config.subset, n_items, opt.popsize, self.budget.max_trials)
        if trackers is None:
            from evomerge.search.records.tracking import Trackers

            trackers = Trackers([], log)
        self.trackers = trackers
        self.steady = False
        self.retry: deque[Job] = deque()  # lost stragglers of closed generations
        self.to_validate: deque[Job] = deque()  # each closed generation's best, for the validation set

    def run(self) -> Trial | None:
        store, budget, pop = self.store, self.budget, self.opt.popsize
        gen = restore_optimizer(self.opt, store, self.failed)
        if gen:
            self.log(f"resumed after {gen} finished generations ({store.count('complete')} complete, "
                     f"{store.count('failed')} failed trials)")
        names = self.space.names
        self.log(f"genome: {len(names)} genes ({', '.join(names[:6])}{', ...' if len(names) > 6 else ''}); "
                 f"population {pop}; budget {budget.max_trials} trials")
        self.gen = self._open(gen)
        for g in range(gen):  # on resume: closed generations whose best has no validation or full-set check yet
            if self._checks_each_generation():
                self._queue_check(g)
            if self.validate:
                self._queue_validation(g)
        self.executor.start(self.log)
        steady_asked = self.config.executor.steady_state and self.executor.slots > 1
        self.steady = steady_asked and type(self.opt).ask_extra is not Optimizer.ask_extra
        if steady_asked and not self.steady:
            self.log(f"{type(self.opt).__name__} cannot draw extra samples: workers wait at generation ends")
        t0 = time.time()
        dispatched = store.next_id()  # trials created so far; re-running a trial does not count again
        finished = sum(store.count(s) for s in ("failed", *SCORED))
        self.bar = tqdm(total=budget.max_trials, initial=min(finished, budget.max_trials), desc="trials",
                        unit="trial", disable=not self.progress, dynamic_ncols=True)
        self.best = store.best()
        self.final_queued = False
        self.scored = {}  # candidate (YAML) -> the trial that scored it: no candidate is scored twice
        for t in store.trials("complete"):
            if t.duplicate_of is None:
                self.scored.setdefault(t.recipe, t.id)
        in_flight = 0
        if len(self.gen.finished) >= pop:  # resumed with all its trials in: extensions still owed, or the close
            self._settle()
        try:
            while True:
                stop = (dispatched >= budget.max_trials
                        or (budget.max_generations is not None and self.gen.index >= budget.max_generations)
                        or (budget.max_minutes is not None and (time.time() - t0) / 60 > budget.max_minutes))
                while in_flight < self.executor.slots and (self.to_validate or self.retry):
                    self.executor.submit((self.to_validate or self.retry).popleft())
                    in_flight += 1
                while in_flight < self.executor.slots:
                    job = self._next_job(stop)
                    if job is None:
                        break
                    dispatched += job.new
                    stop = stop or dispatched >= budget.max_trials
                    if job.kind == "duplicate":  # scored before: its result is recorded, nothing runs
                        self._finished(job, "complete", store.trial(job.trial_id).fitness)
                        continue
                    self.executor.submit(job)
                    in_flight += 1
                if in_flight == 0:
                    if self._queue_final_checks():  # subset fitness, `check: final`: the finalists, in full
                        continue
                    break
                for job, result in self.executor.wait(1.0):
                    in_flight -= 1
                    self._done(job, result)
        finally:
            self.bar.close()
            self.executor.close(store, self.log)
        return self._finish()

    def _next_job(self, stop: bool) -> Job | None:
        """The open generation's next candidate (a re-queued one even when the budget has ended), a
        steady-state extra, or None."""
        g, pop = self.gen, self.opt.popsize
        if g.queue and (not stop or g.queue[0] in g.trial_of):
            k = g.queue.popleft()
        elif stop:
            return None
        elif self.steady and len(g.asked) < 4 * pop:
            k = max(g.asked) + 1
            g.asked[k] = self.opt.ask_extra()
        else:
            return None
        x = g.asked[k]
        trial_id = g.trial_of.get(k)
        if trial_id is not None:  # created before (a lost job, or the trial a killed run left running)
            return Job("evaluate", trial_id, [float(v) for v in x], g.index, k, cut=self._cut(),
                       anchors=self._anchors(g.index))
        trial_id = g.trial_of[k] = self.store.next_id()
        candidate = self.space.candidate(x)  # built once: recorded here, applied by the executor
        text = candidate.to_yaml()
        self.store.start_trial(trial_id, g.index, [float(v) for v in x], self.space.values(x), text, ask_index=k)
        twin = self.scored.get(text)
        if twin is not None:  # the same candidate (after the genome's clipping and rounding) was scored already
            t = self.store.trial(twin)
            self.store.finish_trial(trial_id, t.fitness, t.scores, 0.0, 0.0, duplicate_of=twin)
            return Job("duplicate", trial_id, [float(v) for v in x], g.index, k, new=True)
        return Job("evaluate", trial_id, [float(v) for v in x], g.index, k, candidate=candidate, new=True,
                   cut=self._cut(), anchors=self._anchors(g.index))

    def _cut(self) -> float | None:
        """Racing's threshold for the next candidate (evaluators/racing.py: parents_cut)."""
        from evomerge.evaluators.racing import parents_cut

        return parents_cut(self.gen.full, self.opt.popsize) if self.config.racing is not None else None

    def _done(self, job: Job, result: Outcome | Lost) -> None:
        store = self.store
        for note in getattr(result, "notes", None) or []:
            self.log(f"warning: {note}")
            store.add_note("self_check", note)
        if isinstance(result, Lost):
            self.log(f"{'validation of ' if job.kind == 'validate' else ''}trial {job.trial_id}: {result}; "
                     "re-queued")
            self._requeue(job)
            return
        if result.status == "error":
            raise UserError(result.error)
        if job.kind == "validate":
            if result.status == "complete":
                store.set_validation(job.trial_id, result.fitness, result.scores, result.eval_s)
                self.log(f"validation of trial {job.trial_id}: {result.fitness:.4g}")
            else:
                self.log(f"validation of trial {job.trial_id} failed: {(result.error or '')[:200]}")
            return
        if job.kind == "extend":  # subset growth: a trial of the open generation, scored on more problems
            if result.status in SCORED:
                store.extend(job.trial_id, result.fitness, result.scores, len(job.anchors[0]), result.eval_s)
            else:
                store.fail_trial(job.trial_id, f"scoring it on more problems failed: {result.error}")
                self.log(f"trial {job.trial_id}: scoring it on more problems failed: {(result.error or '')[:200]}")
            g = self.gen
            g.extending -= 1
            if g.extending == 0:
                g.finished = [(k, tid, fitness_of(store.trial(tid), self.failed)) for k, tid, _ in g.finished]
                self._settle()
            return
        if job.kind == "check":  # subset fitness: a generation's best, now scored on every problem
            if result.status == "complete":
                estimate = store.trial(job.trial_id).fitness
                store.promote(job.trial_id, result.fitness, result.scores, result.race, result.eval_s)
                self.log(f"generation {job.generation}: trial {job.trial_id} estimated {estimate:.4g}, full set "
                         f"{result.fitness:.4g} (error {estimate - result.fitness:+.3g})")
                if self.best is None or result.fitness > self.best.fitness:
                    self.best = store.trial(job.trial_id)
                if self.validate:
                    self._queue_validation(job.generation)
            else:
                self.log(f"the full-set check of trial {job.trial_id} failed: {(result.error or '')[:200]}")
            return
        if result.status in SCORED:
            store.finish_trial(job.trial_id, result.fitness, result.scores, result.merge_s, result.eval_s,
                               race=result.race)
            if result.status == "complete":
                self.scored.setdefault(store.trial(job.trial_id).recipe, job.trial_id)
        else:
            store.fail_trial(job.trial_id, result.error, result.merge_s)
            self.log(f"trial {job.trial_id} failed: {(result.error or '')[:200]}")
        self._finished(job, result.status, result.fitness)

    def _finished(self, job: Job, status: str, fitness: float | None) -> None:
        """A trial of `job` is recorded: progress, best so far, trackers, and its place in its generation."""
        self.trackers.trial(self.store.trial(job.trial_id))
        if status == "complete" and (self.best is None or fitness > self.best.fitness):
            self.best = self.store.trial(job.trial_id)
        self.bar.update()
        if self.best is not None:
            self.bar.set_postfix(best=f"{self.best.fitness:.4g}", trial=self.best.id)
        if job.generation == self.gen.index:
            value = fitness if status in SCORED else self.failed
            self.gen.finished.append((job.ask_index, job.trial_id, value))
            if status == "complete":
                self.gen.full.append(fitness)
            if len(self.gen.finished) >= self.opt.popsize:
                self._settle()

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
            if t is not None and t.status in ("failed", *SCORED):
                g.finished.append((k, t.id, fitness_of(t, self.failed)))
                if t.status == "complete":
                    g.full.append(t.fitness)
            else:
                g.queue.append(k)
        return g

    def _close(self) -> None:
        """Tell the optimiser the first `popsize` finishers, remember which, record the generation, queue its
        best for validation, and open the next generation."""
        g, store = self.gen, self.store
        told = g.finished[:self.opt.popsize]
        values = [v for _, _, v in told]
        if getattr(self.opt, "multi_objective", False):
            tell(self.opt, store, [store.trial(tid) for _, tid, _ in told], self.failed)
        else:
            self.opt.tell([g.asked[k] for k, _, _ in told], values)
        store.mark_told([tid for _, tid, _ in told])
        store.finish_generation(g.index, self.opt.snapshot(), values)
        best = store.best()
        if best is not None:
            store.write_best_recipe(best)
        summary = {"best": max(values), "mean": float(np.mean(values))}
        if best is not None:
            summary["best_so_far"] = best.fitness
        self.trackers.generation(g.index, summary)
        self.log(f"generation {g.index}: best {max(values):.4g}, mean {np.mean(values):.4g}"
                 + (f"; best so far {best.fitness:.4g} (trial {best.id})" if best else ""))
        if self.validate:
            self._queue_validation(g.index)
        if self._checks_each_generation():
            self._queue_check(g.index)
        self.gen = self._open(g.index + 1)

    def _settle(self) -> None:
        """The open generation has its `popsize` finishers. With `subset.grow` its told trials are first scored on
        whatever more problems they still lack (a resumed run), or on `step` new ones while the generation scores
        too little and the budget allows; then it closes."""
        g = self.gen
        if g.extending:
            return
        jobs = self._extensions(g)
        if jobs:
            g.extending = len(jobs)
            self.to_validate.extend(jobs)  # ahead of the next generation (which waits for this one's close)
            return
        self._close()

    def _extensions(self, g: _Generation) -> list[Job]:
        policy = self.subset
        if policy is None or policy.config.grow is None or not policy.estimated(g.index):
            return []
        trials = [self.store.trial(tid) for _, tid, _ in g.finished[:self.opt.popsize]]
        scored = [t for t in trials if t.status == "estimated" and t.duplicate_of is None]
        if not scored:
            return []
        anchors = self._all_anchors(g.index)
        if all(t.items_used >= len(anchors) for t in scored):
            weight = self.config.fitness[0].weight
            total = sum(t.fitness / weight * t.items_used for t in scored)  # the item values, summed
            first = 0 if policy.estimated(0) else 1
            sizes = [len(self._all_anchors(h)) for h in range(first, g.index + 1)]
            if not policy.wants_more(total, sizes):
                return []
            anchors = self._add_anchors(g.index, anchors)
            self.log(f"generation {g.index}: its candidates scored {total:.3g} in all on "
                     f"{len(anchors) - policy.config.grow.step} problems each; {policy.config.grow.step} more "
                     "problems each")
        jobs = []
        for t in scored:
            owed = anchors[t.items_used:]  # the problems this trial has not been scored on yet, equally weighted
            if owed:
                jobs.append(Job("extend", t.id, list(t.genes), g.index, t.ask_index,
                                anchors=(owed, [1.0 / len(owed)] * len(owed))))
        return jobs

    def _all_anchors(self, gen: int) -> list[int]:
        """Generation `gen`'s problems: its subset, then any problems growth added (in the store)."""
        first = self._anchors(gen)
        extra = json.loads(self.store.get_meta(meta_key("grown", gen)) or "[]")
        return list(first[0]) + extra if first else []

    def _add_anchors(self, gen: int, anchors: list[int]) -> list[int]:
        """The policy's next problems for generation `gen`, kept in the store before any job uses them (a resumed
        run extends with the same)."""
        new = self.subset.more(anchors, gen)
        extra = json.loads(self.store.get_meta(meta_key("grown", gen)) or "[]") + new
        self.store.set_meta(meta_key("grown", gen), json.dumps(extra))
        return anchors + new

    def _checks_each_generation(self) -> bool:
        return self.subset is not None and self.subset.checks_each_generation

    def _queue_final_checks(self) -> bool:
        """Subset fitness with `check: final`, once the search itself is done: the policy's finalists are scored on
        every problem (a resumed run queues only those not yet checked). True if anything was queued."""
        if self.subset is None or self.subset.checks_each_generation or self.final_queued:
            return False
        self.final_queued = True
        scored = [t for t in self.store.trials() if t.status in ("complete", "estimated")]
        # by estimate, even for a finalist checked before a resume
        rows = [(fitness_of(t, self.failed), t.id, t.generation, t.duplicate_of is not None) for t in scored]
        chosen, note = self.subset.finalists(rows)
        if note is not None:
            self.log(note)
        for tid in chosen:
            self._queue_full_score(self.store.trial(tid))
        if self.to_validate:
            self.log(f"scoring {len(self.to_validate)} finalist(s) on every problem")
        return bool(self.to_validate)

    def _queue_check(self, gen: int) -> None:
        """Subset fitness: the generation's best by estimate is scored on every problem next."""
        done = [t for t in self.store.generation_trials(gen) if t.status in ("complete", "estimated")]
        if done:
            best = self.subset.best_of([(fitness_of(t, self.failed), t.id) for t in done])
            self._queue_full_score(self.store.trial(best))

    def _queue_full_score(self, trial: Trial) -> None:
        """An estimated trial is scored on every problem next (one checked already is not scored again)."""
        if trial.status == "estimated":
            self.to_validate.append(Job("check", trial.id, list(trial.genes), trial.generation))

    def _anchors(self, gen: int) -> tuple[list[int], list[float]] | None:
        """Subset fitness: generation `gen`'s anchor problems and weights, chosen by the policy from the item
        results of every candidate scored on the full set so far, once (kept in the store, so a resumed run uses
        the same)."""
        if self.subset is None or not self.subset.estimated(gen):
            return None
        key = meta_key("anchors", gen)
        text = self.store.get_meta(key)
        if text is None:
            results = [dict(enumerate(t.item_values)) for t in self.store.trials("complete") if t.item_values]
            text = json.dumps(self.subset.anchors(gen, results))
            self.store.set_meta(key, text)
        anchors, weights = json.loads(text)
        return anchors, weights

    def _queue_validation(self, gen: int) -> None:
        """The generation's best finished trial, scored on the validation set by the next free slot (the paper
        keeps the best-validation snapshot)."""
        done = [t for t in self.store.generation_trials(gen) if t.status == "complete"]
        if done:
            top = max(done, key=lambda t: (t.fitness, -t.id))
            if top.val_fitness is None:
                self.to_validate.append(Job("validate", top.id, list(top.genes), gen))

    def _requeue(self, job: Job) -> None:
        if job.kind in ("validate", "check", "extend"):  # it runs again in another slot
            self.to_validate.appendleft(job)
        elif job.generation == self.gen.index:
            self.gen.queue.appendleft(job.ask_index)
        else:  # a straggler of a closed generation: still evaluated, so no trial is lost
            self.retry.append(job)

    def _finish(self) -> Trial | None:
        best = self.store.result()
        if best is None:
            self.log(f"no trial completed ({self.store.count('failed')} failed): the run has no best")
            return None
        path = self.store.write_best_recipe(best)
        val = f", validation {best.val_fitness:.6g}" if best.val_fitness is not None else ""
        self.log(f"best: trial {best.id}, fitness {best.fitness:.6g}{val}")
        shown = list(best.params.items())[:12]
        more = f", ... ({len(best.params) - 12} more)" if len(best.params) > 12 else ""
        self.log("  " + ", ".join(f"{k}={v:.4f}" for k, v in shown) + more)
        self.log(f"  recipe: {path}")
        return best

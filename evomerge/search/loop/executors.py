"""Where candidates run. The driver (driver.py) decides what runs; an executor only runs it.

A job is one trial to score (kind evaluate), a trial to score on the validation set (validate), or a subset-scored
generation best to score on every problem (check). An executor has `slots` (how many jobs
run at once), takes jobs with `submit`, and hands back finished ones from `wait`. The local executor runs each job
in this process as it is submitted; the Ray executor (ray_executor.py) runs them on actors. Both score a
candidate with `evaluate`, so a trial means the same wherever it ran.
"""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from evomerge.core.errors import UserError


@dataclass
class Job:
    # evaluate | validate | check | extend (subset growth: more anchors) | duplicate (scored before: recorded only)
    kind: str
    trial_id: int
    genes: list[float]
    generation: int = -1
    ask_index: int | None = None
    candidate: Any = None  # the driver's, for a new trial; else the executor builds it from the genes
    cut: float | None = None  # racing: the fitness this candidate must be able to reach (None: score it all)
    anchors: tuple[list[int], list[float]] | None = None  # subset fitness: the problems to score, their weights
    new: bool = False  # a trial created for this job (counts against the budget)


@dataclass
class Outcome:
    status: str  # complete | raced | estimated | failed | error (a UserError: the run stops)
    fitness: float | None
    scores: dict
    error: str | None
    merge_s: float | None = None
    eval_s: float | None = None
    notes: list[str] | None = None  # self-check fallbacks that happened before this job ran (recorded with the run)
    race: dict | None = None  # item record: items used, total, estimate, bound, raced (out), item values


class Lost(Exception):
    """The worker running a job died or hung; the driver re-queues the job."""


def evaluate(live, score, candidate) -> Outcome:
    """Apply one candidate to the live model and score it with `score(model, tokenizer) -> (fitness, scores,
    item record or None)`; failures are outcomes, not exceptions."""
    from evomerge.runtime.live import CandidateError

    t0 = time.perf_counter()
    merge_s = None
    race = None
    try:
        live.apply(candidate)
        merge_s = time.perf_counter() - t0
        value, scores, race = score(live.model, live.tokenizer)
        if not np.isfinite(value):
            raise CandidateError(f"fitness is {value}")
    except UserError as e:  # bad input that only a candidate reveals: the run stops, naming it
        return Outcome("error", None, {}, str(e), merge_s)
    except Exception as e:  # a failed candidate is data, not the end of the search
        free_memory()
        return Outcome("failed", None, {}, f"{type(e).__name__}: {e}", merge_s)
    status = "raced" if race and race.get("raced") else "estimated" if race and race.get("estimated") else "complete"
    return Outcome(status, value, scores, None, merge_s, time.perf_counter() - t0 - merge_s, race=race)


class Runner:
    """What runs a job wherever it runs (this process, a Ray actor): the space, the live model and the fitness,
    and the GPU path's self-check before the first candidate (`self_check: true`, the default): the fused merge
    kernels against the reference merge, the generation engine against `generate`. A check that fails switches
    this runner to the reference path; the reasons travel back with the job's outcome."""

    def __init__(self, space, live, fitness, validation):
        self.space, self.live, self.fitness, self.validation = space, live, fitness, validation
        self.checked = not space.config.self_check

    def run(self, job: Job) -> Outcome:
        candidate = job.candidate if job.candidate is not None else self.space.candidate(np.array(job.genes))
        notes = None
        if not self.checked:
            self.checked = True
            notes = self.self_check(candidate)
        outcome = evaluate(self.live, self.scorer(job), candidate)
        outcome.notes = notes
        return outcome

    def scorer(self, job: Job):
        """How this job is scored: the validation set; every problem one by one (item results kept); racing
        against the job's cut; the job's anchor problems (subset fitness); or the plain fitness."""
        config, fitness = self.space.config, self.fitness
        if job.kind == "validate":
            return lambda m, t: (*self.validation.score(m, t), None)
        if config.racing is not None and job.kind == "evaluate":
            return lambda m, t: fitness.score_raced(m, t, job.cut, config.racing)
        if config.subset is not None and job.anchors is not None:
            return lambda m, t: fitness.score_subset(m, t, *job.anchors, config.subset.signal)
        if config.subset is not None:  # the first generation and each generation's check: the full set
            return lambda m, t: fitness.score_raced(m, t, None)
        return lambda m, t: (*fitness.score(m, t), fitness.item_record())

    def self_check(self, candidate) -> list[str]:
        notes = []
        check_fused = getattr(self.live, "check_fused", None)
        if check_fused is not None:
            why = check_fused(candidate)
            if why:
                notes.append(why)
        try:
            self.live.apply(candidate)
        except Exception:
            return notes  # the candidate itself fails; `evaluate` records that
        for fitness in (self.fitness, self.validation):
            if fitness is not None:
                notes += fitness.check_generation(self.live.model, self.live.tokenizer)
        return notes


def free_memory() -> None:
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:
        pass


class LocalExecutor:
    """One job at a time, in this process, on the live model the driver built."""

    slots = 1

    def __init__(self, space, live, fitness, validation):
        self.runner = Runner(space, live, fitness, validation)
        self._done: list[tuple[Job, Outcome]] = []

    def start(self, log) -> None:
        pass

    def submit(self, job: Job) -> None:
        self._done.append((job, self.runner.run(job)))

    def wait(self, timeout: float) -> list[tuple[Job, Outcome | Lost]]:
        done, self._done = self._done, []
        return done

    def close(self, store, log) -> None:
        pass

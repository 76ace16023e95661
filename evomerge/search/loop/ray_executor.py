"""Scoring candidates on Ray actors: one actor per GPU (or group of GPUs), each holding the sources once.

The driver (driver.py) decides what runs and keeps every slot busy (steady-state extras, see there); this module
only runs jobs. The driver's run store stays the only source of truth: a worker that dies, or runs past
`timeout_s`, is replaced and its job handed back to the driver as lost, which re-queues it. A job's time starts when a
ready worker takes it: a replacement loads its sources first, and on a busy machine that alone can outlast a short
`timeout_s` (counting it replaced the replacement, for ever). With one worker and strict generations a Ray run
equals a local run, trial for trial.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections import deque
from typing import Any

from evomerge.core.errors import UserError
from evomerge.search.loop.executors import Job, Lost, Outcome


def _worker_class(gpus: float, cpus: float):
    import ray

    @ray.remote(num_gpus=gpus, num_cpus=cpus, max_restarts=0)
    class Worker:
        """Loads the sources and the fitness data once, then scores jobs on its live model."""

        def __init__(self, config_json: str):
            from evomerge.evaluators import Fitness
            from evomerge.sources.models import ModelPool
            from evomerge.search.config import SearchConfig
            from evomerge.search.space.spaces import make_space

            from evomerge.search.loop.executors import Runner

            config = SearchConfig.model_validate(json.loads(config_json))
            self.pool = ModelPool()
            space = make_space(config, self.pool)
            validation = Fitness(config.validation, "validation") if config.validation else None
            self.runner = Runner(space, space.live(self.pool), Fitness(config.fitness, "fitness"), validation)

        def ready(self) -> bool:
            return True

        def run(self, job: Job) -> Outcome:
            return self.runner.run(job)

    return Worker


class RayExecutor:
    """`executor: ray`: a pool of actors; `slots` is the number of workers."""

    def __init__(self, config):
        try:
            import ray  # noqa: F401
        except ImportError:
            raise UserError("executor: ray needs Ray: pip install 'evomerge[ray]'") from None
        self.config, self.ex = config, config.executor
        self.slots = self.ex.workers or 0  # known once the cluster is reached (start)
        self.pending: dict[Any, tuple[Any, Job, float]] = {}  # ref -> (worker, job, start)
        self.idle: deque = deque()
        self.queued: deque = deque()  # jobs submitted while every worker is busy or still loading
        self.starting: dict[Any, Any] = {}  # ready() ref -> a replacement worker loading its sources
        self.failed_starts = 0
        self.busy_s = 0.0
        self.first = self.last = None
        self.started_here = False

    def start(self, log) -> None:
        import ray

        self.ray = ray
        self.started_here = not ray.is_initialized()
        if self.started_here:
            ray.init(address=self.ex.address, include_dashboard=False, log_to_driver=False,
                     configure_logging=False)
        gpus = ray.cluster_resources().get("GPU", 0)
        per_worker = max(self.ex.gpus_per_worker, float(self.config.gpus))  # an actor owns a candidate's GPUs
        self.slots = self.ex.workers or (max(1, int(gpus // max(per_worker, 1))) if gpus else 2)
        self.Worker = _worker_class(per_worker if gpus else 0, self.ex.cpus_per_worker)
        self.config_json = json.dumps(self.config.model_dump(mode="json"))
        log(f"starting {self.slots} Ray workers")
        workers = [self.Worker.remote(self.config_json) for _ in range(self.slots)]
        ray.get([w.ready.remote() for w in workers])  # all load their sources in parallel
        self.idle.extend(workers)

    def submit(self, job: Job) -> None:
        if job.kind == "evaluate":
            self.first = self.first or time.time()
        self.queued.append(dataclasses.replace(job, candidate=None))  # the worker rebuilds it from the genes
        self._dispatch()

    def _dispatch(self) -> None:
        while self.queued and self.idle:
            worker, job = self.idle.popleft(), self.queued.popleft()
            self.pending[worker.run.remote(job)] = (worker, job, time.time())

    def _replace(self) -> None:
        """A new worker in a lost one's place; it takes jobs once it has loaded (wait() sees it ready)."""
        worker = self.Worker.remote(self.config_json)
        self.starting[worker.ready.remote()] = worker

    def wait(self, timeout: float) -> list[tuple[Job, Outcome | Lost]]:
        ray, out = self.ray, []
        done, _ = ray.wait([*self.pending, *self.starting], num_returns=1, timeout=timeout)
        for ref in done:
            if ref in self.starting:
                worker = self.starting.pop(ref)
                try:
                    ray.get(ref)
                except ray.exceptions.RayError as e:
                    self.failed_starts += 1
                    if self.failed_starts >= 3:  # the sources cannot load on a worker any more: stop, resumable
                        raise UserError(f"3 replacement Ray workers in a row failed to start (last: {e}); the run "
                                        "is kept: fix the cause and --resume") from e
                    self._replace()
                    continue
                self.failed_starts = 0
                self.idle.append(worker)
                continue
            worker, job, start = self.pending.pop(ref)
            try:
                result = ray.get(ref)
            except ray.exceptions.RayError as e:  # the actor died: replace it (not waited for), re-queue the job
                out.append((job, Lost(f"worker lost ({type(e).__name__})")))
                self._replace()
                continue
            if job.kind == "evaluate":
                end = time.time()
                self.busy_s += end - start
                self.last = end
            out.append((job, result))
            self.idle.append(worker)
        if self.ex.timeout_s is not None:
            for ref, (worker, job, start) in list(self.pending.items()):
                if time.time() - start > self.ex.timeout_s:
                    self.pending.pop(ref)
                    ray.kill(worker)
                    out.append((job, Lost(f"ran past {self.ex.timeout_s}s; worker replaced")))
                    self._replace()
        self._dispatch()
        return out

    def close(self, store, log) -> None:
        if self.first and self.last and self.last > self.first:
            span = self.last - self.first
            utilisation = self.busy_s / (self.slots * span)
            store.set_meta("ray_utilisation", f"{utilisation:.4f}")
            store.set_meta("ray_span_s", f"{span:.4f}")
            log(f"worker utilisation {100 * utilisation:.1f}% over {span:.1f}s with {self.slots} workers")
        if self.started_here:
            self.ray.shutdown()

"""What an evaluator is: typed options, a default metric, and `evaluate(model, tokenizer) -> metrics`.

As in lm-eval, tasks are mostly data (a data file, a prompt, generation settings) plus a small scoring hook.
Every metric is "higher is better" so that fitness is a plain weighted sum.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid")


class VllmOptions(Options):
    """The vLLM engine of an evaluator with `engine: vllm` (or `auto` on a GPU): one engine per worker, built once.
    A candidate larger than one GPU is split over `tensor_parallel_size` GPUs (and `pipeline_parallel_size`
    stages); the merged tensors are pushed to every shard by vLLM's own weight loader."""

    tensor_parallel_size: int = Field(1, ge=1)
    pipeline_parallel_size: int = Field(1, ge=1)
    gpu_memory_utilization: float = Field(0.85, gt=0, le=1)  # the share of each GPU vLLM takes (weights + KV cache)
    enforce_eager: bool | None = None  # None: CUDA graphs on a GPU, eager on the CPU


class Evaluator(ABC):
    name: ClassVar[str]
    Options: ClassVar[type[Options]] = Options
    default_metric: ClassVar[str]
    # the metric names `evaluate` returns, when they are known before it runs (None: they depend on the options,
    # as lm-eval's TASK/METRIC names do); a config naming another metric is refused before anything is written
    metrics: ClassVar[tuple[str, ...] | None] = None

    def __init__(self, options: Options, where: str = ""):
        """Load data here (once per search); `where` names the config entry in error messages."""
        from evomerge.generation.greedy import TokenCount

        self.options = options
        self.tokens = TokenCount()  # what the last `evaluate` spent generating (Fitness.score resets and reads it)

    @abstractmethod
    def evaluate(self, model: Any, tokenizer: Any) -> dict[str, float]:
        """Score a loaded causal LM; returns metric name -> value (higher is better)."""

    # Racing and subset fitness (score problems a chunk or a subset at a time): an evaluator whose metrics come
    # from per-item values overrides these.
    item_range: ClassVar[tuple[float, float] | None] = None  # the range of one item's value: racing's bound needs it
    binary_items: ClassVar[bool] = False  # every item is worth lo or hi (right or wrong): racing's exact bound
    item_metrics: ClassVar[tuple[str, ...] | None] = None  # the metrics estimated from items' values (None: all)

    def num_items(self) -> int:
        raise NotImplementedError(f"{self.name} cannot score problems one by one")

    def score_items(self, model: Any, tokenizer: Any, indices: list[int]) -> list[dict[str, float]]:
        """Each listed item's values (one per metric, plus whatever `aggregate_items` needs)."""
        raise NotImplementedError(f"{self.name} cannot score problems one by one")

    def likelihood_problem(self) -> str | None:
        """Why this evaluator cannot give `reference_items` (None: it can). The reference signals of subset
        fitness (search/config.py `subset.signal`) needs a reference answer per problem."""
        return f"{self.name} has no reference answers to score the likelihood of"

    def reference_items(self, model: Any, tokenizer: Any, indices: list[int]) -> list[dict[str, float]]:
        """Each listed problem's reference continuation, teacher-forced after its prompt: {"logprob": summed
        log-probability (nats), "tokens": its length, "agree": how many of its tokens are the model's greedy pick}
        (evaluators/likelihood.py). Generates nothing."""
        raise NotImplementedError(self.likelihood_problem())

    def scores_items(self, metric: str) -> bool:
        """Whether `metric` can be raced or estimated from items: `score_items` exists and the metric is one whose
        set value follows from its items' values."""
        own = type(self).score_items is not Evaluator.score_items
        return own and (self.item_metrics is None or metric in self.item_metrics)

    def aggregate_items(self, items: list[dict[str, float]]) -> dict[str, float]:
        """The set's metrics from every item's values, in item order: the numbers `evaluate` gives on the same
        items (the mean, unless an evaluator's metric is another function of its items)."""
        return {m: sum(v[m] for v in items) / len(items) for m in items[0]}

    def last_item_values(self, metric: str) -> list[float] | None:
        """Each item's value of `metric` in the last `evaluate`, in item order (kept with the trial, so a run can
        be replayed under racing or subset settings later: evomerge/search/economy/replay.py); None if not known."""
        return None

    def data_fingerprint(self) -> str | None:
        """A hash of the data this evaluator scores on (`evaluators.data.digest`), recorded with a search and
        compared on resume; None if the evaluator has no data of its own to change."""
        return None

    def samples(self) -> list[dict[str, Any]]:
        """One record per item of the last `evaluate` (prompt, answer, what the model said, its scores), so that a
        number can be read back to the answers behind it. Evaluators without items return []."""
        return []

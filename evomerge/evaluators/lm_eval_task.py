"""Any lm-evaluation-harness task, run on the live merged model (needs `pip install evomerge[lm-eval]`)."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from evomerge.core.errors import UserError
from evomerge.evaluators.base import Evaluator, Options


class LmEvalOptions(Options):
    tasks: list[str]
    num_fewshot: int | None = None
    limit: int | float | None = None
    batch_size: int = Field(8, ge=1)
    include_path: str | None = None  # a folder of task YAMLs of your own
    max_length: int | None = None


# per-document metrics that lm-eval aggregates by their mean and that are right or wrong per document
ITEM_METRICS = ("acc", "acc_norm", "exact_match")


class LmEval(Evaluator):
    """Metrics are named TASK/METRIC, e.g. `arc_easy/acc,none`; set `metric:` to the one that counts.

    With one task and an accuracy-like metric, documents are items: racing and subset fitness score chosen
    documents through lm-eval's own `samples=` selection and read each document's result from its logged samples."""

    name = "lm_eval"
    Options = LmEvalOptions
    default_metric = ""  # resolved from the first task's results unless the config names one
    item_range = (0.0, 1.0)
    binary_items = True

    def __init__(self, options: LmEvalOptions, where: str = "lm_eval"):
        super().__init__(options)
        try:
            import lm_eval  # noqa: F401
        except ImportError:
            raise UserError("the lm_eval evaluator needs lm-eval: pip install 'evomerge[lm-eval]'", where) from None
        self._n_items: int | None = None
        self._last_items: list[dict[str, float]] = []

    def scores_items(self, metric: str) -> bool:
        task, _, rest = (metric or "").partition("/")
        return len(self.options.tasks) == 1 and task == self.options.tasks[0] and rest.split(",")[0] in ITEM_METRICS

    def _task_manager(self) -> Any:
        from lm_eval.tasks import TaskManager

        return TaskManager(include_path=self.options.include_path)

    def num_items(self) -> int:
        """The documents `evaluate` scores: the task's evaluation split, cut to `limit` as lm-eval cuts it."""
        if self._n_items is None:
            import math

            from lm_eval.tasks import get_task_dict

            task = self.options.tasks[0]
            n = len(get_task_dict([task], self._task_manager())[task].eval_docs)
            limit = self.options.limit
            if limit is not None:
                n = min(n, int(math.ceil(n * limit)) if isinstance(limit, float) and limit < 1 else int(limit))
            self._n_items = n
        return self._n_items

    def score_items(self, model: Any, tokenizer: Any, indices: list[int]) -> list[dict[str, float]]:
        run = self._run(model, tokenizer, samples={self.options.tasks[0]: sorted(set(indices))}, limit=None)
        return [run["items"][i] for i in indices]

    def data_fingerprint(self) -> str:
        """lm-eval's tasks come with the package (and its dataset revisions), plus any task files of your own."""
        from pathlib import Path

        import lm_eval

        from evomerge.evaluators.data import digest

        own = sorted(Path(self.options.include_path).rglob("*")) if self.options.include_path else []
        return digest(getattr(lm_eval, "__version__", ""), *[(str(p), p.read_bytes()) for p in own if p.is_file()])

    def evaluate(self, model: Any, tokenizer: Any) -> dict[str, float]:
        run = self._run(model, tokenizer, samples=None, limit=self.options.limit)
        self._last_items = [run["items"][i] for i in sorted(run["items"])]
        return run["metrics"]

    def last_item_values(self, metric: str) -> list[float] | None:
        ok = self._last_items and all(metric in v for v in self._last_items)
        return [v[metric] for v in self._last_items] if ok else None

    def _run(self, model: Any, tokenizer: Any, samples: dict | None, limit: Any) -> dict[str, Any]:
        """lm-eval on the live model: {metrics: TASK/METRIC -> value, items: document -> its TASK/METRIC values
        (one task only)}."""
        import lm_eval
        from lm_eval.models.huggingface import HFLM

        o = self.options
        kwargs = {"max_length": o.max_length} if o.max_length else {}
        lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=o.batch_size, **kwargs)
        one = len(o.tasks) == 1
        out = lm_eval.simple_evaluate(
            model=lm, tasks=o.tasks, num_fewshot=o.num_fewshot, limit=limit, samples=samples,
            task_manager=self._task_manager(), log_samples=one, verbosity="ERROR",
        )
        metrics: dict[str, float] = {}
        for task, values in out["results"].items():
            for key, value in values.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool) and "stderr" not in key:
                    metrics[f"{task}/{key}"] = float(value)
        items: dict[int, dict[str, float]] = {}
        for task, rows in (out.get("samples") or {}).items() if one else ():
            for row in rows:
                items.setdefault(row["doc_id"], {}).update(
                    {f"{task}/{m},{row['filter']}": float(row[m]) for m in row["metrics"] if m in ITEM_METRICS})
        return {"metrics": metrics, "items": items}

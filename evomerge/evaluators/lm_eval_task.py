"""Any lm-evaluation-harness task, run on the live merged model (needs `pip install evomerge[lm-eval]`)."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from evomerge.errors import UserError
from evomerge.evaluators.base import Evaluator, Options


class LmEvalOptions(Options):
    tasks: list[str]
    num_fewshot: int | None = None
    limit: int | float | None = None
    batch_size: int = Field(8, ge=1)
    include_path: str | None = None  # a folder of task YAMLs of your own
    max_length: int | None = None


class LmEval(Evaluator):
    """Metrics are named TASK/METRIC, e.g. `arc_easy/acc,none`; set `metric:` to the one that counts."""

    name = "lm_eval"
    Options = LmEvalOptions
    default_metric = ""  # resolved from the first task's results unless the config names one

    def __init__(self, options: LmEvalOptions, where: str = "lm_eval"):
        super().__init__(options)
        try:
            import lm_eval  # noqa: F401
        except ImportError:
            raise UserError("the lm_eval evaluator needs lm-eval: pip install 'evomerge[lm-eval]'", where) from None

    def data_fingerprint(self) -> str:
        """lm-eval's tasks come with the package (and its dataset revisions), plus any task files of your own."""
        from pathlib import Path

        import lm_eval

        from evomerge.evaluators.data import digest

        own = sorted(Path(self.options.include_path).rglob("*")) if self.options.include_path else []
        return digest(getattr(lm_eval, "__version__", ""), *[(str(p), p.read_bytes()) for p in own if p.is_file()])

    def evaluate(self, model: Any, tokenizer: Any) -> dict[str, float]:
        import lm_eval
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager

        o = self.options
        kwargs = {"max_length": o.max_length} if o.max_length else {}
        lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=o.batch_size, **kwargs)
        results = lm_eval.simple_evaluate(
            model=lm, tasks=o.tasks, num_fewshot=o.num_fewshot, limit=o.limit,
            task_manager=TaskManager(include_path=o.include_path), log_samples=False, verbosity="ERROR",
        )["results"]
        out: dict[str, float] = {}
        for task, metrics in results.items():
            for key, value in metrics.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool) and "stderr" not in key:
                    out[f"{task}/{key}"] = float(value)
        return out

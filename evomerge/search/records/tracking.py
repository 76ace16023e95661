"""Streaming a search to where people watch their runs: TensorBoard event files and Weights & Biases.

Each finished trial (its genes, recipe, every metric, timings, tokens, failure) and each closed generation's
summary go to every configured tracker through its own client library (optional extras: `pip install
'evomerge[tracking]'`). A resumed run continues the same tracked run: TensorBoard appends to the same folder,
W&B resumes the run id kept in the run store. A tracker that fails never stops a search: one warning, and that
tracker is switched off for the rest of the run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from evomerge.core.errors import UserError


class Tracker:
    name = "tracker"

    def trial(self, trial: Any) -> None: ...

    def generation(self, generation: int, summary: dict[str, float]) -> None: ...

    def close(self) -> None: ...


def trial_scalars(trial: Any) -> dict[str, float]:
    """A trial as flat scalars: fitness, every metric, genes, timings, tokens."""
    out: dict[str, float] = {"trial/failed": float(trial.status == "failed")}
    if trial.fitness is not None:
        out["trial/fitness"] = trial.fitness
    for evaluator, metrics in (trial.scores or {}).items():
        for metric, value in metrics.items():
            if isinstance(value, (int, float)):
                out[f"scores/{evaluator}/{metric}"] = float(value)
    for gene, value in (trial.params or {}).items():
        out[f"genes/{gene}"] = float(value)
    for key in ("merge_s", "eval_s", "prompt_tokens", "generated_tokens", "items_used"):
        value = getattr(trial, key, None)
        if value is not None:
            out[f"trial/{key}"] = float(value)
    return out


class TensorBoard(Tracker):
    name = "tensorboard"

    def __init__(self, log_dir: Path):
        self.writer = _summary_writer()(log_dir=str(log_dir))

    def trial(self, trial: Any) -> None:
        for key, value in trial_scalars(trial).items():
            self.writer.add_scalar(key, value, global_step=trial.id)
        self.writer.add_text("trial/recipe", f"```yaml\n{trial.recipe}\n```", global_step=trial.id)
        if trial.error:
            self.writer.add_text("trial/error", trial.error, global_step=trial.id)
        self.writer.flush()

    def generation(self, generation: int, summary: dict[str, float]) -> None:
        for key, value in summary.items():
            self.writer.add_scalar(f"generation/{key}", value, global_step=generation)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandB(Tracker):
    name = "wandb"

    def __init__(self, settings: Any, run_dir: Path, store: Any, config: dict):
        wandb = _wandb()
        run_id = store.get_meta("wandb_id")
        self.run = wandb.init(project=settings.project, entity=settings.entity, name=settings.name,
                              mode=settings.mode, dir=str(run_dir), id=run_id, resume="allow", config=config)
        if run_id is None:
            store.set_meta("wandb_id", self.run.id)

    def trial(self, trial: Any) -> None:
        text = {"trial/status": trial.status, "trial/recipe": trial.recipe}
        if trial.error:
            text["trial/error"] = trial.error
        self.run.log({"trial": trial.id, "generation": trial.generation, **trial_scalars(trial), **text})

    def generation(self, generation: int, summary: dict[str, float]) -> None:
        self.run.log({"generation": generation, **{f"generation/{k}": v for k, v in summary.items()}})

    def close(self) -> None:
        self.run.finish()


class Trackers:
    """Every configured tracker behind one call; a failing one warns once and is switched off."""

    def __init__(self, trackers: list[Tracker], log):
        self.trackers, self.log = trackers, log

    def _each(self, method: str, *args) -> None:
        for t in list(self.trackers):
            try:
                getattr(t, method)(*args)
            except Exception as e:
                self.log(f"warning: tracking with {t.name} failed ({type(e).__name__}: {str(e)[:160]}); the search "
                         "goes on without it")
                self.trackers.remove(t)

    def trial(self, trial: Any) -> None:
        self._each("trial", trial)

    def generation(self, generation: int, summary: dict[str, float]) -> None:
        self._each("generation", generation, summary)

    def close(self) -> None:
        self._each("close")


def _summary_writer():
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise UserError("tracking.tensorboard needs TensorBoard: pip install 'evomerge[tracking]'") from None
    return SummaryWriter


def _wandb():
    try:
        import wandb
    except ImportError:
        raise UserError("tracking.wandb needs wandb: pip install 'evomerge[tracking]'") from None
    return wandb


def check_trackers(config: Any) -> None:
    """Refuse a tracker whose package is missing before any model is loaded or the run folder is touched (a
    refused resume must leave the run's stored config as it was)."""
    tracking = config.tracking
    if tracking is not None and tracking.tensorboard:
        _summary_writer()
    if tracking is not None and tracking.wandb is not None:
        _wandb()


def make_trackers(config: Any, run_dir: Path, store: Any, log) -> Trackers:
    tracking = config.tracking
    trackers: list[Tracker] = []
    if tracking is not None and tracking.tensorboard:
        folder = run_dir / "tensorboard" if tracking.tensorboard is True else Path(tracking.tensorboard)
        trackers.append(TensorBoard(folder))
    if tracking is not None and tracking.wandb is not None:
        trackers.append(WandB(tracking.wandb, run_dir, store, json.loads(json.dumps(config.model_dump(mode="json")))))
    return Trackers(trackers, log)

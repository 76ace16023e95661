"""`evomerge status RUN_DIR --watch`: a live terminal view of a search (rich), refreshed until the run ends.

It only reads: the run store (trials, best, failures, what was spent) and the holder named in RUN_DIR/run.lock,
whose process tells whether the search is still running (on this machine; a run held from another machine is
watched until Ctrl-C).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from evomerge.search.records.results import run_status
from evomerge.search.records.store import RunStarting, RunStore, run_is_running


def is_running(run_dir: Path) -> bool:
    return run_is_running(Path(run_dir))


def view(run_dir: Path, recent: int = 8) -> Any:
    """The current state of the run, as one rich renderable."""
    from rich.console import Group
    from rich.progress_bar import ProgressBar
    from rich.table import Table
    from rich.text import Text

    try:
        info = run_status(run_dir)
        with RunStore(Path(run_dir)) as store:
            trials = store.trials()
    except RunStarting:  # watched from the moment the search started: it has recorded nothing yet
        return Text(f"{run_dir}: starting (nothing recorded yet)", style="bold")
    done = info["completed"] + info["failed"] + info["raced"] + info["estimated"]
    running = is_running(Path(run_dir))
    head = Text(f"{run_dir}: {done}/{info['budget']} trials, {info['generations']} generations, "
                + ("running" if running else "not running"), style="bold")
    timed = [t for t in trials if t.eval_s is not None][-10:]
    per = sum((t.merge_s or 0) + t.eval_s for t in timed) / len(timed) if timed else None
    lines = [head, ProgressBar(total=max(info["budget"], 1), completed=min(done, info["budget"]), width=50)]
    best = info["best"]
    lines.append(Text(f"best: trial {best['trial']}, fitness {best['fitness']:.6g}" if best else "best: none yet"))
    spent = info["spent"]
    lines.append(Text(f"time per candidate (last {len(timed)}): {per:.2f} s; " if per is not None else "")
                 + Text(f"spent {spent['merge_s']:.0f} s merging, {spent['eval_s']:.0f} s scoring"
                        + (f", {spent['generated_tokens']} generated tokens" if spent["generated_tokens"] else "")))
    failed = [t for t in trials if t.status == "failed"]
    if failed:
        lines.append(Text(f"{len(failed)} failed; last: trial {failed[-1].id}: {(failed[-1].error or '')[:120]}",
                          style="red"))
    for note in info["self_check"]:
        lines.append(Text(f"self-check: {note}", style="yellow"))
    table = Table("trial", "gen", "status", "fitness", "merge s", "score s", title="recent trials")
    for t in trials[-recent:]:
        table.add_row(str(t.id), str(t.generation), t.status, f"{t.fitness:.5g}" if t.fitness is not None else "-",
                      f"{t.merge_s:.2f}" if t.merge_s is not None else "-",
                      f"{t.eval_s:.2f}" if t.eval_s is not None else "-")
    return Group(*lines, table)


def watch(run_dir: Path, interval: float = 2.0, console: Any = None, max_updates: int | None = None) -> None:
    """Refresh the view every `interval` seconds until the run is no longer running (then show it once more)."""
    from rich.live import Live

    updates = 0
    with Live(view(run_dir), console=console, refresh_per_second=4, transient=False) as live:
        while is_running(Path(run_dir)) and (max_updates is None or updates < max_updates):
            time.sleep(interval)
            live.update(view(run_dir))
            updates += 1
        live.update(view(run_dir))


def watch_json(run_dir: Path, interval: float = 2.0, emit: Any = print, max_updates: int | None = None) -> None:
    """`status --watch --json`: the status as one JSON line per refresh (JSON Lines), the last once the run ended,
    so a script can follow a run the way a person follows the live view."""
    import json

    updates = 0
    while True:
        running = is_running(Path(run_dir))
        try:
            emit(json.dumps({**run_status(run_dir), "running_now": running}))
        except RunStarting:
            emit(json.dumps({"run_dir": str(run_dir), "starting": True, "running_now": running}))
        if not running or (max_updates is not None and updates >= max_updates):
            return
        time.sleep(interval)
        updates += 1

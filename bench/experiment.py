"""A fixed experiment's bookkeeping, shared by the scripts that back issue 42's claims (paper_claims,
composition_fresh, composition_seeds, repeat_search): where each launch ran from, the seconds of each step (summed
over launches, so a resumed run keeps its earlier time), and the report written next to the runs."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def log(text: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {text}", flush=True)


class Experiment:
    """`Experiment(runs, launch=not args.no_run, draw=...)`: records the launch (commit, clean tree, machine, and the
    extra fields given) in RUNS/launches.jsonl; `step` times a step into RUNS/seconds.json; `finish` writes
    RUNS/report.json and report.md with every launch in the report."""

    def __init__(self, runs: Path, launch: bool, **extra: Any) -> None:
        from evomerge.core.provenance import provenance

        self.runs = runs
        self.where = provenance()
        if not self.where["tree_clean"]:
            log(f"note: uncommitted changes ({', '.join((self.where['changed'] or [])[:3])}): "
                "this report backs no claim")
        path = runs / "seconds.json"
        self.seconds: dict[str, float] = json.loads(path.read_text()) if path.exists() else {}
        if launch:  # a resumed run adds a line: where each step's code and configs came from
            with open(runs / "launches.jsonl", "a") as f:
                f.write(json.dumps({**self.where, **extra}) + "\n")

    def step(self, name: str, fn: Callable[[], Any]) -> Any:
        start = time.time()
        result = fn()
        if time.time() - start > 1:  # a step that found its work done is not counted
            self.seconds[name] = self.seconds.get(name, 0.0) + time.time() - start
            (self.runs / "seconds.json").write_text(json.dumps(self.seconds, indent=1))
        return result

    def finish(self, report: dict, to_markdown: Callable[[dict], str]) -> str:
        """Adds every launch to the report, writes report.json and report.md; returns the markdown."""
        launches = self.runs / "launches.jsonl"
        report["launches"] = [json.loads(x) for x in launches.read_text().splitlines()] if launches.exists() else []
        (self.runs / "report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False))
        markdown = to_markdown(report)
        (self.runs / "report.md").write_text(markdown)
        return markdown


def scored_rows(scores: Path) -> dict:
    """Each scored row's model, seconds and file hashes, from the `ROW.meta.json` files a script's `score` writes
    next to the samples: what every report records of the rows it rests on."""
    metas = {p.name.removesuffix(".meta.json"): json.loads(p.read_text()) for p in sorted(scores.glob("*.meta.json"))}
    return {row: {"model": m["model"], "seconds": m["seconds"], "files": m["files"]} for row, m in metas.items()}

"""`evomerge miniature`: the offline reproduction in small, in one command.

Builds (or reuses) the two SmolLM2 specialists, runs the PS search, then the PS+DFS search with the PS result as
model A, evaluates base, specialists, the unoptimised DARE-TIES merge and both evolved models on the held-out
Japanese word problems, and writes the table with seed, date, device and timings. The configs are the ordinary
ones in search/ and tables/ (same schema and code paths as the full-scale runs); `--small` shrinks budgets and
problem counts for a CPU. Re-running continues where it stopped (every run resumes, the table is cached).
"""

from __future__ import annotations

import datetime as dt
import json
import platform
import time
from pathlib import Path

from evomerge.miniature.builtins import builtin_model
from evomerge.search.config import load_search_config, search_config_from_dict
from evomerge.core.resources import package_path
from evomerge.search.loop.run import run_search
from evomerge.reports.table import TableConfig, build_table, load_table_config, to_markdown

RUN_PREFIX = "run:runs/miniature/"
# --small (a 2-core CPU in under an hour, specialists included): fewer trials and fitness problems; the held-out
# table keeps all its problems, since it is what the result is judged on
SMALL = {"ps_trials": 55, "dfs_trials": 32, "limit": 40}


def _override(config, small: bool, device: str | None, budget: int, limit: int | None, where: str):
    data = config.model_dump(mode="json")
    if device:
        data["device"] = device
    if small:
        data["budget"]["max_trials"] = budget
        for ev in data["fitness"]:
            if limit:
                ev["limit"] = limit
    return search_config_from_dict(data, where)


def _point_at(ref: str, out: Path) -> str:
    return f"run:{out}/{ref[len(RUN_PREFIX):]}" if ref.startswith(RUN_PREFIX) else ref


def _search_span(run_dir: Path) -> float:
    """Seconds from the first trial's start to the last trial's end (model loading excluded)."""
    from evomerge.search.records.store import RunStore

    with RunStore(run_dir) as store:
        return store.trial_span()


def _has_run(run_dir: Path) -> bool:
    """Re-running the miniature continues its searches; the first time starts them."""
    from evomerge.search.records.store import DB_NAME

    return (run_dir / DB_NAME).exists()


def run_miniature(out: Path, *, small: bool = False, device: str | None = None, results: Path | None = None,
                  ps_config: Path | None = None, dfs_config: Path | None = None, table_config: Path | None = None,
                  progress: bool = True, log=print) -> str:
    timings: dict[str, float] = {}
    out.mkdir(parents=True, exist_ok=True)
    ps_path = ps_config or package_path("configs/search/miniature-ps.yaml")
    dfs_path = dfs_config or package_path("configs/search/miniature-ps-dfs.yaml")
    table_path = table_config or package_path("configs/tables/miniature.yaml")

    ps = _override(load_search_config(ps_path), small, device, SMALL["ps_trials"], SMALL["limit"], str(ps_path))
    # build (or find cached) the builtin specialists first, so that their cost shows apart from the search's
    start = time.time()
    for ref in ps.template(str(ps_path)).referenced_models():
        if ref.startswith("builtin:"):
            builtin_model(ref.removeprefix("builtin:"))
    timings["specialists (build or cache)"] = time.time() - start
    run_search(ps, out / "ps", resume=_has_run(out / "ps"), progress=progress, log=log)

    dfs = load_search_config(dfs_path).model_dump(mode="json")
    dfs["dataflow"]["model_a"] = _point_at(dfs["dataflow"]["model_a"], out)
    dfs = _override(search_config_from_dict(dfs, str(dfs_path)), small, device, SMALL["dfs_trials"], SMALL["limit"],
                    str(dfs_path))
    run_search(dfs, out / "ps-dfs", resume=_has_run(out / "ps-dfs"), progress=progress, log=log)

    table = load_table_config(table_path).model_dump(mode="json")
    for m in table["models"]:
        m["model"] = _point_at(m["model"], out)
    if device:
        table["device"] = device
    cfg = TableConfig.model_validate(table)
    result = build_table(cfg, out / "table-cache", log=log)

    # timings that survive resumes: searches from their run stores, evaluation from the cached cells
    timings["PS search"] = _search_span(out / "ps")
    timings["PS+DFS search"] = _search_span(out / "ps-dfs")
    timings["evaluation"] = sum(json.loads(p.read_text())["metrics"].get("seconds", 0.0)
                                for p in (out / "table-cache").glob("*.json"))

    import torch

    dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() and device != "cpu" else \
        f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    lines = [
        to_markdown(result, cfg),
        f"- date: {dt.datetime.now(dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- device: {dev}",
        f"- setting: {'small (CPU)' if small else 'full'}; seeds: PS {ps.optimizer.seed}, PS+DFS {dfs.optimizer.seed}; "
        f"budgets: PS {ps.budget.max_trials}, PS+DFS {dfs.budget.max_trials} trials",
        "- timings: " + ", ".join(f"{k} {v / 60:.1f} min" for k, v in timings.items()),
        "",
    ]
    text = "\n".join(lines)
    target = results or out / "RESULTS.md"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text, encoding="utf-8")
    (out / "result.json").write_text(json.dumps({"table": result, "timings": timings}, indent=2))
    return text

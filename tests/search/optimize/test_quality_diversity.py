"""The quality-diversity search (MAP-Elites, CycleQD-style) on the two conflicting objectives of
test_multi_objective: closeness to the `ja` fine-tune and to the `math` one."""

from __future__ import annotations

import json

import numpy as np

from evomerge.search.optimize import pareto
from evomerge.search.optimize.quality_diversity import Archive, archive_of_run
from evomerge.search.records.results import run_status
from evomerge.search.records.store import RunStore
from helpers import cli, search, write
from test_multi_objective import genes_by_trial, mo_config


def qd_config(family, budget=40, **archive):
    cfg = mo_config(family, optimizer="map_elites", budget=budget)
    cfg["archive"] = {"bins": 6, **archive}
    return cfg


def test_each_cell_holds_the_best_trial_that_landed_in_it(family, tmp_path):
    run = tmp_path / "run"
    search(qd_config(family), run)
    with RunStore(run) as store:
        archive, objs = archive_of_run(store)
        done = store.trials("complete")
    assert archive.fixed and all(len(e) >= 3 for e in archive.elites)
    for k in range(2):
        best: dict = {}
        for t in done:
            v = pareto.vector(t.scores, objs)
            c = archive.cell(k, v)
            if c not in best or v[k] > best[c][0]:
                best[c] = (v[k], t.id)
        assert {c: e[1] for c, e in archive.elites[k].items()} == {c: b[1] for c, b in best.items()}
    # the archive fills as the generations go: more cells than the random first generation reached
    first = Archive(2, 6, list(archive.ranges))
    for t in done:
        if t.generation == 0:
            first.add(t.id, np.array(t.genes), pareto.vector(t.scores, objs))
    assert sum(map(len, archive.elites)) > sum(map(len, first.elites))


def test_status_report_export_and_resume(family, tmp_path, capsys):
    whole, split = tmp_path / "whole", tmp_path / "split"
    search(qd_config(family, budget=32), whole)
    search(qd_config(family, budget=16), split)
    search(qd_config(family, budget=32), split, resume=True)
    assert [v[1] for v in genes_by_trial(whole).values()] == [v[1] for v in genes_by_trial(split).values()]
    assert run_status(whole)["archive"] == run_status(split)["archive"]
    assert cli("status", whole) == 0
    assert "archive by fitness_fixtures:TargetDistance#0" in capsys.readouterr().out
    elite = run_status(whole)["archive"][1]["cells"][0]["trial"]
    assert cli("export", whole, tmp_path / "elite", "--trial", elite, "--quiet") == 0
    assert cli("report", whole) == 0
    assert (whole / "report" / "archive.png").exists()


def test_given_ranges_fix_the_grid(family, tmp_path):
    run = tmp_path / "run"
    search(qd_config(family, budget=16, ranges={"fitness_fixtures:TargetDistance#0": [-0.01, 0.0]}), run)
    with RunStore(run) as store:
        archive, _ = archive_of_run(store)
    assert archive.ranges[0] == (-0.01, 0.0)


def test_bad_archive_configs_are_refused(family, tmp_path):
    cma = mo_config(family, optimizer="nsga2")
    cma["archive"] = {"bins": 4}
    bad_key = qd_config(family, ranges={"nope": [0, 1]})
    backwards = qd_config(family, ranges={"fitness_fixtures:TargetDistance#0": [1, 0]})
    for cfg in (cma, bad_key, backwards):
        path = write(tmp_path / "c.yaml", json.dumps(cfg))
        assert cli("search", path, "--run-dir", tmp_path / "never") == 2
        assert not (tmp_path / "never").exists()

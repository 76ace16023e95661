"""The Ray executor on a local cluster: same results as local with one worker, busy workers, no lost trials."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest.importorskip("ray")

from helpers import make_config, search, trials  # noqa: E402

from evomerge.search.records.results import run_status  # noqa: E402
from evomerge.search.records.store import RunStore  # noqa: E402

TESTS = Path(__file__).resolve().parents[2]  # tests/, where fitness_fixtures lives


@pytest.fixture(autouse=True)
def worker_path(monkeypatch):
    """Ray workers are other processes: they must find the test evaluators too."""
    monkeypatch.setenv("PYTHONPATH", f"{TESTS}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")


def ray_config(family, target, workers, budget, **fitness):  # noqa: F811
    cfg = make_config(family, target, {"name": "cma", "seed": 4, "popsize": 8}, budget=budget, **fitness)
    cfg["executor"] = {"name": "ray", "workers": workers, "cpus_per_worker": 0}
    return cfg


def meta(run_dir: Path, key: str) -> float:
    store = RunStore(run_dir)
    try:
        return float(store.get_meta(key))
    finally:
        store.close()


@pytest.mark.parametrize("racing", [False, True], ids=["full", "racing"])
def test_one_worker_equals_the_local_executor(family, target, tmp_path, racing):  # noqa: F811
    local = make_config(family, target, {"name": "cma", "seed": 4, "popsize": 8}, budget=16)
    ray = ray_config(family, target, 1, 16)
    if racing:  # racing decisions travel with the jobs: the same trials stop at the same problem
        for cfg in (local, ray):
            cfg["fitness"] = [{"name": "fitness_fixtures:ItemTarget", "target": str(target)}]
            cfg["racing"] = {"chunk": 4, "min_items": 8, "confidence": 0.9}
    search(ray, tmp_path / "ray")
    search(local, tmp_path / "local")
    assert trials(tmp_path / "ray") == trials(tmp_path / "local")
    if racing:
        statuses = {t[1] for t in trials(tmp_path / "ray")}
        assert "raced" in statuses and "complete" in statuses


def test_validation_runs_on_workers_as_it_does_locally(family, target, tmp_path):  # noqa: F811
    """Each closed generation's best trial is validated by a worker; with one worker and strict generations the
    validation scores equal the local executor's, and the result is the best-validation snapshot."""
    validation = [{"name": "fitness_fixtures:TargetDistance", "target": str(target), "weight": 2.0}]
    cfg = ray_config(family, target, 1, 16)
    cfg["executor"]["steady_state"] = False
    cfg["validation"] = validation
    local = make_config(family, target, {"name": "cma", "seed": 4, "popsize": 8}, budget=16)
    local["validation"] = validation
    search(cfg, tmp_path / "ray")
    search(local, tmp_path / "local")

    def validated(run_dir):
        store = RunStore(run_dir)
        try:
            return sorted((t.id, t.val_fitness) for t in store.trials() if t.val_fitness is not None)
        finally:
            store.close()

    assert len(validated(tmp_path / "ray")) == 2  # one per generation
    assert validated(tmp_path / "ray") == validated(tmp_path / "local")
    keys = ("trial", "fitness", "validation")
    best_ray, best_local = run_status(tmp_path / "ray")["best"], run_status(tmp_path / "local")["best"]
    assert best_ray["validation"] is not None
    assert [best_ray[k] for k in keys] == [best_local[k] for k in keys]


def test_workers_stay_busy_and_throughput_scales(family, target, tmp_path, capsys):  # noqa: F811
    """Evaluators of random duration (0.15-0.6 s): >= 90% busy, and throughput close to linear in workers."""
    rate = {}
    for n in (1, 4):  # (2 and 8 workers scaled as well: 2.0x and 5.6x; each count starts its own cluster)
        budget = 12 * n
        search(ray_config(family, target, n, budget, sleep=[0.15, 0.6]), tmp_path / f"w{n}")
        status = run_status(tmp_path / f"w{n}")
        assert status["completed"] == budget and status["running"] == 0
        util = meta(tmp_path / f"w{n}", "ray_utilisation")
        assert util >= 0.9, f"{n} workers: utilisation {util:.3f}"
        rate[n] = budget / meta(tmp_path / f"w{n}", "ray_span_s")
    with capsys.disabled():
        print("\nthroughput (trials/s) by workers:", {n: round(r, 2) for n, r in rate.items()},
              "speed-up:", {n: round(r / rate[1], 2) for n, r in rate.items()})
    assert rate[4] / rate[1] >= 3.0


def test_a_killed_worker_loses_no_trial(family, target, tmp_path):  # noqa: F811
    calls = tmp_path / "calls"
    cfg = ray_config(family, target, 3, 24, calls_file=str(calls), kill_at_call=7, sleep=[0.05, 0.2])
    search(cfg, tmp_path / "run")
    assert (tmp_path / "calls.killed").exists()  # a worker process really was SIGKILLed mid-run
    status = run_status(tmp_path / "run")
    assert status["completed"] == 24 and status["failed"] == 0 and status["running"] == 0


def test_resume_after_the_driver_is_killed(family, target, tmp_path):  # noqa: F811
    """SIGKILL the driver mid-run; --resume finishes the budget, re-running only the trials that were in flight."""
    import signal
    import sqlite3
    import subprocess
    import sys
    import time

    import yaml

    calls = tmp_path / "calls"
    cfg = ray_config(family, target, 3, 32, sleep=[0.2, 0.4], calls_file=str(calls))
    cfg_file = tmp_path / "search.yaml"
    cfg_file.write_text(yaml.safe_dump(cfg))
    cmd = [sys.executable, "-m", "evomerge", "search", str(cfg_file), "--run-dir", str(tmp_path / "run"), "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    db = tmp_path / "run" / "run.sqlite"
    deadline = time.time() + 120
    done = 0
    while time.time() < deadline and done < 10:
        time.sleep(0.3)
        if db.exists():
            with sqlite3.connect(db) as con:
                done = con.execute("SELECT COUNT(*) FROM trials WHERE status='complete'").fetchone()[0]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert 10 <= done < 32
    resumed = subprocess.run(cmd + ["--resume"], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    status = run_status(tmp_path / "run")
    assert status["completed"] == 32 and status["running"] == 0
    assert 32 <= int(calls.read_text()) <= 32 + 3  # only the (at most 3) in-flight trials ran twice


def test_a_hung_candidate_is_requeued_after_the_timeout(family, target, tmp_path):  # noqa: F811
    calls = tmp_path / "calls"
    cfg = ray_config(family, target, 2, 8, calls_file=str(calls), hang_calls=[3])
    cfg["executor"]["timeout_s"] = 4
    search(cfg, tmp_path / "run")
    assert meta(tmp_path / "run", "ray_span_s") < 60  # nobody waited for the 120 s hang
    status = run_status(tmp_path / "run")
    assert status["completed"] == 8 and status["running"] == 0
    assert int(calls.read_text()) == 9  # the hung candidate ran again on a fresh worker


def test_a_replacement_slower_to_load_than_the_timeout_still_runs_its_job(family, target, tmp_path):  # noqa: F811
    """A job's time starts when a loaded worker takes it. Here every worker loads for 6 s and a job may run 4: the
    hung candidate's replacement worker must not time out while loading (before, it was killed, replaced and
    killed again for ever; the subprocess's limit turns that into a failure, not a hung suite)."""
    import subprocess
    import sys

    import yaml

    calls = tmp_path / "calls"
    cfg = ray_config(family, target, 2, 8, calls_file=str(calls), hang_calls=[3], load_s=6.0)
    cfg["executor"]["timeout_s"] = 4
    (tmp_path / "search.yaml").write_text(yaml.safe_dump(cfg))
    cmd = [sys.executable, "-m", "evomerge", "search", str(tmp_path / "search.yaml"), "--run-dir",
           str(tmp_path / "run"), "--quiet"]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    except subprocess.TimeoutExpired:
        pytest.fail("the search did not finish in 240 s: a loading replacement worker timed out again and again")
    assert done.returncode == 0, done.stderr[-2000:]
    status = run_status(tmp_path / "run")
    assert status["completed"] == 8 and status["running"] == 0
    assert int(calls.read_text()) == 9  # the hung candidate ran again, once, on the loaded replacement


def test_a_multi_objective_search_runs_on_workers_as_it_does_locally(family, tmp_path):  # noqa: F811
    """NSGA-II through the Ray executor: the driver tells the optimiser the objective vectors, the workers only
    score; one worker gives the local run's trials."""
    import sys

    sys.path.insert(0, str(Path(__file__).parents[1] / "optimize"))
    from test_multi_objective import genes_by_trial, mo_config

    local = mo_config(family, budget=16)
    ray = mo_config(family, budget=16)
    ray["executor"] = {"name": "ray", "workers": 1, "cpus_per_worker": 0}
    search(ray, tmp_path / "ray")
    search(local, tmp_path / "local")
    a, b = genes_by_trial(tmp_path / "ray"), genes_by_trial(tmp_path / "local")
    assert [v[1] for v in a.values()] == [v[1] for v in b.values()]
    assert run_status(tmp_path / "ray")["front"]["members"] == run_status(tmp_path / "local")["front"]["members"]

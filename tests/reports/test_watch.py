"""`evomerge status --watch`: a live view of a running search that ends when the search does."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from rich.console import Console

from helpers import make_config, search
from evomerge.reports.watch import is_running, watch

TESTS = Path(__file__).resolve().parents[1]


def test_the_view_follows_a_running_search_and_stops_with_it(family, target, tmp_path):
    cfg = make_config(family, target, budget=8)
    cfg["fitness"][0]["sleep"] = [0.3, 0.3]
    cfg["fitness"][0]["fail_calls"] = [2]
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = dict(os.environ, PYTHONPATH=f"{TESTS}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    proc = subprocess.Popen([sys.executable, "-m", "evomerge", "search", str(path), "--run-dir",
                             str(tmp_path / "run"), "--quiet"], env=env, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while time.time() < deadline and not is_running(tmp_path / "run"):
            time.sleep(0.1)
        assert is_running(tmp_path / "run")
        console = Console(record=True, width=120, force_terminal=False)
        t0 = time.time()
        watch(tmp_path / "run", interval=0.2, console=console)
        assert proc.wait(30) == 0 and time.time() - t0 < 60  # it ended when the search did
    finally:
        if proc.poll() is None:
            proc.kill()
    screen = console.export_text()
    assert "8/8 trials" in screen and "not running" in screen
    assert "recent trials" in screen and "best: trial" in screen
    assert "1 failed; last: trial 1: RuntimeError: injected failure" in screen
    assert "time per candidate" in screen


def test_a_finished_run_is_shown_once(family, target, tmp_path):
    search(make_config(family, target, budget=6), tmp_path / "run")
    assert not is_running(tmp_path / "run")
    console = Console(record=True, width=100)
    watch(tmp_path / "run", interval=5, console=console)  # returns at once
    assert "6/6 trials" in console.export_text()


def test_watch_with_json_streams_json_lines(family, target, tmp_path, capsys):
    """`status --watch --json`: one JSON object per refresh (JSON Lines) for scripts, never the live view."""
    import json

    from helpers import cli

    search(make_config(family, target, budget=6), tmp_path / "run")
    capsys.readouterr()
    assert cli("status", tmp_path / "run", "--watch", "--json", "--interval", "0.2") == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1  # a finished run: its status once
    status = json.loads(lines[0])
    assert status["completed"] == 6 and status["running_now"] is False and status["best"]["trial"] >= 0
    assert cli("status", tmp_path / "run", "--watch", "--interval", "0") == 2  # a refresh interval that spins


def test_a_run_watched_before_it_recorded_anything_is_starting_not_lost(family, target, tmp_path, capsys):
    """The moments between a search taking its lock and recording its config (no database, an empty one, one
    without a config): a reader is told the run is starting and the live view waits; the same files with no live
    holder are damage, reported as before."""
    import json
    import sqlite3

    from helpers import cli
    from evomerge.reports.watch import view, watch_json
    from evomerge.search.records.results import run_status
    from evomerge.search.records.store import LOCK_NAME, RunLock, RunStarting, RunStore
    from evomerge.core.errors import UserError

    run = tmp_path / "run"
    run.mkdir()
    db = run / "run.sqlite"

    def no_file():
        pass

    def empty():
        db.write_bytes(b"")

    def schema_only():
        db.unlink()
        con = sqlite3.connect(str(db))
        con.executescript("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL); "
                          "CREATE TABLE trials (id INTEGER); CREATE TABLE generations (generation INTEGER);")
        con.close()

    for stage, make, lost in [("no file", no_file, "no run.sqlite"), ("empty", empty, "empty (0 bytes)"),
                              ("no config", schema_only, "no config recorded")]:
        make()
        with RunLock(run):  # this process is the search, between lock and config
            with pytest.raises(RunStarting, match="the run is starting"):
                run_status(run)
            console = Console(record=True, width=120)
            console.print(view(run))
            assert "starting (nothing recorded yet)" in console.export_text(), stage
            lines = []
            watch_json(run, interval=0.01, emit=lines.append, max_updates=1)
            assert json.loads(lines[0]) == {"run_dir": str(run), "starting": True, "running_now": True}, stage
            capsys.readouterr()
            assert cli("status", run) == 2
            assert "the run is starting" in capsys.readouterr().err, stage
            if stage != "no file":  # the search itself opening the same file is told of the damage
                with pytest.raises(UserError, match=re.escape(lost)) as err:
                    RunStore(run, create=True)
                assert not isinstance(err.value, RunStarting)
        # no holder now (released), then a holder that died without releasing: the same files are damage
        for lock_text in ["", "pid 999999999 on " + __import__("socket").gethostname() + ", since then\n"]:
            (run / LOCK_NAME).write_text(lock_text)
            with pytest.raises(UserError, match=re.escape(lost)) as err:
                run_status(run)
            assert not isinstance(err.value, RunStarting), stage

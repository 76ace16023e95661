"""The run store: trials by name, best and validated results, generations, old runs migrated, the lock."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from evomerge.core.errors import UserError
from evomerge.search.records.store import BEST_RECIPE, CONFIG_FILE, RunLock, RunStore


def filled(folder):
    store = RunStore(folder, create=True)
    store.set_meta("config", '{"budget": {"max_trials": 4}}')
    for i, f in enumerate([0.5, None, 0.9, 0.7]):
        store.start_trial(i, i // 2, [0.1 * i], {"w": float(i)}, f"recipe: {i}\n", ask_index=i % 2)
        if f is None:
            store.fail_trial(i, "boom", 0.1)
        else:
            store.finish_trial(i, f, {"ppl": {"neg": f}}, 0.1, 0.2)
    return store


def test_trials_round_trip_by_name(tmp_path):
    with filled(tmp_path / "run") as store:
        t = store.trial(2)
        assert (t.id, t.generation, t.genes, t.params, t.status, t.fitness) == (2, 1, [0.2], {"w": 2.0}, "complete", 0.9)
        assert t.scores == {"ppl": {"neg": 0.9}} and t.ask_index == 0 and t.started is not None
        assert store.trial(1).status == "failed" and store.trial(1).error == "boom" and store.trial(1).scores == {}
        assert [x.id for x in store.trials("complete")] == [0, 2, 3]
        assert store.count("failed") == 1 and store.next_id() == 4
        assert store.best().id == 2 and store.result().id == 2
        store.set_validation(3, 0.95, {"v": {"x": 1}})
        store.set_validation(2, 0.2, {})
        assert store.result().id == 3  # with validation, the best-validation trial is the answer
        store.mark_told([3, 2])
        assert [t.told for t in store.generation_trials(1)] == [1, 0]
        store.finish_generation(0, {"sigma": 0.1}, [0.5, -1.0])
        assert store.generations() == [{"generation": 0, "state": {"sigma": 0.1}, "best": 0.5, "mean": -0.25}]
        store.write_config_text("# mine\n")
        assert store.write_best_recipe(store.best()).name == BEST_RECIPE
        assert (tmp_path / "run" / CONFIG_FILE).read_text() == "# mine\n"
        assert store.config() == {"budget": {"max_trials": 4}}
    with RunStore(tmp_path / "run") as again:  # reopened to read: everything is there
        assert again.trial(3).val_fitness == 0.95


def test_a_run_recorded_by_an_older_version_gains_the_new_columns(tmp_path):
    folder = tmp_path / "old"
    folder.mkdir()
    db = sqlite3.connect(str(folder / "run.sqlite"))
    db.executescript("""
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE trials (id INTEGER PRIMARY KEY, generation INTEGER NOT NULL, genes TEXT NOT NULL,
            params TEXT NOT NULL, recipe TEXT NOT NULL, status TEXT NOT NULL, fitness REAL, scores TEXT, error TEXT,
            started REAL, finished REAL, merge_s REAL, eval_s REAL);
        CREATE TABLE generations (generation INTEGER PRIMARY KEY, state TEXT NOT NULL, best_fitness REAL,
            mean_fitness REAL, finished REAL);
        INSERT INTO meta VALUES ('config', '{}');
        INSERT INTO trials VALUES (0, 0, '[0.5]', '{}', 'r', 'complete', 1.5, '{}', NULL, 1, 2, 0.1, 0.1);
    """)
    db.commit()
    db.close()
    with RunStore(folder, create=True) as store:  # a search resuming it
        t = store.trial(0)
        assert t.fitness == 1.5 and t.val_fitness is None and t.ask_index is None and t.told is None


def test_reading_needs_a_run(tmp_path):
    with pytest.raises(UserError, match="no run.sqlite"):
        RunStore(tmp_path)
    assert not (tmp_path / "run.sqlite").exists()  # asking did not create one


def test_one_lock_holder_at_a_time(tmp_path):
    first = RunLock(tmp_path).acquire()
    with pytest.raises(UserError, match=r"another process is running this search \(pid \d+ on "):
        RunLock(tmp_path).acquire()  # another open file description, as a second process would have
    first.release()
    with RunLock(tmp_path):
        pass


def test_the_meta_keys_are_declared_in_one_place(tmp_path):
    """Every meta key the package reads or writes is declared in search/records/store.py; any other is refused."""
    import ast

    from evomerge.search.records.store import _check_meta_key, meta_key

    package = Path(__file__).resolve().parents[3] / "evomerge"
    used = set()
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) in ("get_meta", "set_meta",
                                                                                   "add_note", "notes"):
                if node.args and isinstance(node.args[0], ast.Constant):
                    used.add(node.args[0].value)
    assert {"config", "fingerprint", "wandb_id", "self_check", "objectives"} <= used  # the scan found them
    for key in used:
        _check_meta_key(key)
    assert meta_key("anchors", 3) == "anchors.3"
    for bad in ("confg", "anchors", "anchors.x", "grown.1.2", "nope.1"):
        with pytest.raises(KeyError, match="undeclared"):
            _check_meta_key(bad)

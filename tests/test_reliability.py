"""Nothing half-done, nothing silently wrong: bad input is refused before anything is written, a run folder has
one writer, a damaged store is a clear error, data and models are pinned, and exports are exactly what was scored.
The broken inputs themselves live in tests/broken_inputs.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml

from broken_inputs import COMPARE_LINES, REPLAY_SETTINGS, RUN_DATABASES, RUN_REFERENCES, SEARCH_CONFIGS, _documents_with
from conftest import build_model, load_state
from helpers import cli

TESTS = Path(__file__).parent


def _env() -> dict:
    return dict(os.environ, PYTHONPATH=f"{TESTS}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")


@pytest.fixture(scope="module")
def text(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("text") / "text.txt"
    path.write_text(" ".join(f"w{(i * 7) % 61}" for i in range(300)))
    return path


@pytest.fixture(scope="module")
def wide(tmp_path_factory) -> Path:
    """A Llama of another hidden size: its layers cannot run on the family's hidden states."""
    path = tmp_path_factory.mktemp("wide") / "wide"
    build_model(path, seed=5, hidden=48)
    return path


def ps_config(family, text: Path, budget: int = 6, **extra) -> dict:
    cfg = {
        "merge": {"merge_method": "dare_ties", "base_model": str(family["base"]),
                  "models": [{"model": str(family["ja"])}, {"model": str(family["math"])}]},
        "genome": {"parameters": ["weight"]},
        "optimizer": {"name": "cma", "seed": 1, "popsize": 3},
        "budget": {"max_trials": budget},
        "fitness": [{"name": "perplexity", "data": str(text), "max_length": 32}],
        "device": "cpu",
    }
    cfg.update(extra)
    return cfg


def write_config(cfg: dict, path: Path) -> Path:
    path.write_text(yaml.safe_dump(cfg))
    return path


def one_line_error(capsys, code: int, expected: str) -> str:
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err and expected in err, err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    return lines[0]


# -- bad input: refused up front, nothing left behind --------------------------------------------------------------

@pytest.mark.parametrize("change, expected", [c[1:] for c in SEARCH_CONFIGS], ids=[c[0] for c in SEARCH_CONFIGS])
def test_bad_search_config_is_refused_before_anything_is_written(family, text, wide, tmp_path, capsys, change,
                                                                 expected):
    cfg = ps_config(family, text)
    change(cfg, SimpleNamespace(family=family, tmp=tmp_path, wide=wide))
    path = write_config(cfg, tmp_path / "bad.yaml")
    t0 = time.perf_counter()
    code = cli("search", path, "--run-dir", tmp_path / "run")
    one_line_error(capsys, code, expected)
    assert time.perf_counter() - t0 < 30
    assert not (tmp_path / "run").exists()
    # an empty folder given as --run-dir stays as it was
    (tmp_path / "empty").mkdir()
    assert cli("search", path, "--run-dir", tmp_path / "empty") == 2
    assert list((tmp_path / "empty").iterdir()) == []


def test_a_new_run_that_fails_before_its_first_trial_leaves_nothing(family, text, tmp_path, capsys):
    """A custom evaluator whose metric is only known when it runs: the first trial stops the run, and the
    corrected config then starts in the same folder."""
    cfg = ps_config(family, text)
    cfg["fitness"] = [{"name": "fitness_fixtures:TargetDistance", "target": str(family["ja"] / "model.safetensors"),
                       "metric": "nope"}]
    path = write_config(cfg, tmp_path / "bad.yaml")
    one_line_error(capsys, cli("search", path, "--run-dir", tmp_path / "run", "--quiet"), "no metric 'nope'")
    assert not (tmp_path / "run").exists()
    cfg["fitness"][0].pop("metric")
    assert cli("search", write_config(cfg, tmp_path / "good.yaml"), "--run-dir", tmp_path / "run", "--quiet") == 0


def test_resume_needs_a_run_and_run_dir_must_be_a_folder(family, text, tmp_path, capsys):
    path = write_config(ps_config(family, text), tmp_path / "s.yaml")
    line = one_line_error(capsys, cli("search", path, "--run-dir", tmp_path / "none", "--resume"), "nothing to resume")
    assert "does not exist" in line and not (tmp_path / "none").exists()
    (tmp_path / "empty").mkdir()
    line = one_line_error(capsys, cli("search", path, "--run-dir", tmp_path / "empty", "--resume"), "nothing to resume")
    assert "holds no run" in line and list((tmp_path / "empty").iterdir()) == []
    (tmp_path / "afile").write_text("x")
    one_line_error(capsys, cli("search", path, "--run-dir", tmp_path / "afile"), "is a file, not a folder")
    one_line_error(capsys, cli("status", tmp_path / "afile"), "is a file, not a folder")


def test_eval_with_a_bad_device_is_a_clear_error(family, text, tmp_path, capsys):
    path = write_config(ps_config(family, text), tmp_path / "s.yaml")
    one_line_error(capsys, cli("eval", family["ja"], "--config", path, "--device", "banana"), "not a device")
    one_line_error(capsys, cli("merge", TESTS.parent / "recipes" / "ties-three-way.yaml", tmp_path / "o",
                               "--device", "banana"), "not a device")
    assert not (tmp_path / "o").exists()


# -- one writer per run ----------------------------------------------------------------------------------------------

def test_a_second_process_is_refused_and_a_dead_holders_lock_is_taken_over(family, text, tmp_path, capsys):
    target = family["math"] / "model.safetensors"
    cfg = ps_config(family, text, budget=9)
    cfg["fitness"] = [{"name": "fitness_fixtures:TargetDistance", "target": str(target), "sleep": [0.4, 0.4]}]
    path = write_config(cfg, tmp_path / "s.yaml")
    run = tmp_path / "run"
    first = subprocess.Popen([sys.executable, "-m", "evomerge", "search", str(path), "--run-dir", str(run),
                              "--quiet"], env=_env(), stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 60
        while time.time() < deadline and not _complete(run):
            time.sleep(0.2)
        assert _complete(run) >= 1
        line = one_line_error(capsys, cli("search", path, "--run-dir", run, "--resume", "--quiet"),
                              "another process is running this search")
        assert f"pid {first.pid} on " in line
        first.send_signal(signal.SIGKILL)
        first.wait(30)
    finally:
        if first.poll() is None:
            first.kill()
    done_before = _complete(run)
    assert done_before < 9
    code = cli("search", path, "--run-dir", run, "--resume", "--quiet")
    assert code == 0, capsys.readouterr().err  # the dead holder's lock is free
    assert _complete(run) == 9


def _complete(run: Path) -> int:
    import sqlite3

    if not (run / "run.sqlite").exists():
        return 0
    db = sqlite3.connect(str(run / "run.sqlite"))
    try:
        return db.execute("SELECT COUNT(*) FROM trials WHERE status='complete'").fetchone()[0]
    except sqlite3.Error:
        return 0
    finally:
        db.close()


# -- damaged run databases ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def finished_run(family, text, tmp_path_factory):
    from evomerge.search.config import search_config_from_dict
    from evomerge.search.loop.run import run_search

    root = tmp_path_factory.mktemp("finished")
    cfg = ps_config(family, text, budget=6)
    run_search(search_config_from_dict(cfg, "test"), root / "run", progress=False, log=lambda m: None)
    write_config(cfg, root / "s.yaml")
    return root


@pytest.mark.parametrize("damage, expected", [c[1:] for c in RUN_DATABASES], ids=[c[0] for c in RUN_DATABASES])
def test_a_damaged_run_database_is_one_clear_line_for_every_command(finished_run, tmp_path, capsys, damage,
                                                                    expected):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(finished_run / "run", run)
    damage(run / "run.sqlite")
    before = (run / "run.sqlite").read_bytes()
    for args in (["status", run], ["status", run, "--json"], ["export", run, tmp_path / "out"], ["report", run],
                 ["search", finished_run / "s.yaml", "--run-dir", run, "--resume"]):
        line = one_line_error(capsys, cli(*args), expected)
        assert "run.sqlite" in line, (args, line)
    assert (run / "run.sqlite").read_bytes() == before  # reading never "repairs" (overwrites) the evidence
    assert not (tmp_path / "out").exists()


def test_a_partly_readable_database_says_what_can_be_recovered(finished_run, tmp_path):
    import shutil
    import sqlite3

    from evomerge.core.errors import UserError
    from evomerge.search.records.store import RunStore

    run = tmp_path / "run"
    shutil.copytree(finished_run / "run", run)
    db = sqlite3.connect(str(run / "run.sqlite"))
    pages = db.execute("PRAGMA page_count").fetchone()[0]
    root = db.execute("SELECT rootpage FROM sqlite_master WHERE name='generations'").fetchone()[0]
    db.close()
    data = bytearray((run / "run.sqlite").read_bytes())
    size = len(data) // pages
    data[(root - 1) * size:root * size] = os.urandom(size)  # the generations table's page: trials still read
    (run / "run.sqlite").write_bytes(bytes(data))
    with pytest.raises(UserError) as err:
        RunStore(run)
    assert "6 trials (6 complete) can still be read" in str(err.value)
    assert ".recover" in str(err.value)


# -- data and models pinned, all-failed runs -------------------------------------------------------------------------

def test_resume_refuses_fitness_data_that_changed(family, text, tmp_path, capsys):
    data = tmp_path / "text.txt"
    data.write_text(text.read_text())
    cfg = ps_config(family, data, budget=3)
    assert cli("search", write_config(cfg, tmp_path / "s.yaml"), "--run-dir", tmp_path / "run", "--quiet") == 0
    cfg["budget"]["max_trials"] = 6
    path = write_config(cfg, tmp_path / "s.yaml")
    data.write_text(text.read_text() + " w1 w2")  # edited under the run
    one_line_error(capsys, cli("search", path, "--run-dir", tmp_path / "run", "--resume", "--quiet"),
                   "the data of fitness[0] perplexity changed since this run started")
    assert _complete(tmp_path / "run") == 3
    data.write_text(text.read_text())  # restored: the run goes on
    assert cli("search", path, "--run-dir", tmp_path / "run", "--resume", "--quiet") == 0
    assert _complete(tmp_path / "run") == 6


def test_a_run_where_every_trial_failed_says_so_and_exits_non_zero(family, text, tmp_path, capsys):
    target = family["math"] / "model.safetensors"
    cfg = ps_config(family, text, budget=3)
    cfg["fitness"] = [{"name": "fitness_fixtures:TargetDistance", "target": str(target), "fail_calls": [1, 2, 3]}]
    code = cli("search", write_config(cfg, tmp_path / "s.yaml"), "--run-dir", tmp_path / "run", "--quiet")
    err = capsys.readouterr().err
    assert code == 1, err
    assert "no trial completed: all 3 failed, so there is no best" in err and "injected failure" in err
    assert cli("status", tmp_path / "run") == 0
    assert "best: none yet" in capsys.readouterr().out
    one_line_error(capsys, cli("export", tmp_path / "run", tmp_path / "out"), "no completed trial")


# -- exports: no stale partial folders, exactly the scored model ------------------------------------------------------

def test_a_killed_export_leaves_a_partial_folder_that_the_next_write_removes(family, tmp_path, capsys):
    from evomerge.merging.export import remove_stale_partials, staged_output

    out = tmp_path / "merged"
    code = ("import os, sys; from pathlib import Path; from evomerge.merging.export import staged_output\n"
            "with staged_output(Path(sys.argv[1]), False) as t:\n"
            "    (t / 'model.safetensors').write_bytes(b'x' * 1000); os.kill(os.getpid(), 9)\n")
    def partials():
        return [p for p in tmp_path.iterdir() if p.name.startswith(".merged.partial-") and p.is_dir()]

    assert subprocess.run([sys.executable, "-c", code, str(out)], env=_env()).returncode == -9
    first = partials()
    assert len(first) == 1 and (first[0] / "model.safetensors").exists()
    assert subprocess.run([sys.executable, "-c", code, str(out)], env=_env()).returncode == -9
    second = partials()  # the second write removed the first one's leftover before it was killed too
    assert len(second) == 1 and second != first
    with staged_output(tmp_path / "merged", False) as live_tmp:  # a live writer's folder is never taken
        assert remove_stale_partials(out) == [] or live_tmp.exists()
        assert live_tmp.exists()
        (live_tmp / "x").write_text("x")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"merge_method": "linear", "models": [
        {"model": str(family["ja"]), "parameters": {"weight": 0.5}},
        {"model": str(family["math"]), "parameters": {"weight": 0.5}}]}))
    assert cli("merge", recipe, out, "--force", "--quiet") == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["merged", "r.yaml"]


@pytest.mark.parametrize("space, dtype", [("dataflow", "bfloat16"), ("dataflow", "float16"),
                                          ("dataflow", "float32"), ("parameter", "bfloat16"),
                                          ("parameter", "float16")])
def test_every_space_exports_exactly_the_model_it_scored(family, text, tmp_path, capsys, space, dtype):
    if space == "dataflow":
        cfg = ps_config(family, text, budget=3)
        cfg.pop("merge")
        cfg.pop("genome")
        cfg["dataflow"] = {"model_a": str(family["ja"]), "model_b": str(family["math"]), "repeats": 1,
                           "scales": False, "dtype": dtype}
    else:
        cfg = ps_config(family, text, budget=3)
        cfg["merge"]["dtype"] = dtype
    path = write_config(cfg, tmp_path / "s.yaml")
    assert cli("search", path, "--run-dir", tmp_path / "run", "--quiet") == 0
    assert cli("status", tmp_path / "run", "--json") == 0
    recorded = json.loads(capsys.readouterr().out)["best"]["fitness"]
    assert cli("export", tmp_path / "run", tmp_path / "best", "--quiet") == 0
    capsys.readouterr()
    state = load_state(tmp_path / "best")
    assert {t.dtype for t in state.values()} == {getattr(torch, dtype)}
    assert cli("eval", tmp_path / "best", "--config", path, "--json") == 0
    assert json.loads(capsys.readouterr().out)["fitness"] == recorded


def test_a_source_without_tokenizer_files_is_said_up_front_and_the_merge_is_kept(family, tmp_path, capsys):
    import shutil

    bare = tmp_path / "bare"
    shutil.copytree(family["ja"], bare)
    for f in bare.iterdir():
        if "token" in f.name:
            f.unlink()
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"merge_method": "linear", "models": [
        {"model": str(bare), "parameters": {"weight": 0.5}},
        {"model": str(family["math"]), "parameters": {"weight": 0.5}}]}))
    assert cli("merge", recipe, tmp_path / "out") == 0
    err = capsys.readouterr().err
    warning = f"{bare} has no tokenizer files, so the output has none"
    assert warning in err
    assert err.index(warning) < err.index("merging")  # before the long part, not after it
    assert (tmp_path / "out" / "model.safetensors").exists()
    assert not any("token" in f.name for f in (tmp_path / "out").iterdir())


def test_dare_masks_do_not_depend_on_where_the_models_live(family, tmp_path):
    import shutil

    from evomerge.merging.merge import run_merge
    from evomerge.merging.recipe import recipe_from_dict

    moved = tmp_path / "elsewhere"
    for name in ("base", "ja", "math"):
        shutil.copytree(family[name], moved / name)

    def recipe(root):
        return recipe_from_dict({"merge_method": "dare_ties", "base_model": str(root["base"]), "seed": 4,
                                 "models": [{"model": str(root["ja"]), "parameters": {"weight": 0.6, "density": 0.4}},
                                            {"model": str(root["math"]),
                                             "parameters": {"weight": 0.5, "density": 0.3}}]})

    run_merge(recipe(family), tmp_path / "a", device="cpu", progress=False)
    run_merge(recipe({n: moved / n for n in ("base", "ja", "math")}), tmp_path / "b", device="cpu", progress=False)
    a, b = load_state(tmp_path / "a"), load_state(tmp_path / "b")
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    base = load_state(family["base"])
    assert not torch.equal(a["model.layers.0.mlp.up_proj.weight"], base["model.layers.0.mlp.up_proj.weight"])


def test_exporting_a_run_recorded_with_the_older_mask_keys_warns(finished_run, tmp_path, capsys):
    import shutil
    import sqlite3

    assert cli("export", finished_run / "run", tmp_path / "new", "--quiet") == 0
    assert "warning" not in capsys.readouterr().err
    old = tmp_path / "run"
    shutil.copytree(finished_run / "run", old)
    db = sqlite3.connect(str(old / "run.sqlite"))
    db.execute("DELETE FROM meta WHERE key='mask_keys'")
    db.commit()
    db.close()
    assert cli("export", old, tmp_path / "old", "--quiet") == 0
    assert "masks differ from the scored one's" in capsys.readouterr().err


# -- references, replays, comparisons and resumes that cannot work: refused, nothing changed ----------------------

@pytest.mark.parametrize("ref_of, expected", [c[1:] for c in RUN_REFERENCES], ids=[c[0] for c in RUN_REFERENCES])
def test_a_run_reference_that_does_not_resolve_creates_nothing(finished_run, family, tmp_path, capsys, ref_of,
                                                               expected):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(finished_run / "run", run)
    ref = ref_of(SimpleNamespace(run=run, tmp=tmp_path))
    recipe = write_config({"merge_method": "linear", "models": [{"model": ref, "parameters": {"weight": 0.5}},
                                                                {"model": str(family["ja"]), "parameters": {"weight": 0.5}}]},
                          tmp_path / "r.yaml")
    folders = sorted(p for p in tmp_path.rglob("*") if p.is_dir())
    line = one_line_error(capsys, cli("merge", recipe, tmp_path / "out"), expected)
    assert line.count(ref) == 1, line
    assert sorted(p for p in tmp_path.rglob("*") if p.is_dir()) == folders  # no trials/, no run folder, no out


@pytest.mark.parametrize("args, expected", [c[1:] for c in REPLAY_SETTINGS], ids=[c[0] for c in REPLAY_SETTINGS])
def test_replay_settings_obey_the_search_configs_limits(finished_run, capsys, args, expected):
    line = one_line_error(capsys, cli("replay", finished_run / "run", *args), expected)
    assert args[0] in line


def test_replay_refuses_a_run_that_was_not_scored_in_full(family, text, tmp_path, capsys):
    cfg = ps_config(family, text, budget=6)
    _documents_with({"subset": {"items": 2, "first_generation": "random"}})(cfg, SimpleNamespace(tmp=tmp_path))
    assert cli("search", write_config(cfg, tmp_path / "s.yaml"), "--run-dir", tmp_path / "run", "--quiet") == 0
    capsys.readouterr()
    one_line_error(capsys, cli("replay", tmp_path / "run", "--subset", "items=2"), "scored in full")


@pytest.mark.parametrize("line, expected", [c[1:] for c in COMPARE_LINES], ids=[c[0] for c in COMPARE_LINES])
def test_compare_refuses_samples_it_cannot_pair(tmp_path, capsys, line, expected):
    good, bad = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    good.write_text('{"question": "q", "acc": 1}\n')
    bad.write_text(line + "\n")
    one_line_error(capsys, cli("compare", good, bad, "--metric", "acc"), expected)


def test_a_missing_tracker_is_refused_before_models_load_and_a_refused_resume_changes_nothing(
        finished_run, family, text, tmp_path, capsys, monkeypatch):
    import shutil

    from evomerge.search.records.store import RunStore

    run = tmp_path / "run"
    shutil.copytree(finished_run / "run", run)
    with RunStore(run) as store:
        before = store.config()
    files = {p.name: p.read_bytes() for p in run.iterdir() if p.name != "run.sqlite"}
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if TensorBoard were not installed
    one_line_error(capsys, cli("search", finished_run / "s.yaml", "--run-dir", run, "--resume", "--tensorboard"),
                   "needs TensorBoard")
    with RunStore(run) as store:
        assert store.config() == before and store.config()["tracking"] is None
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.name != "run.sqlite"} == files
    # a new run: the tracker is refused before the (missing) source model is even looked for
    cfg = ps_config(family, text, tracking={"tensorboard": True})
    cfg["merge"]["models"][0]["model"] = str(tmp_path / "no-such-model")
    one_line_error(capsys, cli("search", write_config(cfg, tmp_path / "t.yaml"), "--run-dir", tmp_path / "new"),
                   "needs TensorBoard")
    assert not (tmp_path / "new").exists()

"""`evomerge table`: cells computed once and cached, the paper's layout, reference numbers alongside."""

from __future__ import annotations

import json

import yaml

from helpers import cli


def test_table_computes_caches_and_prints(family, tmp_path, capsys, monkeypatch):
    text = tmp_path / "text.txt"
    text.write_text(" ".join(f"w{(i * 5) % 61}" for i in range(300)))
    table = {
        "title": "Tiny table",
        "models": [{"name": "ja", "model": str(family["ja"])}, {"name": "math", "model": str(family["math"])}],
        "tasks": [{"name": "PPL", "evaluator": {"name": "perplexity", "data": str(text), "max_length": 32},
                   "metrics": ["perplexity"], "digits": 2}],
        "reference": {"ja": {"PPL": 61.0}},
        "device": "cpu",
    }
    cfg = tmp_path / "table.yaml"
    cfg.write_text(yaml.safe_dump(table))
    assert cli("table", cfg, "--json") == 0
    first = json.loads(capsys.readouterr().out)
    assert first["computed"] == 2 and first["rows"]["ja"]["PPL"] > 1

    # the same table again computes nothing; a new task computes only its own cells
    assert cli("table", cfg, "--json") == 0
    assert json.loads(capsys.readouterr().out)["computed"] == 0
    table["tasks"].append({"name": "NLL", "evaluator": {"name": "perplexity", "data": str(text), "max_length": 32,
                                                         "max_tokens": 100}, "scale": -1})
    cfg.write_text(yaml.safe_dump(table))
    assert cli("table", cfg, "--out", tmp_path / "t.md") == 0
    captured = capsys.readouterr()
    md = captured.out
    assert "| model | PPL | NLL |" in md and "(paper 61.00)" in md
    assert (tmp_path / "t.md").read_text() == md.rstrip("\n") + "\n"
    assert "evaluating ja on PPL" not in captured.err and "evaluating ja on NLL" in captured.err


def test_bad_table(tmp_path, capsys):
    cfg = tmp_path / "t.yaml"
    cfg.write_text("models: []\ntasks:\n  - name: X\n    evaluator: {name: nope}\n")
    assert cli("table", cfg) == 2
    assert "unknown evaluator" in capsys.readouterr().err


def test_paper_table_configs_are_valid():
    from pathlib import Path

    from evomerge.reports.table import load_table_config

    paths = sorted((Path(__file__).resolve().parents[2] / "tables").glob("*.yaml"))
    assert len(paths) >= 3
    for path in paths:
        cfg = load_table_config(path)
        assert cfg.models and cfg.tasks
        if path.name.startswith(("evollm", "evovlm")):  # the paper's tables print its numbers alongside
            assert set(cfg.reference) <= {m.name for m in cfg.models} and cfg.reference


def test_recipe_models_are_merged_once(family, tmp_path):
    from evomerge.reports.table import resolve_ref

    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"merge_method: linear\nmodels:\n  - model: {family['ja']}\n    parameters: {{weight: 1}}\n")
    first = resolve_ref(f"recipe:{recipe}", tmp_path / "cache", log=lambda m: None)
    from pathlib import Path

    stamp = (Path(first) / "model.safetensors").stat().st_mtime_ns
    assert resolve_ref(f"recipe:{recipe}", tmp_path / "cache", log=lambda m: None) == first
    assert (Path(first) / "model.safetensors").stat().st_mtime_ns == stamp


def test_table_keeps_the_answers_behind_each_cell(family, tmp_path, capsys):
    data = tmp_path / "q.jsonl"
    data.write_text("\n".join(json.dumps({"question": f"w{i}", "answer_number": i}) for i in range(4)))
    cfg = tmp_path / "table.yaml"
    cfg.write_text(yaml.safe_dump({
        "title": "answers", "models": [{"name": "ja", "model": str(family["ja"])}],
        "tasks": [{"name": "acc", "evaluator": {"name": "mgsm_ja", "data": str(data), "prompt": "{question}",
                                                "max_new_tokens": 3, "metric": "acc"}, "scale": 100}],
        "device": "cpu"}))
    assert cli("table", cfg, "--json", "--cache", tmp_path / "cache") == 0
    acc = json.loads(capsys.readouterr().out)["rows"]["ja"]["acc"]
    (samples,) = (tmp_path / "cache").glob("*.samples.jsonl")
    rows = [json.loads(line) for line in samples.read_text().splitlines()]
    assert [r["answer"] for r in rows] == [0, 1, 2, 3]
    assert acc == 100 * sum(r["correct"] for r in rows) / 4


def test_a_model_whose_files_changed_is_evaluated_again(family, tmp_path, capsys):
    import os
    import shutil

    ja = tmp_path / "ja"
    shutil.copytree(family["ja"], ja)
    text = tmp_path / "text.txt"
    text.write_text(" ".join(f"w{(i * 7) % 61}" for i in range(100)))
    cfg = tmp_path / "table.yaml"
    cfg.write_text(yaml.safe_dump({
        "title": "t", "models": [{"name": "ja", "model": str(ja)}],
        "tasks": [{"name": "PPL", "evaluator": {"name": "perplexity", "data": str(text), "max_length": 32}}],
        "device": "cpu"}))
    assert cli("table", cfg, "--json") == 0
    assert json.loads(capsys.readouterr().out)["computed"] == 1
    assert cli("table", cfg, "--json") == 0
    assert json.loads(capsys.readouterr().out)["computed"] == 0
    st = (ja / "model.safetensors").stat()
    os.utime(ja / "model.safetensors", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert cli("table", cfg, "--json") == 0
    assert json.loads(capsys.readouterr().out)["computed"] == 1

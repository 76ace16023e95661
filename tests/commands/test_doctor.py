"""`evomerge doctor` on a CPU-only machine: says what it checked and what it could not, runs the engine's
self-check and the speed probe, reads a config's fast paths, and fails (exit 1) when a self-check fails."""

from __future__ import annotations

import json

import yaml

from helpers import cli, make_config


def _report(capsys, *args):
    code = cli("doctor", "--json", *args)
    return code, {r["check"]: r for r in json.loads(capsys.readouterr().out)["rows"]}


def test_doctor_on_cpu_checks_the_engine_and_says_what_it_could_not(capsys):
    code, rows = _report(capsys)
    assert code == 0
    assert rows["device"]["result"] == "cpu" and "no CUDA GPU" in rows["device"]["detail"]
    assert rows["self-check: fused merge"]["result"] == "not run"
    assert rows["self-check: generation engine"]["result"] == "ok"
    merge = next(r for k, r in rows.items() if k.startswith("speed: merge"))
    assert merge["result"].endswith("GB/s") and "copy bandwidth" in merge["detail"] and "floor" in merge["detail"]
    assert any(k.startswith("speed: generation") for k in rows)


def test_doctor_reads_a_configs_fast_paths(family, target, tmp_path, capsys):
    cfg = make_config(family, target)
    cfg["merge"]["merge_method"] = "dare_ties"
    cfg["fitness"] = [{"name": "mgsm_ja", "data": "x.jsonl"}]
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(cfg))
    code, rows = _report(capsys, "--config", path, "--no-speed")
    assert code == 0
    assert rows["fast path: fused merge"]["result"] == "does not apply"  # no GPU here
    assert "dare_ties has a fused form" in rows["fast path: fused merge"]["detail"]
    assert "model type llama" in rows["fast path: generation engine"]["detail"]
    assert not any(k.startswith("speed") for k in rows)


def test_doctor_fails_when_a_self_check_fails(monkeypatch, capsys):
    from evomerge.generation import greedy

    real = greedy.fast_generate
    monkeypatch.setattr(greedy, "fast_generate", lambda *a, **k: [t + " w5" for t in real(*a, **k)])
    code, rows = _report(capsys, "--no-speed")
    assert code == 1 and rows["self-check: generation engine"]["result"] == "FAILED"

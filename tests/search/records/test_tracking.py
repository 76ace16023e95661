"""Streaming a search to TensorBoard (read back with TensorBoard's own reader) and W&B (offline mode); a resumed
run continues the same tracked run; a tracker that fails never stops a search."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from helpers import cli, make_config, search, trials

pytest.importorskip("tensorboard")


def _scalars(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_tensorboard_gets_every_trial_and_generation_and_resume_continues(family, target, tmp_path):
    cfg = make_config(family, target, budget=12)
    cfg["tracking"] = {"tensorboard": True}
    search(cfg, tmp_path / "run")
    search(dict(cfg, budget={"max_trials": 18}), tmp_path / "run", resume=True)
    tags = _scalars(tmp_path / "run" / "tensorboard")
    recorded = trials(tmp_path / "run")
    assert [s for s, _ in tags["trial/fitness"]] == [t[0] for t in recorded]  # every trial once, in order
    assert [v for _, v in tags["trial/fitness"]] == pytest.approx([t[3] for t in recorded])
    assert [s for s, _ in tags["generation/best"]] == [0, 1, 2]
    assert {"genes/ja.weight", "genes/math.weight", "trial/merge_s", "trial/eval_s"} <= set(tags)


def test_a_failing_tracker_warns_once_and_the_search_goes_on(family, target, tmp_path, monkeypatch, capsys):
    import yaml
    from torch.utils.tensorboard import SummaryWriter

    def broken(self, *a, **k):
        raise OSError("disk full (injected)")

    monkeypatch.setattr(SummaryWriter, "add_scalar", broken)
    cfg = make_config(family, target, budget=6)
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert cli("search", path, "--run-dir", tmp_path / "run", "--quiet", "--tensorboard") == 0
    err = capsys.readouterr().err
    assert err.count("tracking with tensorboard failed") == 1 and "disk full" in err
    assert len(trials(tmp_path / "run")) == 6


def test_wandb_offline_run_is_resumed_not_restarted(family, target, tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    from evomerge.search.records.store import RunStore

    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = make_config(family, target, budget=6)
    cfg["tracking"] = {"wandb": {"project": "evomerge-test", "mode": "offline"}}
    search(cfg, tmp_path / "run")
    with RunStore(tmp_path / "run") as store:
        first = store.get_meta("wandb_id")
    search(dict(cfg, budget={"max_trials": 12}), tmp_path / "run", resume=True)
    with RunStore(tmp_path / "run") as store:
        assert store.get_meta("wandb_id") == first
    runs = sorted((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert len(runs) == 2 and all(f"-{first}" in r.name for r in runs)  # one W&B run, written twice
    logged = {}  # read back with W&B's own transaction-log reader
    for r in runs:
        out = subprocess.run([sys.executable, "-m", "wandb", "leet", "inspect", str(next(r.glob("*.wandb"))),
                              "--json"], capture_output=True, text=True, timeout=120)
        for line in out.stdout.splitlines():
            rec = json.loads(line)
            item = rec.get("history", {}).get("item", {}) if rec.get("type") == "history" else {}
            if "trial" in item and "trial/fitness" in item:
                logged[item["trial"]] = item["trial/fitness"]
                assert item["trial/status"] == "complete" and "merge_method" in item["trial/recipe"]
    recorded = trials(tmp_path / "run")
    assert logged == pytest.approx({t[0]: t[3] for t in recorded})

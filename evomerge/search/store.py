"""The run store: one SQLite file per run folder, the single source of truth for a search.

Every trial is committed as soon as it finishes (WAL journal, so a SIGKILL loses at most the trial in flight),
together with its genes, its exact recipe (seed included), per-evaluator scores, status and timings. After every
generation the optimiser's summary state is recorded too.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evomerge.errors import UserError

DB_NAME = "run.sqlite"
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS trials (
    id INTEGER PRIMARY KEY,
    generation INTEGER NOT NULL,
    genes TEXT NOT NULL,           -- JSON list, normalised [0, 1]
    params TEXT NOT NULL,          -- JSON {gene name: parameter value}
    recipe TEXT NOT NULL,          -- YAML, exact: merging it gives the scored model
    status TEXT NOT NULL,          -- running | complete | failed
    fitness REAL,
    scores TEXT,                   -- JSON {evaluator: {metric: value}}
    error TEXT,
    started REAL, finished REAL, merge_s REAL, eval_s REAL,
    val_fitness REAL,              -- validation score, for each generation's best trial (if configured)
    val_scores TEXT,
    ask_index INTEGER,             -- order in which the optimiser proposed it within its generation
    told INTEGER                   -- its position in the generation's update (NULL: not used, e.g. a straggler)
);
CREATE TABLE IF NOT EXISTS generations (
    generation INTEGER PRIMARY KEY,
    state TEXT NOT NULL,           -- JSON optimiser summary after this generation's update
    best_fitness REAL, mean_fitness REAL, finished REAL
);
"""


@dataclass
class Trial:
    id: int
    generation: int
    genes: list[float]
    params: dict[str, float]
    recipe: str
    status: str
    fitness: float | None
    scores: dict[str, Any]
    error: str | None
    merge_s: float | None
    eval_s: float | None
    val_fitness: float | None = None
    val_scores: dict[str, Any] | None = None
    ask_index: int | None = None
    told: int | None = None


class RunStore:
    def __init__(self, folder: Path, create: bool = False):
        self.folder = Path(folder)
        path = self.folder / DB_NAME
        if not path.exists() and not create:
            raise UserError("not a run folder (no run.sqlite)", str(folder))
        self.folder.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(path), isolation_level=None)  # autocommit; explicit transactions below
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)
        self._migrate()

    def _migrate(self) -> None:
        """Add columns that runs made by older versions lack (they are all nullable)."""
        have = {row[1] for row in self.db.execute("PRAGMA table_info(trials)")}
        for column, kind in (("val_fitness", "REAL"), ("val_scores", "TEXT"), ("ask_index", "INTEGER"),
                             ("told", "INTEGER")):
            if column not in have:
                self.db.execute(f"ALTER TABLE trials ADD COLUMN {column} {kind}")

    def close(self) -> None:
        self.db.close()

    # -- meta --------------------------------------------------------------------------------------------------
    def get_meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    # -- trials ------------------------------------------------------------------------------------------------
    def start_trial(self, trial_id: int, generation: int, genes: list[float], params: dict, recipe: str,
                    ask_index: int | None = None) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO trials (id, generation, genes, params, recipe, status, started, ask_index) "
            "VALUES (?, ?, ?, ?, ?, 'running', ?, ?)",
            (trial_id, generation, json.dumps(genes), json.dumps(params), recipe, time.time(), ask_index),
        )

    def mark_told(self, trial_ids: list[int]) -> None:
        self.db.executemany("UPDATE trials SET told=? WHERE id=?", [(k, t) for k, t in enumerate(trial_ids)])

    def generation_trials(self, generation: int) -> list[Trial]:
        rows = self.db.execute(f"SELECT {_COLS} FROM trials WHERE generation=? ORDER BY ask_index, id", (generation,))
        return [_trial(r) for r in rows]

    def next_id(self) -> int:
        return self.db.execute("SELECT COALESCE(MAX(id) + 1, 0) FROM trials").fetchone()[0]

    def finish_trial(self, trial_id: int, fitness: float, scores: dict, merge_s: float, eval_s: float) -> None:
        self.db.execute(
            "UPDATE trials SET status='complete', fitness=?, scores=?, error=NULL, finished=?, merge_s=?, eval_s=? "
            "WHERE id=?", (fitness, json.dumps(scores), time.time(), merge_s, eval_s, trial_id),
        )

    def fail_trial(self, trial_id: int, error: str, merge_s: float | None = None) -> None:
        self.db.execute(
            "UPDATE trials SET status='failed', fitness=NULL, error=?, finished=?, merge_s=? WHERE id=?",
            (error[:2000], time.time(), merge_s, trial_id),
        )

    def trial(self, trial_id: int) -> Trial | None:
        row = self.db.execute(f"SELECT {_COLS} FROM trials WHERE id=?", (trial_id,)).fetchone()
        return _trial(row) if row else None

    def trials(self, status: str | None = None) -> list[Trial]:
        q = f"SELECT {_COLS} FROM trials" + (" WHERE status=?" if status else "") + " ORDER BY id"
        return [_trial(r) for r in self.db.execute(q, (status,) if status else ())]

    def count(self, status: str) -> int:
        return self.db.execute("SELECT COUNT(*) FROM trials WHERE status=?", (status,)).fetchone()[0]

    def best(self) -> Trial | None:
        row = self.db.execute(
            f"SELECT {_COLS} FROM trials WHERE status='complete' ORDER BY fitness DESC, id ASC LIMIT 1").fetchone()
        return _trial(row) if row else None

    def set_validation(self, trial_id: int, fitness: float, scores: dict) -> None:
        self.db.execute("UPDATE trials SET val_fitness=?, val_scores=? WHERE id=?",
                        (fitness, json.dumps(scores), trial_id))

    def best_validated(self) -> Trial | None:
        row = self.db.execute(f"SELECT {_COLS} FROM trials WHERE val_fitness IS NOT NULL "
                              "ORDER BY val_fitness DESC, id ASC LIMIT 1").fetchone()
        return _trial(row) if row else None

    def result(self) -> Trial | None:
        """The run's answer: the best-validation trial when validation is configured, else the best trial."""
        return self.best_validated() or self.best()

    # -- generations -------------------------------------------------------------------------------------------
    def finish_generation(self, generation: int, state: dict, fitness: list[float]) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO generations VALUES (?, ?, ?, ?, ?)",
            (generation, json.dumps(state), max(fitness), sum(fitness) / len(fitness), time.time()),
        )

    def generations(self) -> list[dict[str, Any]]:
        rows = self.db.execute("SELECT generation, state, best_fitness, mean_fitness FROM generations ORDER BY 1")
        return [{"generation": g, "state": json.loads(s), "best": b, "mean": m} for g, s, b, m in rows]


_COLS = ("id, generation, genes, params, recipe, status, fitness, scores, error, merge_s, eval_s, val_fitness, "
         "val_scores, ask_index, told")


def _trial(r) -> Trial:
    return Trial(r[0], r[1], json.loads(r[2]), json.loads(r[3]), r[4], r[5], r[6],
                 json.loads(r[7]) if r[7] else {}, r[8], r[9], r[10], r[11], json.loads(r[12]) if r[12] else None,
                 r[13], r[14])

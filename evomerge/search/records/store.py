"""The run store: it owns the run folder, and its SQLite file is the single source of truth for a search.

Each statement commits on its own (autocommit, WAL journal): a trial's row is written when it starts and updated
when it finishes, so a SIGKILL loses at most the trial in flight. A trial holds its genes, its exact candidate
(seed included), per-evaluator scores, status and timings; after every generation the optimiser's summary state
is recorded too. The folder's other files (the config as the user wrote it, the best recipe so far, the lock) are
written here as well; no other module runs SQL on the database or writes into the folder. (Over 400 lines on
purpose: the one owner of the run folder's files and SQL, with its lock and meta keys.)
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from evomerge.core.errors import UserError

DB_NAME = "run.sqlite"
CONFIG_FILE = "config.yaml"
BEST_RECIPE = "best_recipe.yaml"
MASK_KEYS = "source-position"  # how this version keys DARE masks (evomerge.core.rng.mask_keys); new runs record it

# Every key of the meta table, in one place: what it holds and who writes it. `get_meta`/`set_meta` refuse any
# other, so a new key is declared here first (a typo is an error, not a second key).
META_KEYS = {
    "config": "the search config the run started with (JSON; search/loop/driver.py)",
    "fingerprint": "what must not change across a resume (the config's fingerprint; driver)",
    "created": "when the run was made (seconds since the epoch; driver)",
    "mask_keys": "how DARE masks are keyed (MASK_KEYS; driver, results)",
    "sources": "each source model's fingerprint (JSON; driver)",
    "data": "each fitness/validation data file's fingerprint (JSON; driver)",
    "genes": "what each gene is (JSON, SearchSpace.genes_info; driver, reports)",
    "objectives": "the fitness terms as [key, metric] pairs (JSON; driver, pareto)",
    "self_check": "the live model's self-check notes (a JSON list; driver via add_note, results, reports)",
    "ray_utilisation": "the Ray workers' busy share (ray_executor)",
    "ray_span_s": "seconds the Ray workers were held (ray_executor)",
    "wandb_id": "the Weights & Biases run this run streams to (tracking)",
}
# keys with a generation number after the dot
META_PER_GENERATION = {
    "anchors": "subset fitness: the generation's problems and weights (JSON [ids, weights]; driver)",
    "grown": "subset growth: the problems added to the generation (a JSON list; driver)",
}


def meta_key(name: str, generation: int | None = None) -> str:
    """A declared meta key (`name`, or `name.GENERATION` for the per-generation ones)."""
    key = name if generation is None else f"{name}.{generation}"
    _check_meta_key(key)
    return key


def _check_meta_key(key: str) -> None:
    head, _, tail = key.partition(".")
    if key in META_KEYS or (head in META_PER_GENERATION and tail.isdigit()):
        return
    raise KeyError(f"undeclared run-store meta key {key!r} (declare it in search/records/store.py META_KEYS)")
def _column(sql: str, json_value: bool = False, default: Any = None):
    return field(default=default, metadata={"sql": sql, "json": json_value})


@dataclass
class Trial:
    """One row of the trials table. The table is made from these fields (runs recorded by older versions get the
    columns they lack), so a new recorded field is one line here plus the code that writes it."""

    id: int = _column("INTEGER PRIMARY KEY")
    generation: int = _column("INTEGER NOT NULL")
    genes: list[float] = _column("TEXT NOT NULL", True)  # normalised to [0, 1]
    params: dict[str, float] = _column("TEXT NOT NULL", True)  # gene name -> the value it stands for
    recipe: str = _column("TEXT NOT NULL")  # the exact candidate (YAML): exporting it gives the scored model
    # running | complete | failed | raced (out: fitness is its estimate) | estimated (subset: fitness is an estimate)
    status: str = _column("TEXT NOT NULL")
    fitness: float | None = _column("REAL")
    scores: dict[str, Any] = _column("TEXT", True)  # evaluator -> metric -> value
    error: str | None = _column("TEXT")
    started: float | None = _column("REAL")
    finished: float | None = _column("REAL")
    merge_s: float | None = _column("REAL")
    eval_s: float | None = _column("REAL")
    val_fitness: float | None = _column("REAL")  # validation score of each generation's best (if configured)
    val_scores: dict[str, Any] | None = _column("TEXT", True)
    ask_index: int | None = _column("INTEGER")  # its place in its generation's asks (extras after popsize)
    told: int | None = _column("INTEGER")  # its place in the generation's update (None: not told, a straggler)
    prompt_tokens: int | None = _column("INTEGER")  # what scoring it spent: prompt tokens read
    generated_tokens: int | None = _column("INTEGER")  # and new tokens generated
    duplicate_of: int | None = _column("INTEGER")  # the same candidate was scored before: its result, not re-run
    items_used: int | None = _column("INTEGER")  # racing: fitness problems scored (all, unless raced out)
    items_total: int | None = _column("INTEGER")
    bound: float | None = _column("REAL")  # racing: the upper confidence bound on the full-set fitness at the stop
    estimate: float | None = _column("REAL")  # subset fitness: the estimate the optimiser was told (fitness: full)
    item_values: list[float] | None = _column("TEXT", True)  # every problem's value, where all were scored


def _tokens(scores: dict) -> tuple[int, int]:
    """(prompt, generated) tokens that a scoring spent, summed over its evaluators."""
    return (sum(int(m.get("prompt_tokens", 0)) for m in scores.values()),
            sum(int(m.get("generated_tokens", 0)) for m in scores.values()))


SCORED = ("complete", "raced", "estimated")  # trial statuses that carry a fitness the optimiser is told


SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);\n"
    "CREATE TABLE IF NOT EXISTS trials (" + ", ".join(f"{f.name} {f.metadata['sql']}" for f in fields(Trial)) + ");\n"
    "CREATE TABLE IF NOT EXISTS generations (generation INTEGER PRIMARY KEY, state TEXT NOT NULL, "
    "best_fitness REAL, mean_fitness REAL, finished REAL);\n"  # state: the optimiser's summary after the update
)


class RunStore:
    """The run folder's database. Opened to read (status, export, report) it must already hold a run; opened with
    `create=True` (a search) it is made if missing. A damaged file is a one-line UserError naming it, never a
    traceback; `RunLock` keeps a second process out of a run that is being written."""

    def __init__(self, folder: Path, create: bool = False):
        self.folder = Path(folder)
        self.path = self.folder / DB_NAME
        if self.folder.exists() and not self.folder.is_dir():
            raise UserError("the run folder is a file, not a folder", str(folder))
        if not self.path.exists() and not create:
            if run_is_running(self.folder):
                raise RunStarting("the run is starting: nothing is recorded yet; try again in a moment", str(folder))
            raise UserError("not a run folder (no run.sqlite)", str(folder))
        fresh = not self.path.exists()
        self.folder.mkdir(parents=True, exist_ok=True)
        try:
            self.db = sqlite3.connect(str(self.path), isolation_level=None)  # autocommit; one statement per write
        except sqlite3.Error as e:
            raise UserError(f"cannot open the run database: {e}", str(self.path)) from None
        self.db.row_factory = sqlite3.Row
        try:
            if not fresh:
                self._check_readable(writer=create)
            self._q("PRAGMA journal_mode=WAL")  # a crash or kill never leaves a half-written commit
            self._q("PRAGMA synchronous=NORMAL")  # with WAL: durable against process crashes
            if fresh or create:
                self.db.executescript(SCHEMA)
                self._migrate()
        except sqlite3.DatabaseError as e:
            self.db.close()
            raise UserError(_damage(self.path, e), str(self.path)) from None
        except BaseException:
            self.db.close()
            raise

    def _check_readable(self, writer: bool = False) -> None:
        """A run database that is empty, not a database or damaged fails here, before anything reads it. A reader
        that comes while the search is still making the database (empty, or no config yet) is told the run is
        starting (`RunStarting`), not that its records are lost."""
        starting = not writer and run_is_running(self.folder)
        if self.path.stat().st_size == 0:
            if starting:
                raise RunStarting("the run is starting: nothing is recorded yet; try again in a moment",
                                  str(self.folder))
            raise UserError("the run database is empty (0 bytes): the run's records are lost; start a new run "
                            "folder (a backup of run.sqlite, if you have one, can replace it)", str(self.path))
        ok = self._q("PRAGMA quick_check").fetchone()[0]
        if ok != "ok":
            raise sqlite3.DatabaseError(f"integrity check: {ok}")
        tables = {r[0] for r in self._q("SELECT name FROM sqlite_master WHERE type='table'")}
        if not {"meta", "trials", "generations"} <= tables or self.get_meta("config") is None:
            if starting:
                raise RunStarting("the run is starting: its config is not recorded yet; try again in a moment",
                                  str(self.folder))
            raise UserError("this database holds no evomerge run (no config recorded)", str(self.path))

    def _migrate(self) -> None:
        """Add the columns that runs made by older versions lack (every column added later is nullable)."""
        have = {row[1] for row in self._q("PRAGMA table_info(trials)")}
        for f in fields(Trial):
            if f.name not in have:
                self._q(f"ALTER TABLE trials ADD COLUMN {f.name} {f.metadata['sql'].split()[0]}")

    def _q(self, sql: str, args: tuple | list = ()) -> sqlite3.Cursor:
        """Every statement goes through here, so damage found mid-run is a UserError naming the file."""
        try:
            return self.db.execute(sql, args)
        except sqlite3.DatabaseError as e:
            raise UserError(_damage(self.path, e), str(self.path)) from None

    def _many(self, sql: str, rows: list) -> None:
        try:
            self.db.executemany(sql, rows)
        except sqlite3.DatabaseError as e:
            raise UserError(_damage(self.path, e), str(self.path)) from None

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> "RunStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- the folder's files ------------------------------------------------------------------------------------
    def write_config_text(self, text: str) -> None:
        """The config as the user wrote it (comments and all), beside the parsed one in the database."""
        (self.folder / CONFIG_FILE).write_text(text, encoding="utf-8")

    def write_best_recipe(self, trial: "Trial") -> Path:
        path = self.folder / BEST_RECIPE
        path.write_text(trial.recipe, encoding="utf-8")
        return path

    @property
    def best_model_dir(self) -> Path:
        """Where `run:DIR` keeps the exported best model (search/records/results.py)."""
        return self.folder / "best_model"

    def exported_best(self) -> str | None:
        """The trial id best_model holds, if it was exported (a resumed run may have found a better one since)."""
        marker = self.folder / "best_model.trial"
        return marker.read_text().strip() if marker.exists() and (self.best_model_dir / "config.json").exists() else None

    def set_exported_best(self, trial_id: int | None) -> None:
        marker = self.folder / "best_model.trial"
        if trial_id is None:
            marker.unlink(missing_ok=True)
        else:
            marker.write_text(f"{trial_id}\n")

    def config(self) -> dict[str, Any]:
        """The search config the run was started with (JSON form)."""
        return json.loads(self.get_meta("config"))

    def add_note(self, key: str, note: str) -> None:
        """Append a line to a list kept in meta (self-check fallbacks...), once."""
        notes = self.notes(key)
        if note not in notes:
            self.set_meta(key, json.dumps(notes + [note]))

    def notes(self, key: str) -> list[str]:
        text = self.get_meta(key)
        return json.loads(text) if text else []

    def genes_info(self) -> list[dict[str, Any]] | None:
        """What each gene is (SearchSpace.genes_info), for reports; None for runs recorded before it was kept."""
        text = self.get_meta("genes")
        return json.loads(text) if text else None

    def trial_span(self) -> float:
        """Seconds from the first trial's start to the last trial's end (model loading excluded)."""
        row = self._q("SELECT MIN(started), MAX(finished) FROM trials").fetchone()
        return (row[1] - row[0]) if row[0] and row[1] else 0.0

    # -- meta --------------------------------------------------------------------------------------------------
    def get_meta(self, key: str) -> str | None:
        _check_meta_key(key)
        row = self._q("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        _check_meta_key(key)
        self._q("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    # -- trials ------------------------------------------------------------------------------------------------
    def start_trial(self, trial_id: int, generation: int, genes: list[float], params: dict, recipe: str,
                    ask_index: int | None = None) -> None:
        self._q(
            "INSERT OR REPLACE INTO trials (id, generation, genes, params, recipe, status, started, ask_index) "
            "VALUES (?, ?, ?, ?, ?, 'running', ?, ?)",
            (trial_id, generation, json.dumps(genes), json.dumps(params), recipe, time.time(), ask_index),
        )

    def mark_told(self, trial_ids: list[int]) -> None:
        self._many("UPDATE trials SET told=? WHERE id=?", [(k, t) for k, t in enumerate(trial_ids)])

    def generation_trials(self, generation: int) -> list[Trial]:
        rows = self._q(f"SELECT {_COLS} FROM trials WHERE generation=? ORDER BY ask_index, id", (generation,))
        return [_trial(r) for r in rows]

    def next_id(self) -> int:
        return self._q("SELECT COALESCE(MAX(id) + 1, 0) FROM trials").fetchone()[0]

    def finish_trial(self, trial_id: int, fitness: float, scores: dict, merge_s: float | None,
                     eval_s: float | None, duplicate_of: int | None = None, race: dict | None = None) -> None:
        """A scored trial, in one statement. With `race` (racing), a raced-out trial gets status 'raced' and
        `fitness` is the estimate the optimiser was told."""
        prompt, generated = _tokens(scores)
        race = race or {}
        status = "raced" if race.get("raced") else "estimated" if race.get("estimated") else "complete"
        values = race.get("values")
        self._q(
            "UPDATE trials SET status=?, fitness=?, scores=?, error=NULL, finished=?, merge_s=?, eval_s=?, "
            "prompt_tokens=?, generated_tokens=?, duplicate_of=?, items_used=?, items_total=?, bound=?, "
            "item_values=? WHERE id=?",
            (status, fitness, json.dumps(scores), time.time(), merge_s, eval_s,
             prompt if duplicate_of is None else 0, generated if duplicate_of is None else 0, duplicate_of,
             race.get("items"), race.get("total"), race.get("bound"),
             json.dumps([values[i] for i in sorted(values)]) if values else None, trial_id),
        )

    def promote(self, trial_id: int, fitness: float, scores: dict, race: dict, eval_s: float | None = None) -> None:
        """Subset fitness: an estimated trial scored on the full set. Its fitness becomes the full score (what
        the run reports and exports); the estimate the optimiser was told stays in `estimate`. What the check
        spent (tokens, seconds) adds to what the trial spent on its anchors."""
        values = race["values"]
        prompt, generated = _tokens(scores)
        self._q("UPDATE trials SET status='complete', estimate=fitness, fitness=?, scores=?, items_used=?, "
                "item_values=?, prompt_tokens=COALESCE(prompt_tokens, 0)+?, "
                "generated_tokens=COALESCE(generated_tokens, 0)+?, eval_s=COALESCE(eval_s, 0)+? "
                "WHERE id=? AND status='estimated'",
                (fitness, json.dumps(scores), race["items"], json.dumps([values[i] for i in sorted(values)]),
                 prompt, generated, eval_s or 0.0, trial_id))

    def extend(self, trial_id: int, fitness: float, scores: dict, items: int, eval_s: float | None = None) -> None:
        """Subset growth: an estimated trial scored on `items` more problems (equal weights). Its fitness becomes
        the mean over all its problems; counts (seconds, tokens, items) add up, metrics average by problems."""
        t = self.trial(trial_id)
        n = t.items_used or 0
        merged = json.loads(json.dumps(t.scores or {}))
        for key, metrics in scores.items():
            old = merged.setdefault(key, {})
            for m, v in metrics.items():
                if not isinstance(v, (int, float)):
                    continue
                if m in ("seconds", "prompt_tokens", "generated_tokens", "items"):
                    old[m] = old.get(m, 0) + v
                else:
                    old[m] = (old.get(m, 0.0) * n + v * items) / (n + items)
        prompt, generated = _tokens(scores)
        self._q("UPDATE trials SET fitness=?, scores=?, items_used=?, prompt_tokens=COALESCE(prompt_tokens, 0)+?, "
                "generated_tokens=COALESCE(generated_tokens, 0)+?, eval_s=COALESCE(eval_s, 0)+? "
                "WHERE id=? AND status='estimated'",
                ((t.fitness * n + fitness * items) / (n + items), json.dumps(merged), n + items, prompt, generated,
                 eval_s or 0.0, trial_id))

    def spent(self) -> dict[str, float]:
        """What the run has spent so far: tokens, and seconds merging and scoring."""
        row = self._q("SELECT COALESCE(SUM(prompt_tokens), 0), COALESCE(SUM(generated_tokens), 0), "
                      "COALESCE(SUM(merge_s), 0), COALESCE(SUM(eval_s), 0), COUNT(duplicate_of) FROM trials").fetchone()
        return {"prompt_tokens": row[0], "generated_tokens": row[1], "merge_s": row[2], "eval_s": row[3],
                "duplicates": row[4]}

    def fail_trial(self, trial_id: int, error: str, merge_s: float | None = None) -> None:
        self._q(
            "UPDATE trials SET status='failed', fitness=NULL, error=?, finished=?, merge_s=? WHERE id=?",
            (error[:2000], time.time(), merge_s, trial_id),
        )

    def trial(self, trial_id: int) -> Trial | None:
        row = self._q(f"SELECT {_COLS} FROM trials WHERE id=?", (trial_id,)).fetchone()
        return _trial(row) if row else None

    def trials(self, status: str | None = None) -> list[Trial]:
        q = f"SELECT {_COLS} FROM trials" + (" WHERE status=?" if status else "") + " ORDER BY id"
        return [_trial(r) for r in self._q(q, (status,) if status else ())]

    def count(self, status: str) -> int:
        return self._q("SELECT COUNT(*) FROM trials WHERE status=?", (status,)).fetchone()[0]

    def best(self) -> Trial | None:
        row = self._q(
            f"SELECT {_COLS} FROM trials WHERE status='complete' ORDER BY fitness DESC, id ASC LIMIT 1").fetchone()
        return _trial(row) if row else None

    def set_validation(self, trial_id: int, fitness: float, scores: dict, eval_s: float | None = None) -> None:
        """A generation's best scored on the validation set; what that spent adds to the trial's spending."""
        prompt, generated = _tokens(scores)
        self._q("UPDATE trials SET val_fitness=?, val_scores=?, prompt_tokens=COALESCE(prompt_tokens, 0)+?, "
                "generated_tokens=COALESCE(generated_tokens, 0)+?, eval_s=COALESCE(eval_s, 0)+? WHERE id=?",
                (fitness, json.dumps(scores), prompt, generated, eval_s or 0.0, trial_id))

    def best_validated(self) -> Trial | None:
        row = self._q(f"SELECT {_COLS} FROM trials WHERE val_fitness IS NOT NULL "
                              "ORDER BY val_fitness DESC, id ASC LIMIT 1").fetchone()
        return _trial(row) if row else None

    def result(self) -> Trial | None:
        """The run's answer: the best-validation trial when validation is configured, else the best trial."""
        return self.best_validated() or self.best()

    # -- generations -------------------------------------------------------------------------------------------
    def finish_generation(self, generation: int, state: dict, fitness: list[float]) -> None:
        self._q(
            "INSERT OR REPLACE INTO generations VALUES (?, ?, ?, ?, ?)",
            (generation, json.dumps(state), max(fitness), sum(fitness) / len(fitness), time.time()),
        )

    def generations(self) -> list[dict[str, Any]]:
        rows = self._q("SELECT generation, state, best_fitness, mean_fitness FROM generations ORDER BY 1")
        return [{"generation": g, "state": json.loads(s), "best": b, "mean": m} for g, s, b, m in rows]


def _readable_trials(path: Path) -> tuple[int, int] | None:
    """(trials, complete trials) that can still be read from a damaged database, or None if none can."""
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error:
        return None
    n = complete = 0
    try:
        for (status,) in db.execute("SELECT status FROM trials ORDER BY id"):
            n += 1
            complete += status == "complete"
    except sqlite3.Error:
        pass
    finally:
        db.close()
    return (n, complete) if n else None


def _damage(path: Path, exc: Exception) -> str:
    """One line: what is wrong with the run database, what can still be read, and what to do next."""
    what = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    readable = _readable_trials(path)
    left = (f"{readable[0]} trials ({readable[1]} complete) can still be read; " if readable
            else "no trial can be read from it; ")
    return (f"the run database is damaged ({what}); {left}back up the run folder, then try "
            f"`sqlite3 {path.name} .recover | sqlite3 recovered.sqlite` and use recovered.sqlite as {path.name}, "
            "or start a new run folder")


_COLS = ", ".join(f.name for f in fields(Trial))
_JSON = {f.name for f in fields(Trial) if f.metadata["json"]}


def _trial(row: sqlite3.Row) -> Trial:
    values = {k: row[k] for k in row.keys()}
    for k in _JSON:
        values[k] = json.loads(values[k]) if values[k] else ({} if k == "scores" else values[k])
    return Trial(**values)


LOCK_NAME = "run.lock"


class RunStarting(UserError):
    """Read too early: the search holding the run has not recorded its config yet (a live view waits it out)."""


def lock_holder(folder: Path) -> tuple[int, str] | None:
    """(pid, host) of the process that holds, or last held without releasing, the run's lock, if the file names
    one (`RunLock.release` empties it)."""
    try:
        text = (Path(folder) / LOCK_NAME).read_text().split()
        return int(text[1]), text[3].rstrip(",")
    except (OSError, IndexError, ValueError):
        return None


def run_is_running(folder: Path) -> bool:
    """Whether a search holds the run now. Read from the lock file's holder, never by taking the lock (a probe
    would refuse a search starting at that moment); a holder on another machine counts as running."""
    import os
    import socket

    h = lock_holder(folder)
    if h is None:
        return False
    pid, host = h
    if host != socket.gethostname():
        return True  # cannot tell from here
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # an exited process its parent has not reaped yet is no longer running (Linux: state Z)
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


class RunLock:
    """One writer per run folder. The lock is an flock on RUN_DIR/run.lock, which the kernel drops when its
    process dies (killed, crashed, machine rebooted), so a stale lock is taken over with no guessing about pids;
    the file names the holder so that a refused second process can say who runs the search."""

    def __init__(self, folder: Path):
        self.path = Path(folder) / LOCK_NAME
        self._fh = None

    def acquire(self) -> "RunLock":
        import fcntl
        import os
        import socket

        fh = open(self.path, "a+", encoding="utf-8")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            fh.close()
            raise UserError(f"another process is running this search ({holder}); wait for it to end or stop it",
                            str(self.path.parent)) from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()} on {socket.gethostname()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        fh.flush()
        self._fh = fh
        return self

    def release(self) -> None:
        if self._fh is not None:
            import fcntl

            self._fh.seek(0)
            self._fh.truncate()  # no holder named: the run is not running (run_is_running reads this)
            self._fh.flush()
            fcntl.flock(self._fh, fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

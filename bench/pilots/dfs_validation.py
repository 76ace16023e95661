"""Post hoc, not judged (issue 42, after bench/dfs_budget.py): would the paper's best-validation rule have ranked
the PS model and its 64- and 128-trial PS+DFS bests as the held-out problems do?

    .venv-vllm/bin/python bench/pilots/dfs_validation.py --claims runs/claims --budget runs/dfs-budget --runs runs/dfs-valid

Scores each seed's three models (PS best, PS+DFS best at 64 and at 128 trials) on the 200 held-back training
problems (ja_math_valid_200.jsonl) with the table's evaluator, beside their fourth-draw scores, and reports, per
seed, which model the validation problems would pick and what it scores held out. Written after the budget run's
results were known: it tests an explanation, it does not back a claim of its own.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from bench import paper_claims as claims


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--claims", type=Path, required=True)
    ap.add_argument("--budget", type=Path, required=True)
    ap.add_argument("--runs", type=Path, required=True)
    args = ap.parse_args()
    from evomerge.core.provenance import provenance

    args.runs.mkdir(parents=True, exist_ok=True)
    report: dict = {"provenance": provenance(), "seeds": {}}
    for s in claims.SEEDS:
        models = {"ps": (args.claims, f"ps-s{s}", args.claims / "scores" / f"ps-s{s}.d.jsonl"),
                  "ps-dfs-64": (args.claims, f"ps-dfs-s{s}", args.claims / "scores" / f"ps-dfs-s{s}.d.jsonl"),
                  "ps-dfs-128": (args.budget, f"ps-dfs-s{s}", args.budget / "scores" / f"ps-dfs-s{s}.d.jsonl")}
        row = {}
        for key, (runs, name, held_out) in models.items():
            valid = claims.score(args.runs, f"{name}.{key}", claims.model_of(runs, name), claims.VALIDATION)
            row[key] = {"validation": claims.accuracy(claims.rows_of(valid))["acc_ja"],
                        "held_out": claims.accuracy(claims.rows_of(held_out))["acc_ja"]}
        pick = max(row, key=lambda k: (row[k]["validation"], k == "ps"))
        best = max(row, key=lambda k: row[k]["held_out"])
        report["seeds"][s] = {"models": row, "validation_picks": pick, "held_out_best": best}
    (args.runs / "report.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

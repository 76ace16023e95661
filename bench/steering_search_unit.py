"""The five recorded steering proofs' held-out differences with the search as the unit (added 2026-12-06).

The proofs' reports (results/fitness-steering*.json) give, per seed, the cheap arm's best minus the full arm's
best on the same held-out problems, and a pooled interval that resamples problems: how sure one can be about
these six searches. A user runs one search; how sure one can be about the next search with the setting is the
interval over seeds (three differences, a t interval with 2 degrees of freedom: evaluators/compare.py). Those
reports predate the script's recording of it (bench/fitness_steering.py now reports both); this reads the
recorded per-seed differences, changes nothing in them, and writes results/fitness-steering-search-unit.json.
The reports do not record the commit they ran from either (results/fitness-steering.md names the commits that
fixed each proof; the runs' own checkouts were not recorded).

    python bench/steering_search_unit.py
"""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REPORTS = [  # (proof, report, which held-out set)
    ("first (cheap, af44fd3)", "results/fitness-steering.json", "first split (400)"),
    ("second (grow, aba7120)", "results/fitness-steering-grow.json", "first split (400)"),
    ("third (likelihood)", "results/fitness-steering-likelihood.json", "first split (400)"),
    ("fourth (agreement, 559d7d4)", "results/fitness-steering-agreement.json", "second draw (400)"),
    ("fourth (agreement), first split", "results/fitness-steering-agreement-first-held-out.json", "first split (400)"),
    ("fifth (agreement-run, fdcdc51)", "results/fitness-steering-run.json", "third draw (600)"),
    ("fifth (agreement-run, fdcdc51), first split", "results/fitness-steering-run.json#first_split",
     "first split (400)"),
]


def main() -> None:
    from evomerge.evaluators.compare import search_unit_interval

    rows = []
    for proof, name, held_out in REPORTS:
        path, _, part = name.partition("#")
        report = json.loads((ROOT / path).read_text())
        if part:
            report = report[part]
        diffs = [report["seeds"][s]["vs_full"]["difference"] for s in sorted(report["seeds"])]
        rows.append({"proof": proof, "report": name, "held_out": held_out, "per_seed": diffs,
                     "problem_unit": report["pooled"]["interval_95"], "search_unit": search_unit_interval(diffs),
                     "commit_recorded": "provenance" in report})
    out = ROOT / "results" / "fitness-steering-search-unit.json"
    out.write_text(json.dumps(rows, indent=2) + "\n")
    print("| proof | held-out | per seed (cheap - full) | problems as unit | searches as unit |")
    print("|---|---|---|---|---|")
    for r in rows:
        lo, hi = r["search_unit"]["interval_95"]
        print(f"| {r['proof']} | {r['held_out']} | {', '.join(f'{d:+.3f}' for d in r['per_seed'])} | "
              f"[{r['problem_unit'][0]:+.3f}, {r['problem_unit'][1]:+.3f}] | [{lo:+.3f}, {hi:+.3f}] |")


if __name__ == "__main__":
    main()

"""Pilot for issue 42 item 4's second arm (design data only: the six-wording fitness set, no held-out draw is read).

Do the five shipped PS bests (search/miniature-ps.yaml seeds 0-4), scored on one wording, differ on the 64 problems
of evomerge:data/ja_math_fitness_wordings_64.jsonl, and in which wordings? A fitness that separates them there gives a
search something to choose by that the one-wording fitness ties.

    .venv-vllm/bin/python bench/pilots/repeat/wordings_pilot.py --out runs/pilot-wordings
"""
import argparse
import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
from bench.pilots.repeat.pool_pilot import scored

DATA = "evomerge:data/ja_math_fitness_wordings_64.jsonl"


def wording(question: str) -> tuple[str, str]:
    """(family name, operation) of a question, from the template it fits."""
    from evomerge.miniature import data

    names = {i: name for name, i in data.FAMILY.items()}
    for op, templates in data.JA_TEMPLATES.items():
        for i, template in enumerate(templates):
            if re.fullmatch(re.sub(r"\\\{[a-z]+\\\}", ".+?", re.escape(template)), question):
                return names[i], op
    return "?", "?"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    summary = {}
    for row, rows in scored(args.out, DATA).items():
        cells: dict = {}
        for r in rows:
            family, op = wording(r["question"])
            for key in (family, op):
                n, k = cells.get(key, (0, 0))
                cells[key] = (n + 1, k + bool(r["acc_ja"]))
        summary[row] = {"acc_ja": sum(bool(r["acc_ja"]) for r in rows) / len(rows),
                        **{key: f"{k}/{n}" for key, (n, k) in cells.items()}}
        print(row, summary[row], flush=True)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()

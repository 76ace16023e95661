"""What a model got wrong on the miniature's word problems, from a samples file (`evomerge eval --samples`, or a
table cell's `<cell>.samples.jsonl`): accuracy per operation, and each wrong answer's kind.

    python scripts/miniature_errors.py runs/miniature-small/table-cache/*.samples.jsonl

Kinds: "other operation" (the answer of +, - or x on the same two numbers, but not the one asked: the problem
was misread), "not Japanese" (right number, English answer), "no number", "other" (an arithmetic slip, a number
copied from the question...).
"""

from __future__ import annotations

import collections
import json
import re
import sys


def classify(row: dict) -> tuple[str, str]:
    a, b = (int(x) for x in re.findall(r"\d+", row["question"])[:2])
    results = {"+": a + b, "-": a - b, "x": a * b}
    op = next((o for o, v in results.items() if v == row["answer"]), "?")
    if row["correct"] and row["japanese"]:
        return op, "correct"
    if row["correct"]:
        return op, "not Japanese"
    if row["extracted"] is None:
        return op, "no number"
    if any(row["extracted"] == v for o, v in results.items() if o != op):
        return op, "other operation"
    return op, "other"


def main(paths: list[str]) -> None:
    for path in paths:
        rows = [json.loads(line) for line in open(path, encoding="utf-8")]
        per_op, any_lang, total = collections.Counter(), collections.Counter(), collections.Counter()
        kinds = collections.Counter()
        for row in rows:
            op, kind = classify(row)
            total[op] += 1
            per_op[op] += kind == "correct"
            any_lang[op] += bool(row["correct"])
            kinds[kind] += 1
        ops = ", ".join(f"{op} {per_op[op]}/{total[op]} ({any_lang[op]} in any language)" for op in sorted(total))
        print(f"{path}: {len(rows)} problems; correct in Japanese per operation: {ops}; "
              + ", ".join(f"{k} {v}" for k, v in kinds.most_common()))


if __name__ == "__main__":
    main(sys.argv[1:])

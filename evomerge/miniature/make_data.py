"""Regenerate the small data files under evaluators/data (deterministic): python -m evomerge.miniature.make_data"""

from __future__ import annotations

import json
from pathlib import Path

from evomerge.miniature import data

ROOT = Path(__file__).resolve().parents[2] / "evaluators" / "data"


def main() -> None:
    ROOT.mkdir(parents=True, exist_ok=True)
    (ROOT / "ja_math_fitness.txt").write_text("\n\n".join(data.ja_math_texts(60, seed=100, split="fitness")) + "\n",
                                              encoding="utf-8")
    for split, n, seed in (("fitness", 64, 200), ("test", 100, 300)):
        rows = [{"question": p.question, "answer_number": p.answer} for p in data.ja_math(n, seed, split)]
        (ROOT / f"ja_math_{split}.jsonl").write_text(
            "\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")
    print(f"wrote data files in {ROOT}")


if __name__ == "__main__":
    main()

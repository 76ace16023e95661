"""Pilot for issue 42 item 4 (design data only: the 256-problem fitness pool, no held-out draw is read).

Do the five shipped PS bests (runs/claims seeds 0-2, runs/seeds 3-4), which tie on the 64 fitness problems, separate
on 256 problems of the same training wording? If they do, and in the direction the held-out draws separate them
(products readers first), a search that chooses its final model on the pool should end on the same kind of merge
whatever its seed.

    .venv-vllm/bin/python bench/pilots/repeat/pool_pilot.py --out runs/pilot-pool
"""
import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
from bench.composition_fresh import operation_and_kind
from bench.paper_claims import EVALUATOR, arm_config, evomerge, rows_of

POOL = "evomerge:data/ja_math_fitness_256.jsonl"
ROOT = Path(__file__).resolve().parents[3]
MODELS = {f"ps-s{s}": ROOT / ("runs/claims" if s < 3 else "runs/seeds") / "models" / f"ps-s{s}" for s in range(5)}


def scored(out: Path, data: str) -> dict[str, list[dict]]:
    """Each shipped best's rows on `data` (mgsm_ja as issue 42's tables score it), scored once into OUT."""
    import yaml

    out.mkdir(parents=True, exist_ok=True)
    cfg = arm_config("ps", 0, out)
    cfg["fitness"] = [{**EVALUATOR, "data": data}]
    config = out / "eval.yaml"
    config.write_text(yaml.safe_dump(cfg, allow_unicode=True))
    rows = {}
    for row, model in MODELS.items():
        samples = out / f"{row}.jsonl"
        if not samples.exists():
            evomerge("eval", model, "--config", config, "--samples", samples.with_suffix(".partial"), "--json")
            samples.with_suffix(".partial").rename(samples)
        rows[row] = rows_of(samples)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    summary = {}
    for row, rows in scored(args.out, POOL).items():
        by_op: dict = {}
        for r in rows:
            op, _ = operation_and_kind(r["question"])
            n, k = by_op.get(op, (0, 0))
            by_op[op] = (n + 1, k + r["acc_ja"])
        total = sum(k for _, k in by_op.values())
        summary[row] = {"acc_ja": total / 256, **{op: f"{k:.0f}/{n}" for op, (n, k) in sorted(by_op.items())}}
        print(row, summary[row], flush=True)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()

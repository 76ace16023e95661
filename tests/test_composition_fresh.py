"""bench/composition_fresh.py (issue 42, item 2 on the fifth draw): its problems are read by operation in every
wording, and its judged test resamples arithmetic facts, not problems, and holds only when both intervals do."""

from __future__ import annotations

import random

import pytest

from bench.composition_fresh import composition_test, operation_and_kind
from evomerge.miniature import data


@pytest.mark.parametrize("family", sorted(data.FAMILY))
def test_every_wording_is_read_by_operation_and_kind(family):
    rng = random.Random(family)
    for op in "+-*":
        template = data.JA_TEMPLATES[op][data.FAMILY[family]]
        for a, b, kind in {"+": [(27, 15, "carry"), (21, 15, "no carry")],
                           "-": [(52, 17, "borrow"), (58, 17, "no borrow")],
                           "*": [(12, 9, "within the training range (2-12 x 2-9)"),
                                 (9, 12, "beyond the training range")]}[op]:
            item, _, counter = rng.choice(data.ITEMS)
            question = template.format(n=rng.choice(data.NAMES_JA), a=a, b=b, item=item, c=counter)
            assert operation_and_kind(question) == (op, kind), question


def _rows(answers: list[tuple[str, int, int, int]], right: set[str], ja: bool) -> list[dict]:
    """Sample rows for problems (op, a, b, answer): right where the op is in `right`."""
    out = []
    for op, a, b, answer in answers:
        q = data.JA_TEMPLATES[op][data.FAMILY["fresh"]].format(n="蓮", a=a, b=b, item="花", c="本")
        ok = op in right
        out.append({"question": q, "answer": answer, "correct": ok, "acc_ja": ok and ja})
    return out


def test_the_judged_test_clusters_repeated_facts_and_needs_every_seed():
    problems = [("+", 20 + i, 5, 25 + i) for i in range(30)] + [("*", 2 + i % 8, 4, (2 + i % 8) * 4)
                                                                for i in range(64)]
    math = _rows(problems, {"+"}, ja=False)
    merge = _rows(problems, {"+", "*"}, ja=True)
    seeds = {s: merge for s in (0, 1, 2)}
    c = composition_test(math, seeds)
    assert c["pooled_by_fact"]["clusters"] == 38  # 30 sums and 8 products, each product asked 8 times
    assert c["pooled_by_fact"]["difference"] == pytest.approx(64 / 94)
    assert c["holds"] is True and c["by_operation"]["*"] == {"problems": 64, "math_any": 0, "merge_ja_mean": 64.0,
                                                             "difference": 1.0}
    item, fact = c["pooled_by_item"]["interval_95"], c["pooled_by_fact"]["interval_95"]
    assert fact[1] - fact[0] > 2 * (item[1] - item[0])  # eight facts are weaker evidence than 64 problems
    worse = composition_test(math, {s: _rows(problems, {"+"} if s else {"+", "*"}, ja=True) for s in (0, 1, 2)})
    assert worse["holds"] is False  # one seed of three composes: the search-unit interval reaches below 0
    assert composition_test(math, {0: merge})["holds"] is None

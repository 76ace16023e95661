"""`evomerge compare`: a paired test of two models' per-item samples, against hand computations."""

from __future__ import annotations

import json
import math

import pytest

from evomerge.evaluators.compare import paired_test
from helpers import cli


def write(path, values, metric="acc_ja", questions=None):
    rows = [{"evaluator": "mgsm_ja", "question": (questions or {}).get(i, f"q{i}"), "answer": i, metric: v}
            for i, v in enumerate(values)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_mcnemar_is_the_exact_binomial_on_disagreements():
    a = [1, 0, 0, 1, 0, 0, 1, 0, 0, 0, 1, 0]
    b = [1, 1, 1, 0, 1, 1, 1, 1, 0, 0, 1, 0]  # B right where A is wrong 5 times, the reverse once
    r = paired_test(a, b)
    assert (r["b_right_a_wrong"], r["a_right_b_wrong"]) == (5, 1) and r["test"] == "McNemar exact"
    by_hand = 2 * sum(math.comb(6, k) for k in range(0, 2)) / 2 ** 6  # two-sided: P(X <= 1) + P(X >= 5)
    assert r["p_value"] == pytest.approx(by_hand)
    assert r["difference"] == pytest.approx(4 / 12) and r["interval_95"][0] < 4 / 12 < r["interval_95"][1]
    assert paired_test(a, a)["p_value"] == 1.0


def test_clusters_resample_items_that_are_not_independent():
    """Forty items each asked five times in other words are forty pieces of evidence, not two hundred: with the
    copies as clusters the interval is the forty items' own (same width), without them it is ~sqrt(5) narrower."""
    import numpy as np

    rng = np.random.default_rng(3)
    a, b = rng.integers(0, 2, 40).tolist(), rng.integers(0, 2, 40).tolist()
    width = lambda r: r["interval_95"][1] - r["interval_95"][0]  # noqa: E731
    alone = paired_test(a, b)
    copies = paired_test(a * 5, b * 5)
    clustered = paired_test(a * 5, b * 5, clusters=list(range(40)) * 5)
    assert clustered["difference"] == pytest.approx(alone["difference"]) and clustered["clusters"] == 40
    assert width(clustered) == pytest.approx(width(alone), rel=0.1)
    assert width(copies) < 0.6 * width(clustered)
    assert paired_test(a, b, clusters=[("x", i) for i in range(40)])["clusters"] == 40  # any JSON-able label
    with pytest.raises(ValueError, match="3 cluster labels for 40 items"):
        paired_test(a, b, clusters=[1, 2, 3])


def test_values_that_are_not_right_or_wrong_use_wilcoxon():
    from scipy.stats import wilcoxon

    a = [0.1, 0.5, 0.3, 0.9, 0.4, 0.2, 0.35, 0.6]
    b = [0.2, 0.55, 0.25, 0.95, 0.6, 0.3, 0.5, 0.7]
    r = paired_test(a, b)
    assert r["test"] == "Wilcoxon signed-rank" and r["p_value"] == pytest.approx(wilcoxon(b, a).pvalue)


def test_the_command_pairs_files_and_refuses_ones_that_do_not_pair(tmp_path, capsys):
    a = write(tmp_path / "a.jsonl", [1, 0, 0, 1])
    b = write(tmp_path / "b.jsonl", [True, True, False, True])
    assert cli("compare", a, b, "--metric", "acc_ja", "--json") == 0
    r = json.loads(capsys.readouterr().out)
    assert r["mean_a"] == 0.5 and r["mean_b"] == 0.75 and r["b_right_a_wrong"] == 1
    assert cli("compare", a, b, "--metric", "acc_ja") == 0
    assert "McNemar exact p = 1" in capsys.readouterr().out
    other = write(tmp_path / "c.jsonl", [1, 0, 0, 1], questions={2: "another"})
    assert cli("compare", a, other, "--metric", "acc_ja") == 2
    assert "item 3 differs" in capsys.readouterr().err
    assert cli("compare", a, write(tmp_path / "d.jsonl", [1, 0]), "--metric", "acc_ja") == 2
    assert cli("compare", a, b, "--metric", "rougeL") == 2
    assert "no 'rougeL'" in capsys.readouterr().err
    assert cli("compare", a, tmp_path / "missing.jsonl", "--metric", "acc_ja") == 2

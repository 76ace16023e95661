"""Japanese ROUGE-L against a straightforward reference computation (LCS over MeCab words)."""

from __future__ import annotations

import pytest

pytest.importorskip("fugashi")

from evomerge.evaluators.rouge_ja import MecabTokenizer, normalize, rouge_l, rouge_l_pairs  # noqa: E402

PAIRS = [
    ("猫がマットの上に座っています。", "猫がマットに座っている。"),
    ("赤いりんごが二つあります", "りんごが二つあります"),
    ("男性が自転車に乗っている", "女性が走っている"),
    ("空は青いです", "空は青いです"),
    ("テーブルの上に花瓶があります😀", "テーブルに花瓶"),
    ("犬", "猫"),
    ("白い建物の前に車が止まっている", "The car is parked."),
]


def lcs(a: list[str], b: list[str]) -> int:
    table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            table[i + 1][j + 1] = table[i][j] + 1 if x == y else max(table[i][j + 1], table[i + 1][j])
    return table[-1][-1]


def reference_f(ref: str, pred: str) -> float:
    tok = MecabTokenizer()
    r, p = tok.tokenize(ref), tok.tokenize(pred)
    if not r or not p:
        return 0.0
    n = lcs(r, p)
    if n == 0:
        return 0.0
    prec, rec = n / len(p), n / len(r)
    return 2 * prec * rec / (prec + rec)


def test_pairs_equal_hand_lcs():
    refs, preds = zip(*PAIRS)
    ours = rouge_l_pairs(list(refs), list(preds))
    assert ours == pytest.approx([reference_f(r, p) for r, p in PAIRS], abs=1e-12)
    assert ours[3] == 1.0 and ours[5] == 0.0 and 0 < ours[0] < 1


def test_default_english_tokenizer_scores_zero_on_japanese():
    from rouge_score import rouge_scorer

    plain = rouge_scorer.RougeScorer(["rougeL"])
    assert plain.score("猫がマットの上に座っています", "猫がマットに座っている")["rougeL"].fmeasure == 0
    assert rouge_l_pairs(["猫がマットの上に座っています"], ["猫がマットに座っている"])[0] > 0.5


def test_corpus_score_is_reproducible_and_near_the_mean():
    refs, preds = map(list, zip(*PAIRS))
    a, b = rouge_l(refs, preds), rouge_l(refs, preds)
    assert a == b
    mean = 100 * sum(rouge_l_pairs(refs, preds)) / len(PAIRS)
    assert a == pytest.approx(mean, abs=3.0)  # bootstrap mid of the per-pair scores


def test_ja_variant_blanks_non_japanese_predictions():
    refs, preds = ["白い建物の前に車が止まっている"], ["白い建物 the car is parked 車"]
    assert rouge_l_pairs(refs, preds)[0] > 0
    assert rouge_l_pairs(refs, preds, ja_only=True)[0] == 0.0


def test_normalize():
    assert normalize("ﾃｽﾄ😀  です\n") == "テストです"


def test_corpus_rouge_l_from_f_measures_equals_the_aggregator_on_full_scores():
    """Racing and subset fitness rebuild the corpus score from each pair's F-measure: the same number as
    rouge-score's BootstrapAggregator fed the full (precision, recall, F) scores, seed for seed."""
    import numpy as np
    from rouge_score import scoring

    from evomerge.evaluators.rouge_ja import _scorer, rouge_l_mid

    refs, preds = [r for r, _ in PAIRS] * 3, [p for _, p in PAIRS] * 3
    for seed in (0, 5):
        agg = scoring.BootstrapAggregator()
        for r, p in zip(refs, preds):
            agg.add_scores(_scorer().score(r, p))
        np.random.seed(seed)
        expected = agg.aggregate()["rougeL"].mid.fmeasure * 100
        assert rouge_l(refs, preds, seed=seed) == expected
        assert rouge_l_mid(rouge_l_pairs(refs, preds), seed) == expected

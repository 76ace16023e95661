"""ROUGE-L for Japanese, as the JA-VG-VQA / JA-VLM-Bench evaluation computes it.

rouge-score's default tokenizer keeps only [a-z0-9] and scores 0 on Japanese. Here text is normalised first
(emoji removed, neologdn, whitespace collapsed), tokenised into words by MeCab (fugashi with the unidic-lite
dictionary, wakati output), and scored by rouge-score's RougeScorer; the corpus score is the mid F-measure of
its BootstrapAggregator, x 100. The `_ja` variant blanks a prediction whose reference is Japanese when the
prediction is not (fastText lid.176). Needs `pip install 'evomerge[vlm]'`.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from evomerge.core.errors import UserError
from evomerge.evaluators.langid import is_japanese


def normalize(text: str) -> str:
    import emoji
    import neologdn

    text = emoji.replace_emoji(text, "")
    text = neologdn.normalize(text)
    return " ".join(text.split())


class MecabTokenizer:
    """The tokenizer interface rouge-score expects: `tokenize(text) -> list of tokens`."""

    def __init__(self) -> None:
        try:
            import fugashi
        except ImportError:
            raise UserError("Japanese ROUGE-L needs fugashi and unidic-lite: pip install 'evomerge[vlm]'") from None
        self.tagger = fugashi.Tagger("-Owakati")

    def tokenize(self, text: str) -> list[str]:
        return self.tagger.parse(normalize(text)).split()


@lru_cache(maxsize=1)
def _scorer():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], tokenizer=MecabTokenizer())


def rouge_l_pairs(references: list[str], predictions: list[str], ja_only: bool = False) -> list[float]:
    """ROUGE-L F-measure (0..1) of each prediction against its reference."""
    scorer = _scorer()
    out = []
    for ref, pred in zip(references, predictions, strict=True):
        if ja_only and is_japanese(ref) and not is_japanese(pred):
            pred = ""
        out.append(scorer.score(ref, pred)["rougeL"].fmeasure)
    return out


def rouge_l(references: list[str], predictions: list[str], ja_only: bool = False, seed: int = 0) -> float:
    """Corpus ROUGE-L x 100: rouge-score's bootstrap mid F-measure, with a fixed seed so it is reproducible."""
    return rouge_l_mid(rouge_l_pairs(references, predictions, ja_only), seed)


def rouge_l_mid(fmeasures: list[float], seed: int = 0) -> float:
    """Corpus ROUGE-L x 100 from each pair's F-measure: rouge-score's BootstrapAggregator mid, which resamples
    rows and takes each column's percentiles on its own, so the F-measure column alone gives the same number as
    the full (precision, recall, F) rows. Racing and subset fitness rebuild a set's score from its items with it."""
    from rouge_score import scoring

    agg = scoring.BootstrapAggregator()
    for f in fmeasures:
        agg.add_scores({"rougeL": scoring.Score(precision=f, recall=f, fmeasure=f)})
    state = np.random.get_state()  # the aggregator resamples with numpy's global RNG; leave it as we found it
    np.random.seed(seed)
    try:
        return agg.aggregate()["rougeL"].mid.fmeasure * 100
    finally:
        np.random.set_state(state)

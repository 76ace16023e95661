"""Where an answer ends: the text before the first stop string, the same for every engine (greedy.py, vllm_engine.py)."""

from __future__ import annotations


def truncate_at_stop(text: str, stop: list[str]) -> str:
    cut = len(text)
    for s in stop:
        i = text.find(s)
        if i != -1:
            cut = min(cut, i)
    return text[:cut]

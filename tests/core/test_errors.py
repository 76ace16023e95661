"""Library exceptions become one-line UserErrors, even when their message is empty or long."""

from evomerge.core.errors import reason


def test_reason_first_line_sentence_and_empty():
    assert reason(ValueError("")) == "ValueError"
    assert reason(OSError("Not found. Try again later.\nTraceback-ish detail")) == "Not found. Try again later."
    assert reason(OSError("Not found. Try again later."), first_sentence=True) == "Not found"
    assert len(reason(RuntimeError("x" * 500))) == 200

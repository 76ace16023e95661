"""The one exception type users see.

Anything raised as `UserError` is a problem with the user's input or environment; the command line prints its
message (one to three lines, naming the field or file at fault) and exits with code 2, without a traceback.
Every other exception is a bug in evomerge and keeps its traceback.
"""


class UserError(Exception):
    """Bad input: a recipe, config, path or environment the user can fix."""

    def __init__(self, message: str, where: str | None = None):
        self.where = where
        self.message = message
        super().__init__(f"{where}: {message}" if where else message)


def reason(exc: BaseException, limit: int = 200, first_sentence: bool = False) -> str:
    """A library exception's message, cut to its first line (or sentence) for a one-line UserError."""
    text = str(exc).strip()
    if not text:
        return type(exc).__name__
    line = text.splitlines()[0]
    if first_sentence:
        line = line.split(". ")[0]
    return line[:limit]

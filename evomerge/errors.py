"""The one exception type users see.

Anything raised as `UserError` is a problem with the user's input or environment; the command line prints its
message (one to three lines, naming the field or file at fault) and exits with code 2, without a traceback.
Every other exception is a bug in evomerge and keeps its traceback.
"""


class UserError(Exception):
    """Bad input: a recipe, config, path or environment the user can fix."""

    def __init__(self, message: str, where: str | None = None):
        self.where = where
        super().__init__(f"{where}: {message}" if where else message)

"""The one error type a stage raises for a cause it can name (the job prints it and exits 3, no traceback)."""


class StageError(RuntimeError):
    """A stage stopped for a cause it can name; the message says what happened and what to do."""

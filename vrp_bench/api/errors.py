"""The two kinds of failure the CLI distinguishes, each with its exit code.

A ``UsageError`` is the user's to fix (unknown task, bad YAML, bad arguments): exit 2.
A ``RunError`` happened while running something valid (a model that cannot load): exit 1.
Both carry a one-line, actionable message; the CLI prints it without a traceback.
"""


class VRPError(Exception):
    """Base class for errors reported to the user as one line."""

    exit_code = 1


class UsageError(VRPError):
    """Bad input from the user: arguments, task names, task YAML, model arguments.

    ``cause``: a short, stable category (e.g. "output_type loglikelihood_rolling") under which indexing a task
    folder counts the files it could not use; None for one-off problems (the message says it all)."""

    exit_code = 2

    def __init__(self, message: str, cause: str | None = None) -> None:
        super().__init__(message)
        self.cause = cause


class RunError(VRPError):
    """A valid run that could not be carried out (e.g. weights that cannot be loaded)."""

    exit_code = 1


def one_line(exc: BaseException) -> str:
    """An exception's message as one line: its first line, or its type's name when it has none."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__

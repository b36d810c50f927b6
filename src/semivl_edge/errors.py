"""The one exception type that reaches users: its message is printed as a single line."""


class PipelineError(Exception):
    """A problem with the user's input (file, parameter, data) that stops a stage.

    The message must name the offending file or parameter and say what is wrong, on one line.
    """


def first_line(exc: BaseException, limit: int = 200) -> str:
    """`Type: first line of the message`, for wrapping a library's multi-line exception into a PipelineError."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    return f"{exc.__class__.__name__}: {lines[0][:limit]}" if lines else exc.__class__.__name__

"""The one exception type that reaches users: its message is printed as a single line."""


class PipelineError(Exception):
    """A problem with the user's input (file, parameter, data) that stops a stage.

    The message must name the offending file or parameter and say what is wrong, on one line.
    """

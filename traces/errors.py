"""The single exception type the traces package raises for bad input."""


class TraceError(ValueError):
    """One-line user-facing error: '<file or trace name>: <problem>'.

    Callers (the CLI) print ``str(err)`` and exit; they never show a traceback, so the
    message must name the file or trace and the problem on a single line.
    """

    def __init__(self, where: str, problem: str | None = None):
        msg = str(where) if problem is None else f"{where}: {problem}"
        # Keep it one line even if a caller passes text containing newlines.
        super().__init__(" ".join(msg.split()))

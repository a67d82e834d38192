"""The one exception type users see.

Every stage raises :class:`GliosegError` for problems a user can act on (a bad
file, a bad config, a missing credential). The CLI prints its message without a
traceback and exits non-zero; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from pathlib import Path


class GliosegError(Exception):
    """A problem with the user's input, stated with the file, the fault and the fix."""

    def __init__(self, problem: str, *, path: str | Path | None = None, hint: str | None = None):
        self.problem = problem
        self.path = None if path is None else Path(path)
        self.hint = hint
        super().__init__(self.message)

    @property
    def message(self) -> str:
        where = f"{self.path}: " if self.path is not None else ""
        advice = f"\n  What to do: {self.hint}" if self.hint else ""
        return f"{where}{self.problem}{advice}"

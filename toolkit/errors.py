"""Exceptions raised by the toolkit.

Every error the toolkit raises on purpose derives from :class:`ToolkitError`.
Messages are one line and say which input is at fault, what was expected, what
was found and how to fix it, so that the command line can print them as they
are (exit status 2) and a notebook user knows what to change.
"""

from __future__ import annotations

__all__ = [
    "ToolkitError",
    "InputError",
    "SceneError",
    "TrackError",
    "SeriesError",
    "DataIntegrityError",
]


class ToolkitError(Exception):
    """Base class of every error the toolkit raises on purpose."""

    def __init__(self, message: str) -> None:
        # One line, always: the CLI prints str(error) as its whole message.
        super().__init__(" ".join(str(message).split()))


class InputError(ToolkitError, ValueError):
    """An input (file, argument, table) is missing, malformed or out of range."""


class SceneError(InputError):
    """A scene file cannot be used: unreadable, no CRS, no date, empty."""


class TrackError(InputError):
    """Track geometries cannot be used: not lines, duplicate ids, off the image."""


class SeriesError(InputError):
    """A count series cannot be analysed: NaN or negative values, too short."""


class DataIntegrityError(ToolkitError):
    """Generated or cached data does not match its manifest checksums."""

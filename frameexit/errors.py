"""One exception hierarchy for everything a user can get wrong.

Each class also inherits the matching builtin, so callers that already catch
``ValueError`` or ``FileNotFoundError`` keep working. ``cli.py`` turns any
:class:`FrameExitError` into a one-line ``Error: ...`` message and exit code 1
(:class:`UsageError`: exit code 2, as click's own usage errors); any other
exception is a bug and keeps its traceback.
"""

from __future__ import annotations


class FrameExitError(Exception):
    """Base class of every error caused by the user's input or environment."""


class ConfigError(FrameExitError, ValueError):
    """A job file or override names an unknown key or holds a value of the wrong type."""


class DatasetError(FrameExitError, ValueError):
    """An annotation, class-list or split file cannot be used as it is."""


class DatasetFileNotFoundError(DatasetError, FileNotFoundError):
    """A dataset file named in the job does not exist."""


class CheckpointError(FrameExitError, ValueError):
    """A checkpoint cannot be loaded or does not fit the configured model."""


class BackboneError(FrameExitError, ValueError):
    """A backbone name is unknown or its weights are not available offline."""


class ThresholdError(FrameExitError, ValueError):
    """An exit threshold outside the range in which it means anything."""


class UsageError(FrameExitError, ValueError):
    """Options that contradict each other or cannot mean anything (exit code 2), found before any work."""


class OutputError(FrameExitError, OSError):
    """An output or cache directory that cannot be created or written to."""


class TrainingError(FrameExitError, FloatingPointError):
    """Training met or produced NaN or infinite values (non-finite features, a diverged loss); no head comes out."""

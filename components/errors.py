"""The project's user errors: what the user can fix, as opposed to bugs in vla-stack.

A `VLAStackError` message says what was wrong, what was expected, and which file or argument;
the CLI prints it as one line (`vla-stack <command>: error: ...`) and exits 2, while any other
exception is reported as a bug with its traceback. The concrete kinds keep `ValueError` (and
`FileNotFoundError` for the *NotFound ones) as bases so code that caught those still does.
"""
from __future__ import annotations


class VLAStackError(Exception):
    """A user error: bad input the user can correct; the message names the file or argument."""


class UsageError(VLAStackError, ValueError):
    """A command-line or Python argument outside what the command accepts."""


class ConfigError(VLAStackError, ValueError):
    """A configuration (training YAML, model config) that names something wrong or missing."""


class ConfigNotFoundError(ConfigError, FileNotFoundError):
    """A configuration file or preset that does not exist."""


class CheckpointError(VLAStackError, ValueError):
    """A checkpoint directory that cannot be loaded: missing, truncated, edited or mismatched files."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """A checkpoint directory or file that does not exist."""


class StoreError(VLAStackError, ValueError):
    """An episode store that cannot be opened, read or written as asked."""


class StoreNotFoundError(StoreError, FileNotFoundError):
    """An episode store that does not exist."""


def yaml_problem(err: Exception) -> str:
    """A YAML parse error in one line (``line L, column C: problem``) for a user-error message;
    PyYAML's own text spans several lines with a caret drawing."""
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}" if mark else problem


class RemoteError(VLAStackError, ConnectionError):
    """A served policy that cannot be reached, or that refused a request (its error reply is the message)."""


class VideoError(VLAStackError, ValueError):
    """A video, or the poses sidecar beside it, that cannot be read as asked (corrupt, frameless, malformed)."""


class VideoNotFoundError(VideoError, FileNotFoundError):
    """A video or poses file that does not exist."""

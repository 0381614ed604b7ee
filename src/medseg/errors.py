"""User-facing errors.

Every failure a user can fix raises a :class:`MedsegError` whose message is one line naming the file and
the problem. The CLI prints it and exits with code 2; anything else is a bug (exit code 1).
"""

from __future__ import annotations


class MedsegError(Exception):
    """A problem with the user's input, not with medseg. Printed as one line by the CLI."""


class DataError(MedsegError):
    """A dataset, image or label file is missing, unreadable or inconsistent."""


class ConfigError(MedsegError):
    """A config file or ``--set`` override is invalid."""


class RunError(MedsegError):
    """A run folder is missing, incomplete or cannot be resumed."""

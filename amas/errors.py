"""Errors a person can act on.

An ``AmasError`` is a user's or an operator's mistake (a bad setting, an unreachable
service, a bad argument). The CLI prints its message as one line and exits non-zero,
without a traceback. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class AmasError(Exception):
    """A problem the user can fix; ``str(err)`` is the one line they see."""

    exit_code: int = 1


class ConfigError(AmasError):
    """Settings are missing, malformed, or not allowed in the active profile."""

    exit_code = 2


class ServiceUnavailable(AmasError):
    """A service the command needs (database, storage, Prefect API) cannot be reached."""

    exit_code = 3

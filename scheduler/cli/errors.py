"""The CLI's failures, typed by exit code (standard library only: imported at start-up).

- 0: success
- 1: other failure (unknown job: 404, conflict: 409, server error: 5xx but 503)
- 2: invalid input (a bad file or argument; the master's 422)
- 3: master unreachable or refusing (connection error, timeout, 401/403, 503)
"""

from __future__ import annotations

from typing import Any

EXIT_OK = 0
EXIT_OTHER = 1
EXIT_INVALID = 2
EXIT_UNREACHABLE = 3


class CliError(Exception):
    """A failure the CLI reports in one message and an exit code."""

    exit_code = EXIT_OTHER

    def __init__(self, message: str, problems: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or []


class InvalidInput(CliError):
    exit_code = EXIT_INVALID


class Unreachable(CliError):
    exit_code = EXIT_UNREACHABLE


class Refused(CliError):
    exit_code = EXIT_UNREACHABLE


class NotFound(CliError):
    exit_code = EXIT_OTHER


class Conflict(CliError):
    exit_code = EXIT_OTHER

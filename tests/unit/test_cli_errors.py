"""How the CLI's client types the master's error answers (exit codes)."""

from __future__ import annotations

import httpx
import pytest

from scheduler.cli.client import (
    EXIT_INVALID,
    EXIT_OTHER,
    EXIT_UNREACHABLE,
    ApiClient,
    CliError,
)


@pytest.mark.parametrize(
    ("status", "exit_code"),
    [(400, EXIT_INVALID), (413, EXIT_INVALID), (422, EXIT_INVALID), (401, EXIT_UNREACHABLE),
     (503, EXIT_UNREACHABLE), (408, EXIT_OTHER), (409, EXIT_OTHER), (500, EXIT_OTHER)],
)  # fmt: skip
def test_status_to_exit_code(status: int, exit_code: int) -> None:
    answer = {"detail": f"said {status}", "problems": [{"field": "If-Match", "message": "m"}]}
    resp = httpx.Response(status, json=answer)
    with ApiClient("http://master", "t") as api, pytest.raises(CliError) as info:
        api._raise(resp)
    assert info.value.exit_code == exit_code and f"said {status}" in str(info.value)

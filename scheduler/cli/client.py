"""The CLI's HTTP client for the master API, with errors typed by exit code.

Exit codes (also in ``etcron --help`` and docs/cli.md):

- 0: success
- 1: other failure (unknown job: 404, conflict: 409, server error: 5xx but 503)
- 2: invalid input (a bad file or argument; the master's 400, 413 or 422)
- 3: master unreachable or refusing (connection error, timeout, 401/403, 503)
"""

from __future__ import annotations

import json as json_lib
from collections.abc import Iterator
from types import TracebackType
from typing import Any, NoReturn

import httpx

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


def _detail(resp: httpx.Response) -> tuple[str, list[dict[str, Any]]]:
    try:
        body = resp.json()
    except ValueError:
        return resp.text.strip()[:500] or resp.reason_phrase, []
    if isinstance(body, dict):
        problems = body.get("problems") if isinstance(body.get("problems"), list) else []
        return str(body.get("detail") or body.get("error") or body), problems or []
    return str(body), []


class ApiClient:
    """A synchronous client; use as a context manager so the connection pool is closed."""

    def __init__(self, server: str, token: str | None, *, timeout: float = 30.0) -> None:
        self.server = server.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self.server, headers=headers, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        try:
            resp = self._http.request(method, path, json=json, params=params, headers=headers)
        except httpx.TimeoutException as exc:
            raise Unreachable(f"master at {self.server} did not answer in time") from exc
        except httpx.HTTPError as exc:
            raise Unreachable(f"cannot reach the master at {self.server}: {exc}") from exc
        if resp.status_code < 400:
            return resp.json()
        self._raise(resp)

    def _raise(self, resp: httpx.Response) -> NoReturn:
        detail, problems = _detail(resp)
        code = resp.status_code
        if code in (401, 403):
            raise Refused(
                f"the master refused the request ({code}): {detail}; check --token / ETCRON_TOKEN"
            )
        if code == 503:
            raise Unreachable(f"the master cannot serve the request (503): {detail}")
        if code == 404:
            raise NotFound(detail)
        if code == 409:
            raise Conflict(detail, problems)
        if code in (400, 413, 422):
            raise InvalidInput(detail, problems)
        raise CliError(f"the master answered {code}: {detail}", problems)

    # endpoints -----------------------------------------------------------------

    def health(self) -> Any:
        return self.request("GET", "/v1/health")

    def list_jobs(self) -> Any:
        return self.request("GET", "/v1/jobs")

    def get_job(self, name: str) -> Any:
        return self.request("GET", f"/v1/jobs/{name}")

    def put_job(self, name: str, spec: dict[str, Any], if_match: int | None = None) -> Any:
        headers = {"If-Match": str(if_match)} if if_match is not None else None
        return self.request("PUT", f"/v1/jobs/{name}", json=spec, headers=headers)

    def delete_job(self, name: str) -> Any:
        return self.request("DELETE", f"/v1/jobs/{name}")

    def apply(self, jobs: list[dict[str, Any]], *, prune: bool, dry_run: bool) -> Any:
        body = {"jobs": jobs, "prune": prune, "dry_run": dry_run}
        return self.request("POST", "/v1/apply", json=body)

    def suspend(self, name: str) -> Any:
        return self.request("POST", f"/v1/jobs/{name}/suspend")

    def resume(self, name: str) -> Any:
        return self.request("POST", f"/v1/jobs/{name}/resume")

    def run(self, name: str) -> Any:
        return self.request("POST", f"/v1/jobs/{name}/run")

    def kill(self, name: str) -> Any:
        return self.request("POST", f"/v1/jobs/{name}/kill")

    def runs(self, name: str, limit: int) -> Any:
        return self.request("GET", f"/v1/jobs/{name}/runs", params={"limit": limit})

    def get_run(self, name: str, run_id: str) -> Any:
        return self.request("GET", f"/v1/jobs/{name}/runs/{run_id}")

    def workers(self) -> Any:
        return self.request("GET", "/v1/workers")

    def output(self, name: str, run_id: str) -> Any:
        return self.request("GET", f"/v1/jobs/{name}/runs/{run_id}/output")

    def stream(self, path: str, params: dict[str, Any] | None = None) -> Iterator[dict[str, Any]]:
        """Newline-delimited JSON objects from a streaming endpoint, as they arrive."""
        try:
            with self._http.stream("GET", path, params=params, timeout=None) as resp:
                if resp.status_code >= 400:
                    resp.read()
                    self._raise(resp)
                for line in resp.iter_lines():
                    if line.strip():
                        yield json_lib.loads(line)
        except httpx.HTTPError as exc:
            raise Unreachable(f"lost the connection to the master at {self.server}: {exc}") from exc

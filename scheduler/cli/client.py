"""The CLI's HTTP client for the master API, with errors typed by exit code
(:mod:`scheduler.cli.errors`). Imported only by commands that talk to a master.

Exit codes (also in ``etcron --help`` and docs/cli.md):

- 0: success
- 1: other failure (unknown job: 404, conflict: 409, server error: 5xx but 503)
- 2: invalid input (a bad file or argument; the master's 400, 413 or 422)
- 3: master unreachable or refusing (connection error, timeout, 401/403, 503)
"""

from __future__ import annotations

import json as json_lib
import ssl
import sys
from collections.abc import Generator
from pathlib import Path
from types import TracebackType
from typing import Any, NoReturn

# httpx imports its own command-line tool (click, rich.progress, pygments) when
# it can; a None entry makes that import fail, which httpx handles (its `main`
# then only says it is unavailable). ~30 ms of every CLI call; nothing here uses it.
sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]

import httpx  # noqa: E402

from scheduler.cli.errors import (  # noqa: E402
    EXIT_INVALID,
    EXIT_OK,
    EXIT_OTHER,
    EXIT_UNREACHABLE,
    CliError,
    Conflict,
    InvalidInput,
    NotFound,
    Refused,
    Unreachable,
)

__all__ = [
    "EXIT_INVALID",
    "EXIT_OK",
    "EXIT_OTHER",
    "EXIT_UNREACHABLE",
    "ApiClient",
    "CliError",
    "Conflict",
    "InvalidInput",
    "NotFound",
    "Refused",
    "Unreachable",
]


def _trusting(ca_file: Path) -> ssl.SSLContext:
    """A client TLS context (hostname checked) that trusts the CA certificates in ``ca_file``."""
    try:
        return ssl.create_default_context(cafile=str(ca_file))
    except (OSError, ssl.SSLError) as exc:
        raise InvalidInput(
            f"--cacert / cli.ca_file {ca_file}: cannot load CA certificates: {exc}"
        ) from exc


def _unreachable(server: str, exc: httpx.HTTPError) -> str:
    text = f"cannot reach the master at {server}: {exc}"
    if "CERTIFICATE_VERIFY_FAILED" in text:
        text += (
            "; if the master's certificate comes from a private CA, pass it with "
            "--cacert (ETCRON_CACERT, or cli.ca_file in the config)"
        )
    return text


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

    def __init__(
        self,
        server: str,
        token: str | None,
        *,
        timeout: float = 30.0,
        ca_file: Path | None = None,
    ) -> None:
        self.server = server.rstrip("/")
        self.ca_file = ca_file
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        # plain http needs no TLS context: building the default one (loading the CA
        # bundle) is ~50 ms of every call; https keeps full verification, against
        # ca_file when given (a private CA), else the system's CAs
        verify: bool | ssl.SSLContext = not self.server.startswith("http://")
        if verify and ca_file is not None:
            verify = _trusting(ca_file)
        self._http = httpx.Client(
            base_url=self.server, headers=headers, timeout=timeout, verify=verify
        )

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
            raise Unreachable(_unreachable(self.server, exc)) from exc
        if resp.status_code < 400:
            return resp.json()
        self._raise(resp)

    def _raise(self, resp: httpx.Response) -> NoReturn:
        detail, problems = _detail(resp)
        code = resp.status_code
        if code == 401:
            raise Refused(
                f"the master refused the request ({code}): {detail}; check --token / ETCRON_TOKEN"
            )
        if code == 403:
            raise Refused(f"the master refused the request ({code}): {detail}")
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

    def stream(
        self, path: str, params: dict[str, Any] | None = None
    ) -> Generator[dict[str, Any], None, None]:
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

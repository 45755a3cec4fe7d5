"""The first thing every request meets: the token, then the body's size and shape.

A pure ASGI middleware in front of the API, so nothing below it runs for a
request it refuses.

Rules:

- Every request except the public ones (``GET``/``HEAD`` of ``/v1/health``;
  of ``/docs``, ``/docs/oauth2-redirect``, ``/redoc`` and ``/openapi.json``
  only with ``public_docs``) needs ``Authorization: Bearer <token>``, checked
  by :meth:`Tokens.check` (constant time). A missing or wrong token is ``401``
  (``WWW-Authenticate: Bearer``) answered from the headers alone: not one byte
  of the body is read.
- A token whose scope is below what the request needs
  (:func:`~scheduler.master.principal.required_scope`) is ``403``, from the
  headers alone too.
- The web dashboard's paths (``/ui`` and under ``/ui/``, any method) pass
  without a bearer token: its routes check their own session cookie, scope and
  CSRF token (:mod:`scheduler.master.ui`). Body limits still apply.
- A body may be at most ``max_body_bytes``: a larger ``Content-Length`` is
  ``413`` without reading; a body without one (chunked) is counted as it
  arrives and refused with ``413`` as soon as it passes the limit.
- A JSON body (no ``Content-Type``, or ``application/json`` / ``…+json``) must
  be strict JSON (:mod:`scheduler.master.strict_json`), else ``422``.
- Refusals that leave a body unread carry ``Connection: close``: the server
  closes the connection instead of reading the rest.
- The body is read here, whole, and handed to the app as one message; later
  ``receive()`` calls go to the server (to see a disconnect).
"""

from __future__ import annotations

import email.message
import json
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from scheduler.master.principal import Principal, forbidden, required_scope
from scheduler.master.strict_json import json_problem
from scheduler.master.tokens import Tokens

PUBLIC_PATHS = frozenset({"/v1/health"})
DOCS_PATHS = frozenset({"/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})
PUBLIC_METHODS = frozenset({"GET", "HEAD"})
UI_PREFIX = "/ui/"
"""The dashboard's paths: past the token check (cookie auth there), not past the body bounds."""
UNAUTHORIZED = "missing or wrong bearer token"


def _headers(scope: Scope, name: bytes) -> list[bytes]:
    return [v for k, v in scope["headers"] if k == name]


def _is_json(content_type: bytes | None) -> bool:
    """The media types FastAPI parses as JSON: none, ``application/json``, ``application/*+json``."""
    if not content_type:
        return True
    message = email.message.Message()
    message["content-type"] = content_type.decode("latin-1")
    if message.get_content_maintype() != "application":
        return False
    subtype = message.get_content_subtype()
    return subtype == "json" or subtype.endswith("+json")


class HttpGuard:
    """ASGI middleware; see the module rules."""

    def __init__(
        self, app: ASGIApp, *, tokens: Tokens, max_body_bytes: int, public_docs: bool = False
    ) -> None:
        self.app = app
        self.tokens = tokens
        self.max_body_bytes = max_body_bytes
        self.public_paths = PUBLIC_PATHS | DOCS_PATHS if public_docs else PUBLIC_PATHS

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        lengths = _headers(scope, b"content-length")
        announced = bool(_headers(scope, b"transfer-encoding")) or any(
            v.strip() not in (b"", b"0") for v in lengths
        )
        method, path = scope["method"], scope["path"]
        ui = path == UI_PREFIX.rstrip("/") or path.startswith(UI_PREFIX)
        if not ui and not (method in PUBLIC_METHODS and path in self.public_paths):
            principal = self._principal(scope)
            if principal is None:
                await _answer(
                    send,
                    401,
                    UNAUTHORIZED,
                    close=announced,
                    extra=[(b"www-authenticate", b"Bearer")],
                )
                return
            needed = required_scope(method, path)
            if not principal.can(needed):
                await _answer(send, 403, forbidden(principal, needed), close=announced)
                return
        for value in lengths:
            text = value.strip()
            if not text.isdigit():  # bytes: ASCII digits only
                await _answer(send, 400, "Content-Length is not a number", close=True)
                return
            if len(text) > 18 or int(text) > self.max_body_bytes:
                await _answer(send, 413, self._too_large(), close=True)
                return
        body = await self._read_body(receive, send)
        if body is None:
            return
        content_type = next(iter(_headers(scope, b"content-type")), None)
        if body and _is_json(content_type):
            problem = json_problem(body)
            if problem is not None:
                await _answer(
                    send,
                    422,
                    "invalid request: the body is not strict JSON",
                    problems=[{"job": None, "field": "body", "message": problem}],
                )
                return
        await self.app(scope, _replay(body, receive), send)

    def _principal(self, scope: Scope) -> Principal | None:
        values = _headers(scope, b"authorization")
        if len(values) != 1:
            return None
        scheme, _, credentials = values[0].strip().partition(b" ")
        if scheme.lower() != b"bearer":
            return None
        return self.tokens.check(credentials.strip())

    def _too_large(self) -> str:
        return f"request body larger than {self.max_body_bytes} bytes (master.max_body_bytes)"

    async def _read_body(self, receive: Receive, send: Send) -> bytes | None:
        """The whole body, or None when the request was answered (413) or the client left."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return None  # http.disconnect: nobody to answer
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                await _answer(send, 413, self._too_large(), close=True)
                return None
            if chunk:
                chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that gives the app the body read here, then the server's events."""
    given = False

    async def replay() -> Message:
        nonlocal given
        if not given:
            given = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _answer(
    send: Send,
    status: int,
    detail: str,
    *,
    close: bool = False,
    problems: list[dict[str, Any]] | None = None,
    extra: list[tuple[bytes, bytes]] | None = None,
) -> None:
    """A JSON error like the API's own (``{"detail", "problems"}``)."""
    body = json.dumps({"detail": detail, "problems": problems or []}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *(extra or []),
    ]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})

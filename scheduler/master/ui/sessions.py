"""Dashboard sign-in: server-side sessions behind a cookie, and CSRF checks.

Rules:

- Signing in (``POST /ui/login``, field ``token``) checks the token with
  :meth:`~scheduler.master.tokens.Tokens.check`. The cookie holds a random
  session id (32 bytes, URL-safe), never the token. It is ``HttpOnly``,
  ``SameSite=Strict``, ``Path=/ui/``, and ``Secure`` when the request came over
  TLS.
- Sessions live in this process's memory (a master restart signs everyone
  out; each master of several has its own). Each expires :data:`SESSION_TTL`
  seconds after sign-in; at most :data:`MAX_SESSIONS` exist: signing in past
  the bound drops the oldest.
- Every session has its own CSRF token, put in every form; every POST must
  carry it (compared in constant time) and, when the browser sends ``Origin``
  (or else ``Referer``), come from the master's own host and port (the
  ``Host`` header; the scheme is not compared, so a TLS-terminating proxy in
  front works). Anything else is 403.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from fastapi import Request, Response

from scheduler.master.principal import Principal

COOKIE = "etcron_session"
SESSION_TTL = 8 * 3600.0
MAX_SESSIONS = 1000


@dataclass(frozen=True, slots=True)
class Session:
    id: str
    csrf: str
    principal: Principal
    expires: float


class Sessions:
    """In-memory sessions by id; see the module rules."""

    def __init__(
        self,
        *,
        ttl: float = SESSION_TTL,
        max_sessions: int = MAX_SESSIONS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl = ttl
        self.max_sessions = max_sessions
        self._clock = clock
        self._by_id: OrderedDict[str, Session] = OrderedDict()

    def __len__(self) -> int:
        return len(self._by_id)

    def create(self, principal: Principal) -> Session:
        now = self._clock()
        self._expire(now)
        while len(self._by_id) >= self.max_sessions:
            self._by_id.popitem(last=False)  # the oldest
        session = Session(
            id=secrets.token_urlsafe(32),
            csrf=secrets.token_urlsafe(24),
            principal=principal,
            expires=now + self.ttl,
        )
        self._by_id[session.id] = session
        return session

    def get(self, session_id: str | None) -> Session | None:
        if not session_id:
            return None
        found = self._by_id.get(session_id)
        if found is None:
            return None
        if found.expires <= self._clock():
            del self._by_id[session_id]
            return None
        return found

    def drop(self, session_id: str | None) -> None:
        if session_id:
            self._by_id.pop(session_id, None)

    def _expire(self, now: float) -> None:
        # sessions are created in order and share one TTL: the oldest expire first
        while self._by_id:
            first = next(iter(self._by_id.values()))
            if first.expires > now:
                return
            self._by_id.popitem(last=False)


def _tls(request: Request) -> bool:
    return request.url.scheme == "https" or request.headers.get("x-forwarded-proto") == "https"


def set_cookie(response: Response, request: Request, session: Session, ttl: float) -> None:
    response.set_cookie(
        COOKIE,
        session.id,
        max_age=int(ttl),
        path="/ui/",
        httponly=True,
        samesite="strict",
        secure=_tls(request),
    )


def clear_cookie(response: Response, request: Request) -> None:
    response.delete_cookie(
        COOKIE, path="/ui/", httponly=True, samesite="strict", secure=_tls(request)
    )


def same_origin(request: Request) -> bool:
    """False when ``Origin`` (or, without it, ``Referer``) names another host than ours."""
    ours = request.headers.get("host", "").lower()
    origin = request.headers.get("origin")
    if origin is not None:
        return origin != "null" and urlsplit(origin).netloc.lower() == ours
    referer = request.headers.get("referer")
    if referer is not None:
        return urlsplit(referer).netloc.lower() == ours
    return True  # neither sent (not a browser, or stripped): the CSRF token decides


def csrf_ok(session: Session, given: str | None) -> bool:
    if not given:
        return False
    return hmac.compare_digest(given.encode(), session.csrf.encode())

"""Who made a request: the token's name and scope, set by the API's auth dependency.

Routes read it with :func:`principal_of` (the audit trail records ``name`` and the
client address; actions check :meth:`Principal.can`). Scopes are ordered:
``read`` < ``operate`` < ``admin``.

:func:`required_scope` is the one table of which request needs which scope,
used by the guard (403 before the body is read) and again by the routes. It
fails closed: a method other than GET/HEAD on a path it does not list needs
``admin``, so a new write route is admin-only until it is listed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from fastapi import Request

SCOPES = ("read", "operate", "admin")
"""``read``: GET only; ``operate``: also run, kill, suspend, resume; ``admin``: everything."""


@dataclass(frozen=True)
class Principal:
    name: str
    scope: str = "admin"
    address: str = ""
    """The client's address (``host:port`` as the server saw it), for the audit trail."""

    def can(self, scope: str) -> bool:
        return SCOPES.index(self.scope) >= SCOPES.index(scope)


_OPERATE_RE = re.compile(r"/v1/jobs/[^/]+/(run|kill|suspend|resume)")


def required_scope(method: str, path: str) -> str:
    """The scope a request needs: GET/HEAD ``read``; run, kill, suspend and resume
    ``operate``; every other write (put, delete, apply, anything new) ``admin``."""
    if method in ("GET", "HEAD"):
        return "read"
    if method == "POST" and _OPERATE_RE.fullmatch(path):
        return "operate"
    return "admin"


def forbidden(principal: Principal, needed: str) -> str:
    """The 403 message: who the token is, and what the request needs."""
    return (
        f"token {principal.name!r} has scope {principal.scope!r}; this request needs "
        f"scope {needed!r}"
    )


def client_address(request: Request) -> str:
    client = request.client
    return f"{client.host}:{client.port}" if client is not None else ""


def principal_of(request: Request) -> Principal:
    """The principal the auth dependency set (a request that got past auth always has one)."""
    found = getattr(request.state, "principal", None)
    if isinstance(found, Principal):
        return found
    return Principal(name="anonymous", scope="read", address=client_address(request))

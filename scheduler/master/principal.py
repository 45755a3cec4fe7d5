"""Who made a request: the token's name and scope, set by the API's auth dependency.

Routes read it with :func:`principal_of` (the audit trail records ``name`` and the
client address; actions check :meth:`Principal.can`). Scopes are ordered:
``read`` < ``operate`` < ``admin``.
"""

from __future__ import annotations

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


def client_address(request: Request) -> str:
    client = request.client
    return f"{client.host}:{client.port}" if client is not None else ""


def principal_of(request: Request) -> Principal:
    """The principal the auth dependency set (a request that got past auth always has one)."""
    found = getattr(request.state, "principal", None)
    if isinstance(found, Principal):
        return found
    return Principal(name="anonymous", scope="read", address=client_address(request))

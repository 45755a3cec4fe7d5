"""The API's tokens: a bearer token in, the :class:`Principal` it stands for out.

Every check is in constant time on bytes (:func:`hmac.compare_digest`). Today one
token, named ``token``, with the ``admin`` scope; named tokens with scopes plug in
here, behind the same :meth:`Tokens.check`.
"""

from __future__ import annotations

import hmac

from scheduler.master.principal import Principal


class Tokens:
    def __init__(self, token: str) -> None:
        if not token:
            raise ValueError("the API needs a non-empty token")
        self._expected = token.encode()

    def check(self, given: bytes, address: str = "") -> Principal | None:
        """The principal ``given`` (the bearer token's bytes) stands for; None if no token matches."""
        if hmac.compare_digest(given, self._expected):
            return Principal(name="token", scope="admin", address=address)
        return None

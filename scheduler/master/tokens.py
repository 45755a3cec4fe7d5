"""The API's tokens: a bearer token in, the :class:`Principal` it stands for out.

Rules:

- A token is known by its SHA-256 digest only (``master.tokens_file`` holds
  ``{name, scope, sha256}`` entries). A fast hash is enough here, and a slow
  password hash (bcrypt, scrypt, argon2) would buy nothing: ``etcron token
  create`` makes 32 random bytes (256 bits), which no one can guess or brute
  force from the digest, whereas a slow hash exists to protect low-entropy
  passwords, and would cost every API request its work factor.
- :meth:`Tokens.check` hashes the given bytes once and compares the digest with
  every entry in constant time (:func:`hmac.compare_digest`, all entries, no
  early exit), so neither the answer time nor the entry order tells which
  token, or how much of one, matched.
- The plain ``master.token`` / ``master.token_file`` is one more entry, named
  ``token`` with the ``admin`` scope (it is hashed on load; the plain bytes are
  not kept).
- Names: 1-63 lowercase letters, digits, ``.``, ``_`` and ``-`` (they appear in
  the audit trail and logs); unique, as are digests.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass

from scheduler.master.principal import SCOPES, Principal

TOKEN_BYTES = 32
"""Random bytes in a token ``etcron token create`` makes."""
MIN_TOKEN_BYTES = 16
"""A plain token shorter than this is refused at start (unless ``master.allow_insecure_tokens``)."""
PLAIN_TOKEN_NAME = "token"
NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")
_DIGEST_RE = re.compile(r"[0-9a-f]{64}")


def digest(token: bytes) -> bytes:
    return hashlib.sha256(token).digest()


def new_token() -> str:
    """A new random token (URL-safe text of :data:`TOKEN_BYTES` random bytes)."""
    return secrets.token_urlsafe(TOKEN_BYTES)


@dataclass(frozen=True)
class TokenEntry:
    name: str
    scope: str
    sha256: bytes
    """The SHA-256 digest of the token's bytes (32 bytes, not hex)."""

    @classmethod
    def parse(cls, raw: object, where: str) -> TokenEntry:
        """An entry from a tokens file's mapping; ``ValueError`` naming ``where`` and the field."""
        if not isinstance(raw, dict):
            raise ValueError(f"{where}: expected a mapping with name, scope and sha256")
        unknown = sorted(set(map(str, raw)) - {"name", "scope", "sha256"})
        if unknown:
            raise ValueError(
                f"{where}: unknown field {unknown[0]!r} (expected name, scope, sha256)"
            )
        name, scope, hexdigest = raw.get("name"), raw.get("scope"), raw.get("sha256")
        if not isinstance(name, str) or not NAME_RE.fullmatch(name):
            raise ValueError(
                f"{where}: name: expected 1-63 lowercase letters, digits, '.', '_' or '-'"
            )
        where = f"{where} ({name})"
        if scope not in SCOPES:
            raise ValueError(f"{where}: scope: expected one of {', '.join(SCOPES)}")
        if not isinstance(hexdigest, str) or not _DIGEST_RE.fullmatch(hexdigest.lower()):
            raise ValueError(f"{where}: sha256: expected 64 hex digits (the token's SHA-256)")
        return cls(name=name, scope=str(scope), sha256=bytes.fromhex(hexdigest))

    def line(self) -> str:
        """This entry as one line of a tokens file (a YAML list item)."""
        return f"- {{name: {self.name}, scope: {self.scope}, sha256: {self.sha256.hex()}}}"


class Tokens:
    """The known tokens; see the module rules."""

    def __init__(self, token: str | None = None, *, entries: Iterable[TokenEntry] = ()) -> None:
        found = list(entries)
        if token:
            found.append(TokenEntry(PLAIN_TOKEN_NAME, "admin", digest(token.encode())))
        if not found:
            raise ValueError("the API needs at least one token")
        names = [e.name for e in found]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"token name {twice[0]!r} is used more than once")
        if len({e.sha256 for e in found}) != len(found):
            raise ValueError("two token entries have the same sha256 (the same token)")
        self._entries = tuple(found)

    @property
    def names(self) -> list[str]:
        return [e.name for e in self._entries]

    def check(self, given: bytes, address: str = "") -> Principal | None:
        """The principal ``given`` (the bearer token's bytes) stands for; None if no token matches."""
        hashed = digest(given)
        match: TokenEntry | None = None
        for entry in self._entries:  # every entry, no early exit
            if hmac.compare_digest(hashed, entry.sha256):
                match = entry
        if match is None:
            return None
        return Principal(name=match.name, scope=match.scope, address=address)

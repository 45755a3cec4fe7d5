"""Signed job definitions: the stored envelope, the master's signer, the workers' verifier.

Rules this module keeps:

- **What is signed is what is stored.** A signed value under ``jobs/<name>`` is
  the envelope ``{"spec": "<spec JSON>", "sig": "<base64>", "key_id": "<hex>"}``:
  ``spec`` is the job spec's compact JSON (:meth:`JobSpec.to_json`) as a
  string, and ``sig`` is the Ed25519 signature of exactly those UTF-8 bytes.
  No re-serialisation happens between signing and verifying, so no canonical
  form has to agree across versions.
- **An unsigned value is the bare spec JSON**, as written before signing
  existed; :func:`unwrap` reads both, so a cluster with signing off keeps
  working and reads old values.
- ``key_id`` is the first 16 hex digits of the SHA-256 of the raw public key. It
  only picks which trusted key to try; the signature decides.
- The spec names its job, and the worker checks it against the key it was read
  from, so a signed spec cannot be moved to another job's key. A signed spec
  *can* be replayed (an older signed version written back, or a deleted job's
  value restored) by whoever can write ``jobs/``: see docs/security.md.
- Key files are PEM (PKCS#8 private, SubjectPublicKeyInfo public). The private
  key must not be readable by group or others: :class:`Signer` refuses it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import stat
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from scheduler.config import ConfigError

KEY_FILE = "signing.key"
PUB_FILE = "signing.pub"
_ENVELOPE_KEYS = frozenset({"spec", "sig", "key_id"})


class KeyFileError(ConfigError):
    """A key file is missing, unreadable, not an Ed25519 key, or too open; the message names it."""


class Refusal(StrEnum):
    """Why a stored job value may not run (the ``reason`` label of the refusal metric)."""

    UNSIGNED = "unsigned"
    UNTRUSTED_KEY = "untrusted_key"
    BAD_SIGNATURE = "bad_signature"


@dataclass(frozen=True, slots=True)
class Envelope:
    """A stored job value, split: the spec bytes and, when signed, the signature."""

    spec: bytes
    sig: bytes | None = None
    key_id: str = ""


def key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def unwrap(value: bytes) -> Envelope:
    """Split a value read from ``jobs/``; ValueError for a malformed envelope.

    A value that is not an envelope is returned as an unsigned spec (it is
    parsed, and may be refused, by the caller).
    """
    if not value.startswith(b'{"spec":'):
        return Envelope(value)
    try:
        obj = json.loads(value)
    except ValueError as exc:
        raise ValueError(f"invalid signed job value: {exc}") from exc
    if not isinstance(obj, dict) or set(obj) != _ENVELOPE_KEYS:
        raise ValueError("invalid signed job value: expected exactly spec, sig and key_id")
    spec, sig, kid = obj["spec"], obj["sig"], obj["key_id"]
    if not (isinstance(spec, str) and isinstance(sig, str) and isinstance(kid, str)):
        raise ValueError("invalid signed job value: spec, sig and key_id must be strings")
    try:
        raw_sig = base64.b64decode(sig, validate=True)
    except binascii.Error as exc:
        raise ValueError("invalid signed job value: sig is not base64") from exc
    return Envelope(spec.encode(), raw_sig, kid)


def spec_bytes(value: bytes) -> bytes:
    """The spec JSON inside a stored value, signed or not (ValueError when malformed)."""
    return unwrap(value).spec


class Signer:
    """The master's signing key."""

    def __init__(self, private: Ed25519PrivateKey) -> None:
        self._key = private
        self.key_id = key_id(private.public_key())

    @classmethod
    def from_file(cls, path: Path) -> Signer:
        try:
            st = path.stat()
        except OSError as exc:
            raise KeyFileError(f"{path}: cannot read signing key: {exc.strerror}") from exc
        if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise KeyFileError(
                f"{path}: signing key is accessible to group or others "
                f"(mode {stat.S_IMODE(st.st_mode):04o}); chmod 600 it"
            )
        key = _load(path, private=True)
        assert isinstance(key, Ed25519PrivateKey)
        return cls(key)

    def seal(self, spec: bytes) -> bytes:
        """The stored value for ``spec`` (compact JSON bytes): the signed envelope."""
        sig = base64.b64encode(self._key.sign(spec)).decode()
        text = spec.decode()
        return json.dumps(
            {"spec": text, "sig": sig, "key_id": self.key_id}, separators=(",", ":")
        ).encode()


class Verifier:
    """The keys a worker trusts, by key id."""

    def __init__(self, keys: list[Ed25519PublicKey]) -> None:
        self.keys = {key_id(k): k for k in keys}

    @classmethod
    def from_files(cls, paths: list[Path]) -> Verifier:
        keys = []
        for path in paths:
            key = _load(path, private=False)
            assert isinstance(key, Ed25519PublicKey)
            keys.append(key)
        return cls(keys)

    def check(self, env: Envelope) -> Refusal | None:
        """None when ``env`` is signed by a trusted key, else why not."""
        if env.sig is None:
            return Refusal.UNSIGNED
        key = self.keys.get(env.key_id)
        if key is None:
            return Refusal.UNTRUSTED_KEY
        try:
            key.verify(env.sig, env.spec)
        except InvalidSignature:
            return Refusal.BAD_SIGNATURE
        return None


def refusal_text(reason: Refusal, env: Envelope) -> str:
    if reason is Refusal.UNSIGNED:
        return "not signed, and this worker runs only signed jobs"
    if reason is Refusal.UNTRUSTED_KEY:
        return f"signed by key {env.key_id or '?'}, which this worker does not trust"
    return f"signature does not verify with trusted key {env.key_id}"


def _load(path: Path, *, private: bool) -> Ed25519PrivateKey | Ed25519PublicKey:
    what = "signing key" if private else "trusted key"
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read {what}: {exc.strerror}") from exc
    try:
        key = (
            serialization.load_pem_private_key(data, password=None)
            if private
            else serialization.load_pem_public_key(data)
        )
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"{path}: not a PEM {what}: {exc}") from exc
    want = Ed25519PrivateKey if private else Ed25519PublicKey
    if not isinstance(key, want):
        raise KeyFileError(f"{path}: {what} is not an Ed25519 key")
    return key


def keygen(out: Path) -> tuple[Path, Path, str]:
    """Write ``signing.key`` (0600) and ``signing.pub`` into ``out``; (key, pub, key id).

    Refuses to overwrite either file (FileExistsError); creates ``out`` (0700) if missing.
    """
    out.mkdir(mode=0o700, parents=True, exist_ok=True)
    key_path, pub_path = out / KEY_FILE, out / PUB_FILE
    for p in (key_path, pub_path):
        if p.exists():
            raise FileExistsError(17, "refusing to overwrite", str(p))
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    pub = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    _write_new(key_path, pem, 0o600)
    _write_new(pub_path, pub, 0o644)
    return key_path, pub_path, key_id(private.public_key())


def _write_new(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        os.fchmod(fd, mode)  # whatever the umask
        os.write(fd, data)
    finally:
        os.close(fd)

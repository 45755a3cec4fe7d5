"""Who may reach the master's API, and over what: its tokens and its TLS, from the config.

Rules (each refusal is a :class:`MasterConfigError` naming the setting):

- Tokens come from ``master.tokens_file`` (named, scoped, hashed entries) and
  ``master.token_file`` / ``master.token`` (one admin token named ``token``);
  at least one must be set.
- A plain token shorter than :data:`~scheduler.master.tokens.MIN_TOKEN_BYTES`
  is refused, and so is a token file or tokens file that its group or others
  may read (``mode & 0o077``), unless ``master.allow_insecure_tokens`` is set
  (then each is a warning in the log).
- ``master.tls_cert_file`` and ``master.tls_key_file`` go together; both
  readable and matching, checked here, before the master binds its port. The
  context accepts TLS 1.2 and later only.
"""

from __future__ import annotations

import os
import ssl
from pathlib import Path

import structlog
import yaml

from scheduler.config import ConfigError, MasterConfig
from scheduler.master.tokens import MIN_TOKEN_BYTES, TokenEntry, Tokens

log = structlog.get_logger("etcron.master")

MAX_TOKENS_FILE_BYTES = 1024 * 1024


class MasterConfigError(ConfigError):
    """The master cannot start with this configuration; the message says why."""


def _private(path: Path, setting: str, insecure_ok: bool) -> None:
    """Refuse ``path`` if its group or others may read or write it."""
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise MasterConfigError(f"{setting} {path}: cannot read: {exc.strerror}") from exc
    if mode & 0o077 == 0:
        return
    if insecure_ok:
        log.warning(
            "token file readable by others (master.allow_insecure_tokens)",
            setting=setting,
            path=str(path),
            mode=oct(mode & 0o777),
        )
        return
    raise MasterConfigError(
        f"{setting} {path}: mode {oct(mode & 0o777)} lets its group or others read it; "
        f"run `chmod 600 {path}` (or set master.allow_insecure_tokens, for tests only)"
    )


def _plain_token(master: MasterConfig) -> str | None:
    if master.token_file is not None:
        _private(master.token_file, "master.token_file", master.allow_insecure_tokens)
    try:
        token = master.resolved_token()
    except OSError as exc:
        raise MasterConfigError(
            f"master.token_file {master.token_file}: cannot read: {exc.strerror}"
        ) from exc
    if not token:
        return None
    setting = "master.token_file" if master.token_file is not None else "master.token"
    if len(token.encode()) < MIN_TOKEN_BYTES:
        if not master.allow_insecure_tokens:
            raise MasterConfigError(
                f"{setting}: the token is {len(token.encode())} bytes; at least "
                f"{MIN_TOKEN_BYTES} are needed (make one with `etcron token create`)"
            )
        log.warning("API token shorter than 16 bytes (master.allow_insecure_tokens)")
    return token


def _entries(path: Path, insecure_ok: bool) -> list[TokenEntry]:
    setting = "master.tokens_file"
    _private(path, setting, insecure_ok)
    try:
        with path.open("rb") as f:
            data = f.read(MAX_TOKENS_FILE_BYTES + 1)
    except OSError as exc:
        raise MasterConfigError(f"{setting} {path}: cannot read: {exc.strerror}") from exc
    if len(data) > MAX_TOKENS_FILE_BYTES:
        raise MasterConfigError(f"{setting} {path}: larger than 1 MiB")
    try:
        loaded = yaml.safe_load(data)
    except yaml.YAMLError as exc:
        raise MasterConfigError(f"{setting} {path}: not valid YAML or JSON: {exc}") from exc
    if loaded is None:
        loaded = []
    if not isinstance(loaded, list):
        raise MasterConfigError(
            f"{setting} {path}: expected a list of entries "
            "(- {name: ..., scope: ..., sha256: ...}), as `etcron token create` prints"
        )
    try:
        return [
            TokenEntry.parse(raw, f"{setting} {path}: entry {i + 1}")
            for i, raw in enumerate(loaded)
        ]
    except ValueError as exc:
        raise MasterConfigError(str(exc)) from exc


def master_tokens(master: MasterConfig) -> Tokens:
    """The master's tokens; see the module rules."""
    entries: list[TokenEntry] = []
    if master.tokens_file is not None:
        entries = _entries(master.tokens_file, master.allow_insecure_tokens)
    token = _plain_token(master)
    if token is None and not entries:
        raise MasterConfigError(
            "the master needs an API token: set master.tokens_file (named, scoped tokens "
            "from `etcron token create`), or master.token_file or master.token in the "
            "config, or ETCRON_MASTER__TOKEN in the environment"
        )
    try:
        return Tokens(token, entries=entries)
    except ValueError as exc:
        raise MasterConfigError(f"master.tokens_file {master.tokens_file}: {exc}") from exc


def tls_context(master: MasterConfig) -> ssl.SSLContext | None:
    """The server's TLS context, or None without ``master.tls_cert_file``."""
    cert, key = master.tls_cert_file, master.tls_key_file
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise MasterConfigError(
            "master.tls_cert_file and master.tls_key_file go together: set both, or neither"
        )
    for setting, path in (("master.tls_cert_file", cert), ("master.tls_key_file", key)):
        if not os.access(path, os.R_OK):
            raise MasterConfigError(f"{setting} {path}: cannot read the file")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cert, key)
    except (ssl.SSLError, OSError) as exc:
        raise MasterConfigError(
            f"master.tls_cert_file {cert} / master.tls_key_file {key}: not a PEM certificate "
            f"and its matching private key ({exc})"
        ) from exc
    return ctx

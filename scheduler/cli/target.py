"""Which master the CLI talks to, and with which token.

- server: ``--server`` / ``ETCRON_SERVER``; else, with ``--config`` /
  ``ETCRON_CONFIG``, the config's ``master.listen`` (a wildcard address such as
  ``0.0.0.0`` means this host: ``127.0.0.1``; ``https`` when the config sets
  ``master.tls_cert_file``); else ``http://127.0.0.1:8070``.
- token: ``--token`` / ``ETCRON_TOKEN``; else the config's ``master.token_file``
  or ``master.token``; else none (the master answers 401, exit 3).
- CA: ``--cacert`` / ``ETCRON_CACERT``; else the config's ``cli.ca_file``; else
  the system's trusted CAs (for an ``https`` server only).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from scheduler.cli.errors import InvalidInput

if TYPE_CHECKING:  # the config (pydantic) and the client (httpx) load only when used
    from scheduler.cli.client import ApiClient
    from scheduler.config import Config

DEFAULT_SERVER = "http://127.0.0.1:8070"


def read_config(path: Path | None) -> Config:
    from scheduler.config import ConfigError, load_config

    try:
        return load_config(path)
    except ConfigError as exc:
        raise InvalidInput(f"invalid configuration:\n{exc}") from exc


def server_from_listen(listen: str, tls: bool = False) -> str:
    """The URL a client on this host uses to reach a master listening on ``listen``."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit():
        raise InvalidInput(f"master.listen must be host:port, got {listen!r}")
    host = host.removeprefix("[").removesuffix("]")
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"{'https' if tls else 'http'}://{host}:{port}"


class Globals:
    """The global options, resolved lazily (offline commands never read the config)."""

    def __init__(
        self,
        server: str | None,
        token: str | None,
        config: Path | None,
        cacert: Path | None = None,
    ) -> None:
        self.server = server
        self.token = token
        self.config = config
        self.cacert = cacert

    def resolve(self) -> tuple[str, str | None, Path | None]:
        """(server URL, token, CA file)."""
        server, token, cacert = self.server, self.token, self.cacert
        if self.config is not None and None in (server, token, cacert):
            cfg = read_config(self.config)
            if server is None:
                tls = cfg.master.tls_cert_file is not None
                server = server_from_listen(cfg.master.listen, tls)
            if token is None:
                try:
                    token = cfg.master.resolved_token()
                except OSError as exc:
                    raise InvalidInput(f"cannot read master.token_file: {exc}") from exc
            if cacert is None:
                cacert = cfg.cli.ca_file
        return server or DEFAULT_SERVER, token, cacert

    def client(self) -> ApiClient:
        from scheduler.cli.client import ApiClient

        server, token, cacert = self.resolve()
        return ApiClient(server, token, ca_file=cacert)

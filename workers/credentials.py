"""The worker's secrets, kept from the jobs it starts (docs/security.md, "Worker policy").

A job runs as another user than the worker only when the worker is root (the
job's ``user``, else ``worker.default_user``). Then the worker's credential
files (``etcd.password_file``, ``etcd.key_file``) must be readable by the
worker alone: owned by its user and mode ``0600`` (or stricter).
:func:`check_credentials` runs at start: a file that others may read stops the
worker (a :class:`ConfigError`, exit 2); one that its group may read, or that
another user owns, is a warning. A worker that is not root runs its jobs as
its own user, who can read these files whatever their mode: a warning says so.
A password given inline (``etcd.password``) is in the worker's memory and
configuration only; jobs get a fresh environment (``workers.run_env.child_env``).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import structlog

from scheduler.config import Config, ConfigError

log = structlog.get_logger("etcron.worker")


def credential_files(config: Config) -> list[tuple[str, Path]]:
    e = config.etcd
    named = [("etcd.password_file", e.password_file), ("etcd.key_file", e.key_file)]
    return [(field, path) for field, path in named if path is not None]


def check_credentials(config: Config, *, euid: int | None = None) -> list[str]:
    """Raise ConfigError for a credential file others may read; return the warnings
    (also logged)."""
    euid = os.geteuid() if euid is None else euid
    warnings: list[str] = []
    for field, path in credential_files(config):
        try:
            st = path.stat()
        except OSError:
            continue  # reported where it is read, with its own message
        mode = stat.S_IMODE(st.st_mode)
        if mode & stat.S_IRWXO:
            raise ConfigError(
                f"{field}: {path} may be read by any user (mode {mode:04o}), including the "
                "jobs this worker starts; chmod 600 it"
            )
        if mode & stat.S_IRWXG:
            warnings.append(f"{field}: {path} may be read by its group (mode {mode:04o}); use 0600")
        if st.st_uid != euid:
            warnings.append(f"{field}: {path} is owned by uid {st.st_uid}, not the worker's {euid}")
    if euid != 0 and credential_files(config):
        warnings.append(
            "the worker is not root, so its jobs run as its own user and can read its "
            "credential files; run the worker as root with worker.default_user, or accept it"
        )
    for w in warnings:
        log.warning("worker credentials", problem=w)
    return warnings

"""``etcron token create``: a new API token, offline (no master, no etcd).

The token is printed once, on stdout, and never stored: what the master keeps
is the entry for ``master.tokens_file`` (name, scope, SHA-256 of the token),
printed after it. With ``--append FILE`` the entry is also added to that file
(created with mode 0600; a name already in it is refused, nothing written).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from scheduler.cli.errors import InvalidInput

SCOPE_HELP = "read (GET only), operate (also run, kill, suspend, resume) or admin (everything)"


def register(app: typer.Typer) -> None:
    token_app = typer.Typer(
        help="API tokens (token create).", no_args_is_help=True, rich_markup_mode=None
    )
    token_app.command("create")(create)
    app.add_typer(token_app, name="token")


def create(
    name: Annotated[
        str, typer.Option("--name", help="the token's name (shown in the audit trail)")
    ],
    scope: Annotated[str, typer.Option("--scope", help=SCOPE_HELP)],
    append: Annotated[
        Path | None,
        typer.Option("--append", help="also add the entry to this tokens file (made 0600)"),
    ] = None,
) -> None:
    """Make a new random API token; print it once, and its line for master.tokens_file.

    \b
    Example:
      etcron token create --name ci --scope operate --append /etc/etcron/tokens.yaml
    """
    from scheduler.cli import render
    from scheduler.master.principal import SCOPES
    from scheduler.master.tokens import NAME_RE, TokenEntry, digest, new_token

    if not NAME_RE.fullmatch(name):
        raise InvalidInput(
            f"--name {name!r}: expected 1-63 lowercase letters, digits, '.', '_' or '-'"
        )
    if scope not in SCOPES:
        raise InvalidInput(f"--scope {scope!r}: expected one of {', '.join(SCOPES)}")
    token = new_token()
    entry = TokenEntry(name=name, scope=scope, sha256=digest(token.encode()))
    if append is not None:
        _append(append, entry)
    render.say(token)
    where = f"added to {append}" if append is not None else "add it to master.tokens_file"
    render.warn(f"# the token above is shown once; its entry ({where}, then restart the master):")
    render.say(entry.line())


def _append(path: Path, entry: object) -> None:
    import os

    import yaml

    from scheduler.master.tokens import TokenEntry

    assert isinstance(entry, TokenEntry)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
    except OSError as exc:
        raise InvalidInput(f"--append {path}: cannot open: {exc.strerror}") from exc
    with os.fdopen(fd, "r+", encoding="utf-8") as f:
        text = f.read()
        try:
            existing = yaml.safe_load(text) or []
        except yaml.YAMLError as exc:
            raise InvalidInput(f"--append {path}: not valid YAML: {exc}") from exc
        if not isinstance(existing, list):
            raise InvalidInput(f"--append {path}: expected a list of token entries")
        if any(isinstance(e, dict) and e.get("name") == entry.name for e in existing):
            raise InvalidInput(f"--append {path}: a token named {entry.name!r} is already there")
        lead = "" if not text or text.endswith("\n") else "\n"
        f.write(f"{lead}{entry.line()}\n")

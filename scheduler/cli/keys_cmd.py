"""``etcron keygen``: an Ed25519 key pair for signed jobs (docs/security.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from scheduler.cli.errors import InvalidInput


def register(app: typer.Typer) -> None:
    app.command()(keygen)


def keygen(
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Directory for signing.key and signing.pub")
    ],
) -> None:
    """Write a job signing key pair: DIR/signing.key (mode 0600, for master.signing_key_file)
    and DIR/signing.pub (for worker.trusted_key_files). Never overwrites a file (exit 2)."""
    from scheduler.signing import keygen as make_keys

    try:
        key, pub, kid = make_keys(out)
    except FileExistsError as exc:
        raise InvalidInput(f"{exc.filename}: exists; refusing to overwrite a key") from exc
    except OSError as exc:
        raise InvalidInput(f"{out}: cannot write keys: {exc.strerror}") from exc
    typer.echo(f"wrote {key} (private, 0600) and {pub}; key id {kid}")

"""Sending one notification: a signed webhook, a Slack message or an email.

Webhooks (docs/operations.md, "Notifications"):

- ``POST`` of a JSON object (:func:`payload`), ``Content-Type: application/json``.
- ``X-Etcron-Timestamp``: Unix seconds when the request was signed (decimal ASCII).
- ``X-Etcron-Signature: sha256=<hex>``: HMAC-SHA256, keyed with the contents of
  ``notify.secret_file`` (surrounding whitespace stripped), over the bytes
  ``<timestamp>.<raw body>`` (the timestamp header's value, one ``.``, then the
  body exactly as sent). A receiver recomputes it, compares in constant time,
  and refuses a timestamp too far from its own clock (replays).
- ``X-Etcron-Delivery``: the delivery's key (job/run/event/sink), the same on
  every retry: a receiver can drop a duplicate.
- Any 2xx answer is a success; anything else (or no answer within
  ``notify.timeout``) is a failed attempt. Redirects are not followed.

Slack: ``POST {"text": ...}`` to the incoming-webhook URL (the URL is the secret).
Email: SMTP with STARTTLS (``notify.smtp.starttls``) and login when a username
is set; the whole exchange within ``notify.smtp.timeout``.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import smtplib
import ssl
from email.message import EmailMessage
from typing import Any

import httpx

from scheduler.config import SmtpConfig
from scheduler.notify.events import Notice


class SinkError(Exception):
    """One attempt failed; the message says how (no secret in it)."""


def payload(n: Notice, tail_bytes: int) -> dict[str, Any]:
    rec = n.record
    tail = rec.output_tail.encode()[-tail_bytes:].decode("utf-8", "replace") if tail_bytes else ""
    return {
        "event": n.event.value,
        "job": rec.job,
        "run_id": rec.run_id,
        "tick": rec.tick.isoformat(),
        "status": rec.status.value,
        "exit_code": rec.exit_code,
        "worker": rec.worker,
        "start": rec.start.isoformat() if rec.start else None,
        "end": rec.end.isoformat() if rec.end else None,
        "duration": rec.duration,
        "message": rec.message,
        "output_tail": tail,
        "path": f"/v1/jobs/{rec.job}/runs/{rec.run_id}",
    }


def signature(secret: bytes, timestamp: str, body: bytes) -> str:
    """The ``X-Etcron-Signature`` value for ``body`` signed at ``timestamp``."""
    mac = hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def text(n: Notice) -> str:
    rec = n.record
    what = {
        "failed": f"failed ({rec.status.value}"
        + (f", exit {rec.exit_code})" if rec.exit_code is not None else ")"),
        "recovered": "recovered: succeeded after a failure",
        "missed": f"did not run: {rec.message or 'missed'}",
        "late": "started late",
        "overran": "ran too long" if rec.status.final else "is still running past its limit",
        "succeeded": "succeeded",
    }[n.event.value]
    where = f" on {rec.worker}" if rec.worker and n.event.value != "missed" else ""
    took = f" after {rec.duration:.1f}s" if rec.duration is not None else ""
    return (
        f"etcron: job {rec.job} {what}{where}{took} (tick {rec.tick.isoformat()}, run {rec.run_id})"
    )


async def post(http: httpx.AsyncClient, url: str, body: bytes, headers: dict[str, str]) -> None:
    try:
        resp = await http.post(url, content=body, headers=headers)
    except httpx.TimeoutException as exc:
        raise SinkError(f"no answer in time ({type(exc).__name__})") from exc
    except httpx.HTTPError as exc:
        raise SinkError(f"{type(exc).__name__}: {exc}"[:300]) from exc
    if not 200 <= resp.status_code < 300:
        raise SinkError(f"answered HTTP {resp.status_code}")


async def webhook(
    http: httpx.AsyncClient,
    url: str,
    n: Notice,
    *,
    secret: bytes | None,
    delivery: str,
    now: float,
    tail_bytes: int,
) -> None:
    if not secret:
        raise SinkError("webhooks need notify.secret_file (the signing key) in the master's config")
    body = json.dumps(payload(n, tail_bytes), separators=(",", ":")).encode()
    stamp = str(int(now))
    headers = {
        "Content-Type": "application/json",
        "X-Etcron-Timestamp": stamp,
        "X-Etcron-Signature": signature(secret, stamp, body),
        "X-Etcron-Delivery": delivery,
        "X-Etcron-Event": n.event.value,
    }
    await post(http, url, body, headers)


async def slack(http: httpx.AsyncClient, url: str, n: Notice) -> None:
    body = json.dumps({"text": text(n)}).encode()
    await post(http, url, body, {"Content-Type": "application/json"})


async def email(cfg: SmtpConfig, to: str, n: Notice, tail_bytes: int) -> None:
    if not cfg.host:
        raise SinkError("email needs notify.smtp.host in the master's config")
    msg = EmailMessage()
    msg["From"] = cfg.from_
    msg["To"] = to
    msg["Subject"] = text(n)[:200]
    details = json.dumps(payload(n, tail_bytes), indent=2)
    msg.set_content(f"{text(n)}\n\n{details}\n")
    try:
        password = cfg.resolved_password()
    except OSError as exc:
        raise SinkError(f"notify.smtp.password_file: cannot read: {exc.strerror}") from exc
    try:
        await asyncio.wait_for(asyncio.to_thread(_smtp_send, cfg, password, msg), cfg.timeout + 1)
    except TimeoutError as exc:
        raise SinkError(f"SMTP {cfg.host}:{cfg.port}: no answer in time") from exc
    except (OSError, smtplib.SMTPException) as exc:
        raise SinkError(f"SMTP {cfg.host}:{cfg.port}: {type(exc).__name__}: {exc}"[:300]) from exc


def _smtp_send(cfg: SmtpConfig, password: str | None, msg: EmailMessage) -> None:
    with smtplib.SMTP(cfg.host, cfg.port, timeout=cfg.timeout) as smtp:
        if cfg.starttls:
            smtp.starttls(context=ssl.create_default_context())
        if cfg.username:
            smtp.login(cfg.username, password or "")
        smtp.send_message(msg)

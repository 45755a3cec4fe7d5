"""Notification rules: ``{on: [...], webhook: URL | slack: URL | email: ADDRESS}``.

Rules:

- ``on`` lists events from :class:`Event`, at least one, no repeats.
- Exactly one sink: ``webhook`` and ``slack`` are ``http://`` or ``https://``
  URLs with a host; ``email`` is one address (``local@domain``, no spaces,
  commas or line breaks: it goes into a mail header).
- ``late`` and ``overran`` are durations (``30s``, ``5m``, ``1h``). A rule that
  lists the event must set its threshold, and a threshold without its event
  in ``on`` is an error (it would silently do nothing).
- YAML 1.1 reads a bare ``on`` key as the boolean ``true``; such a key (or the
  ``"true"`` it becomes in JSON) is taken as ``on``.
- Which rules apply to a job: its own ``notify:`` list when it has one (an
  empty list turns notifications off for it), else ``notify.defaults``.
"""

from __future__ import annotations

import hashlib
import re
from enum import StrEnum
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from scheduler.durations import parse_duration
from scheduler.limits import MAX_DURATION, quote

MAX_RULES = 20
"""Rules per job (and in ``notify.defaults``)."""
MAX_TARGET_CHARS = 2048
_EMAIL_RE = re.compile(r"^[^@\s,;<>\"]{1,64}@[A-Za-z0-9.-]{1,255}\Z")


class Event(StrEnum):
    FAILED = "failed"
    """The run ended failed, timed_out, killed or lost."""
    RECOVERED = "recovered"
    """A success after a failure or a missed tick (the job's previous final record)."""
    MISSED = "missed"
    """The tick did not run (a ``missed`` record: no worker, or the did-not-run detector)."""
    LATE = "late"
    """The run started more than ``late`` after its tick."""
    OVERRAN = "overran"
    """The run is still running ``overran`` after its start (or ended after longer)."""
    SUCCEEDED = "succeeded"


def _duration(value: Any) -> Any:
    return None if value is None else parse_duration(value)


Threshold = Annotated[float | None, BeforeValidator(_duration)]


class NotifyRule(BaseModel):
    """One rule. See the module docstring."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    on: list[Event] = Field(min_length=1, max_length=len(Event))
    webhook: str | None = None
    slack: str | None = None
    email: str | None = None
    late: Threshold = None
    overran: Threshold = None

    @model_validator(mode="before")
    @classmethod
    def _yaml_on(cls, data: Any) -> Any:
        if isinstance(data, dict) and "on" not in data:
            for key in (True, "true"):
                if key in data:
                    data = {("on" if k == key else k): v for k, v in data.items()}
                    break
        return data

    @model_validator(mode="after")
    def _check(self) -> NotifyRule:
        if len(set(self.on)) != len(self.on):
            raise ValueError("'on' lists an event twice")
        sinks = [k for k in ("webhook", "slack", "email") if getattr(self, k) is not None]
        if len(sinks) != 1:
            raise ValueError(
                "set exactly one of 'webhook', 'slack' or 'email' "
                f"(got {', '.join(sinks) if sinks else 'none'})"
            )
        kind, target = self.sink
        if len(target) > MAX_TARGET_CHARS:
            raise ValueError(f"{kind} is {len(target)} characters; at most {MAX_TARGET_CHARS}")
        if kind == "email":
            if not _EMAIL_RE.match(target):
                raise ValueError(f"email {quote(target)} is not an address like ops@example.com")
        else:
            parts = urlsplit(target)
            try:
                bad_port = parts.port is not None and parts.port == 0
            except ValueError:  # not a number, or out of range
                bad_port = True
            if parts.scheme not in ("http", "https") or not parts.hostname or bad_port:
                raise ValueError(
                    f"{kind} {quote(redact(target))} is not an http:// or https:// URL with a host"
                )
        for event, value in ((Event.LATE, self.late), (Event.OVERRAN, self.overran)):
            listed = event in self.on
            if listed and value is None:
                raise ValueError(
                    f"'on' lists {event.value!r}: set '{event.value}' to its threshold, like 5m"
                )
            if value is not None and not listed:
                raise ValueError(f"'{event.value}' is set but 'on' does not list {event.value!r}")
            if value is not None and not 0 < value <= MAX_DURATION:
                raise ValueError(f"'{event.value}' must be more than 0 and at most 365d")
        return self

    @property
    def sink(self) -> tuple[str, str]:
        """(kind, target): ``("webhook", URL)``, ``("slack", URL)`` or ``("email", ADDRESS)``."""
        for kind in ("webhook", "slack", "email"):
            value = getattr(self, kind)
            if value is not None:
                return kind, value
        raise AssertionError("a validated rule has a sink")

    @property
    def sink_id(self) -> str:
        """A short, stable name of the sink (kind and target hashed): part of the
        idempotency key, so the URL (which may hold a secret) is never in a key."""
        kind, target = self.sink
        return hashlib.sha256(f"{kind}\0{target}".encode()).hexdigest()[:12]


def redact(target: str) -> str:
    """A sink's target fit to show: a URL loses its path, query and credentials
    (a Slack webhook URL *is* its secret); an address, or text that is no URL, stays."""
    if "://" not in target:
        return target
    parts = urlsplit(target)
    host = parts.hostname or "?"
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    return f"{parts.scheme}://{host}{port}/..."


def rules_for(job_rules: list[NotifyRule] | None, defaults: list[NotifyRule]) -> list[NotifyRule]:
    """The rules that apply to a job: its own list if it has one, else the defaults."""
    return defaults if job_rules is None else job_rules

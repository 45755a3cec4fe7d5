"""Logging for every etcron process: structlog, one line per event, on stderr.

Rules:

- ``fmt="json"`` (or ``"auto"`` when stderr is not a terminal) writes JSON lines;
  ``fmt="console"`` (or ``"auto"`` on a terminal) writes readable, coloured lines.
- Every line carries ``component`` (``master``, ``worker``, ``cli``), ``level``,
  ``logger`` when known, and an ISO-8601 UTC ``timestamp``.
- Records from the standard ``logging`` module (uvicorn, etcd3aio, grpc) go
  through the same renderer; third-party loggers are held at ``warning`` so
  they never drown etcron's own events. etcron's stdlib loggers follow ``level``.
- Calling :func:`configure_logging` again replaces the previous setup.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, Literal

import structlog
from structlog.typing import EventDict, Processor

Level = Literal["debug", "info", "warning", "error"]
Format = Literal["auto", "json", "console"]

THIRD_PARTY = ("uvicorn", "uvicorn.error", "uvicorn.access", "etcd3aio", "grpc", "asyncio", "httpx")


def _renderer(fmt: str) -> Processor:
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    if use_json:
        return structlog.processors.JSONRenderer()
    return structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())


def configure_logging(component: str, level: str = "info", fmt: str = "auto") -> None:
    """Set up structlog and stdlib logging for one process (see the module rules)."""
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level!r} (expected debug, info, warning or error)")
    if fmt not in ("auto", "json", "console"):
        raise ValueError(f"unknown log format {fmt!r} (expected auto, json or console)")

    def add_component(_: Any, __: str, event: EventDict) -> EventDict:
        event.setdefault("component", component)
        return event

    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        add_component,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
    ]
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, _renderer(fmt)],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric)
    for name in THIRD_PARTY:
        lg = logging.getLogger(name)
        lg.handlers.clear()
        lg.propagate = True
        lg.setLevel(max(numeric, logging.WARNING))

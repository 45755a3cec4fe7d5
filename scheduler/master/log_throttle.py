"""A logging filter that lets each kind of message through once per interval.

uvicorn logs a warning for every unparsable request and asyncio an error for
every failed ``accept()``: a hostile client would grow the log by the line.
:class:`ThrottleFilter`, on those loggers, passes the first record of a kind
(its logger and the first line of its message template) per ``every``
seconds; the next one passed says how many were dropped in between.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

NOISY_LOGGERS = ("uvicorn.error", "asyncio")
_MAX_KINDS = 1000


class ThrottleFilter(logging.Filter):
    def __init__(self, every: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.every = every
        self._clock = clock
        self._passed: dict[tuple[str, str], float] = {}
        self._dropped: dict[tuple[str, str], int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        kind = (record.name, str(record.msg).partition("\n")[0][:100])
        now = self._clock()
        last = self._passed.get(kind)
        if last is not None and now - last < self.every:
            self._dropped[kind] = self._dropped.get(kind, 0) + 1
            return False
        if len(self._passed) >= _MAX_KINDS:
            self._forget(now)
        self._passed[kind] = now
        dropped = self._dropped.pop(kind, 0)
        if dropped and last is not None:
            record.msg = f"{record.msg} ({dropped} more like this in {now - last:.0f}s not logged)"
        return True

    def _forget(self, now: float) -> None:
        for kind, at in list(self._passed.items()):
            if now - at >= self.every:
                del self._passed[kind]
                self._dropped.pop(kind, None)
        if len(self._passed) >= _MAX_KINDS:
            self._passed.clear()
            self._dropped.clear()


@contextmanager
def throttled(names: tuple[str, ...] = NOISY_LOGGERS, every: float = 60.0) -> Iterator[None]:
    """Install one :class:`ThrottleFilter` on the named loggers for the duration."""
    flt = ThrottleFilter(every)
    loggers = [logging.getLogger(n) for n in names]
    for lg in loggers:
        lg.addFilter(flt)
    try:
        yield
    finally:
        for lg in loggers:
            lg.removeFilter(flt)

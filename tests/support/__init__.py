"""Test helpers.

Rule for every test here: wait on events or conditions with a hard timeout
(``await asyncio.wait_for(event.wait(), 5)``, :func:`wait_for`, :func:`wait_until`),
never on a bare ``sleep`` used as synchronisation. A sleep guesses how long something
takes: too short and the test flakes on a loaded CI machine, too long and the suite
crawls. A condition with a timeout is both fast and robust.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any


def _describe(predicate: Callable[..., Any], message: str | None) -> str:
    if message:
        return message
    try:
        src = inspect.getsource(predicate).strip()
    except (OSError, TypeError):
        src = repr(predicate)
    return src if len(src) <= 200 else src[:200] + "..."


async def wait_for(
    predicate: Callable[[], Any | Awaitable[Any]],
    timeout: float = 10.0,
    interval: float = 0.02,
    *,
    message: str | None = None,
) -> Any:
    """Poll ``predicate`` (sync or async) until it returns something truthy; return that.

    Raises ``AssertionError`` naming the condition (``message`` or the predicate's
    source) and its last value if it is still falsy after ``timeout`` seconds. The
    predicate is always evaluated at least once, and once more at the deadline.

    Use it to wait for *conditions* ("the ledger has 5 lines", "the key is gone"). Do
    not replace it with ``asyncio.sleep``: tests wait on events or conditions, never
    on bare sleeps.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if loop.time() >= deadline:
            raise AssertionError(
                f"condition not met within {timeout}s (last value {value!r}): "
                f"{_describe(predicate, message)}"
            )
        await asyncio.sleep(min(interval, max(0.0, deadline - loop.time())))


def wait_until(
    predicate: Callable[[], Any],
    timeout: float = 10.0,
    interval: float = 0.02,
    *,
    message: str | None = None,
) -> Any:
    """Blocking :func:`wait_for` for synchronous tests and fixtures."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"condition not met within {timeout}s (last value {value!r}): "
                f"{_describe(predicate, message)}"
            )
        time.sleep(min(interval, max(0.0, deadline - time.monotonic())))

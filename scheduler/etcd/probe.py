"""One etcd endpoint at a time, for ``etcron doctor``.

A daemon's client hides a bad member behind failover; the doctor wants the
opposite: the state of each endpoint on its own. :func:`probe_endpoint` opens
a client on that endpoint alone and asks, in this order, all within
``timeout`` seconds:

1. ``Status`` (answered by the member itself, even without a leader or
   quorum): it is reachable; which leader it knows; its database size.
2. With ``etcd.username`` set: authentication with the config's user.
3. A linearizable read under ``<prefix>/jobs/``: the cluster has quorum and
   the user may read (what every etcron role may do).
4. The alarms (``NOSPACE``, ``CORRUPT``); an etcd user that may not read them
   is reported as such, not as a failure of the endpoint.

It never raises for what the endpoint answers: the result says how far it got.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from scheduler.config import EtcdConfig
from scheduler.etcd.client import EtcdAuthError, EtcdClient, EtcdError


@dataclass
class EndpointHealth:
    endpoint: str
    reachable: bool = False
    leader: int = 0
    member: int = 0
    raft_term: int = 0
    db_size: int = 0
    authenticated: bool | None = None
    """None: no user configured; False: the user was refused."""
    readable: bool = False
    """A linearizable read succeeded: quorum, and read permission."""
    alarms: list[str] | None = None
    """None: not read (no permission, or an earlier step failed)."""
    error: str = ""
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


async def probe_endpoint(config: EtcdConfig, endpoint: str, timeout: float) -> EndpointHealth:
    """The state of ``endpoint`` (see the module docstring), within ``timeout`` seconds
    (plus the host name's resolution)."""
    out = EndpointHealth(endpoint)
    began = time.monotonic()
    one = config.model_copy(
        update={"endpoints": [endpoint], "request_timeout": timeout, "connect_timeout": timeout}
    )
    try:
        client = EtcdClient(one)  # resolves the host name
    except (OSError, ValueError) as exc:
        out.error = f"cannot resolve or open: {exc}"
        return out
    try:
        await _steps(client, one, out, timeout)
    finally:
        await client.close()
        out.seconds = time.monotonic() - began
    return out


async def _steps(client: EtcdClient, config: EtcdConfig, out: EndpointHealth, t: float) -> None:
    end = asyncio.get_running_loop().time() + t  # one deadline for every step
    try:
        async with asyncio.timeout_at(end):
            status = await client.status()
        out.reachable = True
        out.leader, out.member = status["leader"], status["member"]
        out.raft_term, out.db_size = status["raft_term"], status["db_size"]
    except EtcdAuthError:
        out.reachable = True  # it answered, if only to refuse
    except (EtcdError, TimeoutError) as exc:
        out.error = _short(exc) or "no answer"
        return
    if config.username:
        try:
            async with asyncio.timeout_at(end):
                await client.login()
            out.authenticated = True
        except EtcdAuthError as exc:
            out.authenticated = False
            out.error = f"authentication refused: {_short(exc)}"
            return
        except (EtcdError, TimeoutError) as exc:
            out.error = f"authentication: {_short(exc) or 'no answer'}"
            return
    try:
        async with asyncio.timeout_at(end):
            await client.revision(timeout=t)
        out.readable = True
    except EtcdAuthError as exc:
        out.error = f"read refused: {_short(exc)}"
        return
    except (EtcdError, TimeoutError) as exc:
        out.error = f"linearizable read failed (no quorum?): {_short(exc) or 'no answer'}"
        return
    try:
        async with asyncio.timeout_at(end):
            out.alarms = await client.alarms()
    except EtcdAuthError:
        out.notes.append("this etcd user may not read the alarms")
    except (EtcdError, TimeoutError) as exc:
        out.notes.append(f"alarms not read: {_short(exc) or 'no answer'}")


def _short(exc: BaseException) -> str:
    return str(exc).strip()[:300]

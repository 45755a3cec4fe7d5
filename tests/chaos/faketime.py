"""libfaketime plumbing: a worker *process* whose wall clock is wrong, from outside.

libfaketime (Debian package ``libfaketime``, pulled in by ``faketime``) is
preloaded into the worker process only (``LD_PRELOAD``); nothing in the worker
knows. Two ways to fake:

- :meth:`FakeTime.fixed` -- ``FAKETIME="+1h"`` (or ``"-0.7"``): the process's
  ``CLOCK_REALTIME`` is that far off from its first instruction;
- :meth:`FakeTime.stepping` -- ``FAKETIME_TIMESTAMP_FILE`` names a file holding the
  offset (``"+0"`` at first), re-read on every clock read (``FAKETIME_NO_CACHE=1``,
  about 2 us a read), so :meth:`FakeTime.step` rewriting the file steps the clock of
  the running process, as ``date -s`` or a bad NTP server would.

``DONT_FAKE_MONOTONIC=1`` keeps ``CLOCK_MONOTONIC`` true: a stepped wall clock never
moves the monotonic one, on a real host either. The worker hands its job children
a clean environment (``workers.run_env.child_env``: a few ``BASE_ENV`` names, no
``LD_PRELOAD``), so children see the true clock; :func:`probe_job` checks that from
inside a child. The worker's guard sidecar inherits the worker's environment (it
only reads ``CLOCK_MONOTONIC``, which is not faked).

Known limit of libfaketime 0.9.10 with ``DONT_FAKE_MONOTONIC``: ``time.sleep()`` of
Python 3.11+ (``clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME)``) fails with
``EINVAL`` (wolfcw/libfaketime#426). The worker never calls it (asyncio waits in
``epoll``), and :func:`check_library` would show it if that changed.
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scheduler.config import Config
from tests.chaos.rig import Rig
from tests.support.cluster import WorkerProcess

LIBRARY = "libfaketimeMT.so.1"  # the thread-safe variant: the worker runs threads (gRPC)
PACKAGE = "libfaketime"


class FaketimeMissing(RuntimeError):
    pass


@functools.cache
def library() -> Path:
    """The path of ``libfaketimeMT.so.1``, as the Debian package installed it."""
    try:
        out = subprocess.run(
            ["dpkg", "-L", PACKAGE], capture_output=True, text=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        raise FaketimeMissing(
            f"{PACKAGE} is not installed (apt-get install faketime): {exc}"
        ) from exc
    for line in out.splitlines():
        if line.endswith("/" + LIBRARY) and Path(line).exists():
            return Path(line)
    raise FaketimeMissing(f"{LIBRARY} not listed by dpkg -L {PACKAGE}")


_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "y": 365 * 86400.0}


def seconds(spec: str) -> float:
    """A libfaketime relative offset (``+1h``, ``-0.7``, ``+0``) in seconds."""
    m = re.fullmatch(r"\s*([+-]?\d+(?:\.\d*)?)\s*([smhdy]?)\s*", spec)
    if m is None:
        raise ValueError(f"not a relative libfaketime offset: {spec!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


@dataclass
class FakeTime:
    """How one worker process's wall clock is faked."""

    spec: str  # the current offset, libfaketime syntax
    file: Path | None = None  # FAKETIME_TIMESTAMP_FILE (stepping) or None (fixed)
    steps: list[tuple[float, str]] = field(default_factory=list)  # (true time, new spec)

    @classmethod
    def fixed(cls, spec: str) -> FakeTime:
        seconds(spec)
        return cls(spec)

    @classmethod
    def stepping(cls, path: Path, initial: str = "+0") -> FakeTime:
        ft = cls(initial, path)
        ft._write(initial)
        return ft

    @property
    def offset(self) -> float:
        return seconds(self.spec)

    def env(self) -> dict[str, str]:
        env = {"LD_PRELOAD": str(library()), "DONT_FAKE_MONOTONIC": "1"}
        if self.file is None:
            env["FAKETIME"] = self.spec
        else:
            env["FAKETIME_TIMESTAMP_FILE"] = str(self.file)
            env["FAKETIME_NO_CACHE"] = "1"
        return env

    def step(self, spec: str, now: float) -> None:
        """Step the running process's clock to ``spec`` (a stepping FakeTime only)."""
        if self.file is None:
            raise ValueError("a fixed FAKETIME cannot step; use FakeTime.stepping()")
        seconds(spec)
        self._write(spec)
        self.spec = spec
        self.steps.append((now, spec))

    def _write(self, spec: str) -> None:
        assert self.file is not None
        tmp = self.file.with_name(self.file.name + ".tmp")
        tmp.write_text(spec + "\n")
        os.replace(tmp, self.file)  # a reader sees the old or the new offset, never ""


class FakeTimeWorker(WorkerProcess):
    """``etcron worker`` as a process, with libfaketime preloaded into it alone."""

    def __init__(self, config: Config, log: Path, fake: FakeTime) -> None:
        super().__init__(config, log)
        self.fake = fake

    def start(self) -> None:
        env = dict(os.environ)
        env.pop("LD_PRELOAD", None)
        env |= self.fake.env()
        env["ETCRON_WORKER_CONFIG_JSON"] = self.config.model_dump_json()
        code = (
            "import os, sys; from scheduler.config import Config; from workers.daemon import main; "
            "sys.exit(main(Config.model_validate_json(os.environ['ETCRON_WORKER_CONFIG_JSON'])))"
        )
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", code], stdout=out, stderr=out, env=env
            )


class ClockRig(Rig):
    """A :class:`Rig` whose workers ``fake`` (index -> :class:`FakeTime`) run under
    libfaketime; the others have the true clock."""

    def __init__(self, workdir: Path, *, fake: dict[int, FakeTime], **kw: Any) -> None:
        library()  # fail before starting anything when libfaketime is missing
        self.fake = fake
        super().__init__(workdir, **kw)

    def _worker(self, i: int) -> WorkerProcess:
        w = super()._worker(i)
        return FakeTimeWorker(w.config, w.log, self.fake[i]) if i in self.fake else w


def environ(pid: int) -> dict[str, str]:
    """The environment a process was started with (``/proc/<pid>/environ``)."""
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    out = {}
    for item in raw.split(b"\0"):
        k, sep, v = item.partition(b"=")
        if sep:
            out[k.decode(errors="replace")] = v.decode(errors="replace")
    return out


def preloaded(pid: int) -> bool:
    return LIBRARY in environ(pid).get("LD_PRELOAD", "")


def check_library(fake: FakeTime) -> float:
    """Run a Python under ``fake`` and return its clock offset (a smoke test)."""
    code = "import time, asyncio; asyncio.run(asyncio.sleep(0.01)); print(time.time())"
    env = dict(os.environ) | fake.env()
    before = time.time()
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    after = time.time()
    if out.returncode != 0:
        raise FaketimeMissing(f"python under libfaketime failed: {out.stderr.strip()[-300:]}")
    return float(out.stdout) - (before + after) / 2


# a job that tells from inside a child whether the fake leaked into it ------------------

PROBE_FIELDS = ("worker", "tick", "ld_preload", "faketime", "faketime_file", "date", "uptime")


def probe_shell(path: Path) -> str:
    """A job body appending ``worker tick LD_PRELOAD FAKETIME FAKETIME_TIMESTAMP_FILE
    date uptime`` (``-`` for an unset variable). ``date`` is the child's wall clock;
    ``/proc/uptime`` is a file read, which libfaketime never fakes, so the reader can
    map it to the true wall clock and tell whether the child's clock is faked."""
    return (
        'echo "$ETCRON_WORKER $ETCRON_TICK ${LD_PRELOAD:--} ${FAKETIME:--} '
        f"${{FAKETIME_TIMESTAMP_FILE:--}} $(date +%s.%N) $(cut -d' ' -f1 /proc/uptime)\" >> {path}"
    )


def read_probe(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) == len(PROBE_FIELDS):
            out.append(dict(zip(PROBE_FIELDS, parts, strict=True)))
    return out

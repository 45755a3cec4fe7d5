"""The etcd keyspace, in one place.

Every key etcron reads or writes is built here, under a configurable prefix
(default ``/cron``). Job names are DNS labels, so a name never contains ``/`` and
``<prefix>/lock/<name>`` can never be a prefix of another job's key.

| key                                   | written by            | lease            |
|---------------------------------------|-----------------------|------------------|
| ``jobs/<name>``                       | masters               | none             |
| ``lock/<name>`` (``lock/<name>/<run>`` for ``allow``) | the running worker | its session |
| ``ticks/<name>``                      | the claim transaction | none             |
| ``workers/<id>``                      | the worker            | its session      |
| ``killer/<name>``                     | masters               | short            |
| ``trigger/<name>/<request>``          | masters (manual runs) | short            |
| ``taken/<name>/<request>``            | the claim of a manual run | none (leader cleans) |
| ``replace/<name>``                    | a worker replacing a run | its session   |
| ``runs/<name>/<run-id>``              | workers, leader master| none (retention) |
| ``output/<name>/<run-id>/<seq>``      | the running worker    | none (retention) |
| ``leader``                            | the leader master     | its session      |
| ``masters/<id>``                      | each master (clock)   | its session      |
| ``repairs/<kind>/<name>``             | the repairing worker  | none (last one)  |
| ``budget``                            | the leader master     | none             |
| ``audit/<ms>-<nonce>``                | masters, in the change's txn | none (retention) |
| ``history/<name>/<version>``          | masters, in the job write's txn | none (last N) |
| ``notify/<name>/<run>/<event>/<sink>``| the leader master     | none (retention) |
"""

from __future__ import annotations

from dataclasses import dataclass

TICK_WIDTH = 16
"""Ticks are stored as zero-padded epoch milliseconds, so byte order is time order."""


VERSION_WIDTH = 10
"""Definition versions are zero-padded so byte order is version order."""


def encode_tick(tick_ms: int) -> bytes:
    if tick_ms < 0:
        raise ValueError(f"tick must be >= 0, got {tick_ms}")
    return f"{tick_ms:0{TICK_WIDTH}d}".encode()


def decode_tick(raw: bytes) -> int:
    return int(raw.decode())


@dataclass(frozen=True, slots=True)
class Keyspace:
    prefix: str = "/cron"

    def __post_init__(self) -> None:
        if not self.prefix.startswith("/") or self.prefix.endswith("/"):
            raise ValueError(f"key prefix must start with '/' and not end with it: {self.prefix!r}")

    def _dir(self, kind: str) -> str:
        return f"{self.prefix}/{kind}/"

    # jobs
    @property
    def jobs(self) -> str:
        return self._dir("jobs")

    def job(self, name: str) -> str:
        return self.jobs + name

    # locks and tick fences
    @property
    def locks(self) -> str:
        return self._dir("lock")

    def lock(self, name: str) -> str:
        return self.locks + name

    def run_lock(self, name: str, run_id: str) -> str:
        """The per-run lock of an ``allow`` job (several may exist at once)."""
        return f"{self.locks}{name}/{run_id}"

    @property
    def ticks(self) -> str:
        return self._dir("ticks")

    def tick(self, name: str) -> str:
        return self.ticks + name

    # workers
    @property
    def workers(self) -> str:
        return self._dir("workers")

    def worker(self, worker_id: str) -> str:
        return self.workers + worker_id

    # requests from masters
    @property
    def killers(self) -> str:
        return self._dir("killer")

    def killer(self, name: str) -> str:
        return self.killers + name

    @property
    def triggers(self) -> str:
        return self._dir("trigger")

    def trigger(self, name: str, request_id: str) -> str:
        return f"{self.triggers}{name}/{request_id}"

    # what workers write of requests (workers may read, not write, the requests themselves)
    @property
    def taken_requests(self) -> str:
        return self._dir("taken")

    def taken(self, name: str, request_id: str) -> str:
        """Written by the claim that took manual-run request ``request_id``: one run per request."""
        return f"{self.taken_requests}{name}/{request_id}"

    @property
    def replacements(self) -> str:
        return self._dir("replace")

    def replacing(self, name: str) -> str:
        """``{"run_id": ...}``: a worker asks the holder of a ``replace`` job's lock to stop it."""
        return self.replacements + name

    # history
    @property
    def runs(self) -> str:
        return self._dir("runs")

    def job_runs(self, name: str) -> str:
        return f"{self.runs}{name}/"

    def run(self, name: str, run_id: str) -> str:
        return f"{self.runs}{name}/{run_id}"

    @property
    def outputs(self) -> str:
        return self._dir("output")

    def run_output(self, name: str, run_id: str) -> str:
        return f"{self.outputs}{name}/{run_id}/"

    def output_chunk(self, name: str, run_id: str, seq: int) -> str:
        return f"{self.outputs}{name}/{run_id}/{seq:08d}"

    @property
    def masters(self) -> str:
        return self._dir("masters")

    def master(self, master_id: str) -> str:
        return self.masters + master_id

    @property
    def repairs(self) -> str:
        return self._dir("repairs")

    def repair(self, kind: str, name: str) -> str:
        """The last repair of a stale or forged key (kind: fence, lock, worker)."""
        return f"{self.repairs}{kind}/{name}"

    # notifications: one delivery record per (job, run, event, sink)
    @property
    def notifications(self) -> str:
        return self._dir("notify")

    def job_notifications(self, name: str) -> str:
        return f"{self.notifications}{name}/"

    def notification(self, name: str, run_id: str, event: str, sink_id: str) -> str:
        """The delivery record of one event of one run to one sink (the idempotency key)."""
        return f"{self.notifications}{name}/{run_id}/{event}/{sink_id}"

    @property
    def leader(self) -> str:
        return f"{self.prefix}/leader"

    @property
    def budget(self) -> str:
        """The leader's word on etcd's space: ``{"output_spent": bool}`` (workers read it)."""
        return f"{self.prefix}/budget"

    # audit trail and definition history
    @property
    def audit(self) -> str:
        return self._dir("audit")

    def audit_entry(self, at_ms: int, nonce: str) -> str:
        """Zero-padded epoch milliseconds first: byte order is time order."""
        return f"{self.audit}{at_ms:0{TICK_WIDTH}d}-{nonce}"

    def audit_at(self, at_ms: int) -> str:
        """The first possible audit key at ``at_ms`` (a range bound)."""
        return f"{self.audit}{max(0, at_ms):0{TICK_WIDTH}d}"

    @property
    def history(self) -> str:
        return self._dir("history")

    def job_history(self, name: str) -> str:
        return f"{self.history}{name}/"

    def version(self, name: str, version: int) -> str:
        return f"{self.history}{name}/{version:0{VERSION_WIDTH}d}"

    @staticmethod
    def tail(key: str, prefix: str) -> str:
        """The part of ``key`` after ``prefix`` (``prefix`` must match)."""
        if not key.startswith(prefix):
            raise ValueError(f"{key!r} is not under {prefix!r}")
        return key[len(prefix) :]

    # inverse parsers: each takes a key built above and returns what built it;
    # a key of another shape is a ValueError naming the key

    def _parts(self, key: str, kind: str, n: int) -> list[str]:
        """The ``n`` non-empty ``/``-separated parts of ``key`` under ``<prefix>/<kind>/``."""
        parts = self.tail(key, self._dir(kind)).split("/")
        if len(parts) != n or not all(parts):
            raise ValueError(f"{key!r} is not a {kind}/ key of {n} part(s)")
        return parts

    def _whole(self, key: str, kind: str) -> str:
        """The non-empty rest of ``key`` under ``<prefix>/<kind>/`` (ids may hold ``/``)."""
        rest = self.tail(key, self._dir(kind))
        if not rest:
            raise ValueError(f"{key!r} names no {kind}/ entry")
        return rest

    def parse_job(self, key: str) -> str:
        """``jobs/<name>`` -> name."""
        return self._parts(key, "jobs", 1)[0]

    def parse_tick(self, key: str) -> str:
        """``ticks/<name>`` -> the job's name."""
        return self._parts(key, "ticks", 1)[0]

    def parse_lock(self, key: str) -> tuple[str, str | None]:
        """``lock/<name>`` -> (name, None); ``lock/<name>/<run>`` (``allow``) -> (name, run id)."""
        parts = self.tail(key, self.locks).split("/")
        if len(parts) == 1 and parts[0]:
            return parts[0], None
        if len(parts) == 2 and all(parts):
            return parts[0], parts[1]
        raise ValueError(f"{key!r} is not a lock/ key")

    def parse_worker(self, key: str) -> str:
        """``workers/<id>`` -> the worker id."""
        return self._whole(key, "workers")

    def parse_master(self, key: str) -> str:
        """``masters/<id>`` -> the master id."""
        return self._whole(key, "masters")

    def parse_killer(self, key: str) -> str:
        """``killer/<name>`` -> the job's name."""
        return self._parts(key, "killer", 1)[0]

    def parse_replacing(self, key: str) -> str:
        """``replace/<name>`` -> the job's name."""
        return self._parts(key, "replace", 1)[0]

    def parse_trigger(self, key: str) -> tuple[str, str]:
        """``trigger/<name>/<request>`` -> (name, request id)."""
        job, request = self._parts(key, "trigger", 2)
        return job, request

    def parse_taken(self, key: str) -> tuple[str, str]:
        """``taken/<name>/<request>`` -> (name, request id)."""
        job, request = self._parts(key, "taken", 2)
        return job, request

    def parse_run(self, key: str) -> tuple[str, str]:
        """``runs/<name>/<run-id>`` -> (name, run id)."""
        job, run_id = self._parts(key, "runs", 2)
        return job, run_id

    def parse_output_chunk(self, key: str) -> tuple[str, str, int]:
        """``output/<name>/<run-id>/<seq>`` -> (name, run id, seq)."""
        job, run_id, seq = self._parts(key, "output", 3)
        if not seq.isdigit():
            raise ValueError(f"{key!r} is not an output chunk key (seq {seq!r})")
        return job, run_id, int(seq)

    def parse_version(self, key: str) -> tuple[str, int]:
        """``history/<name>/<version>`` -> (name, version)."""
        job, number = self._parts(key, "history", 2)
        if not number.isdigit():
            raise ValueError(f"{key!r} is not a history key (version {number!r})")
        return job, int(number)

    def parse_repair(self, key: str) -> tuple[str, str]:
        """``repairs/<kind>/<name>`` -> (kind, name)."""
        kind, _, name = self.tail(key, self.repairs).partition("/")
        if not kind or not name:
            raise ValueError(f"{key!r} is not a repairs/ key")
        return kind, name

    def parse_audit(self, key: str) -> str:
        """``audit/<ms>-<nonce>`` -> the entry's id (``<ms>-<nonce>``)."""
        return self._whole(key, "audit")

"""One run: claim a tick (or a manual trigger), execute with retries, release.

The rules of a run, in order:

1. Claim with one transaction (``scheduler.etcd.claim_txn``): the tick fence, the lock
   on our session lease, and the ``running`` record. Losing writes nothing else.
2. Start the child only while the session can still prove its lease for at least
   ``MIN_LEASE_LEFT`` seconds; the fencing token (the claim's revision) goes into
   the child's environment as ``ETCRON_FENCING_TOKEN``.
3. Retries stay inside the same claim: the lock is held between attempts.
4. Release with one transaction: the final record, and the lock deleted only if
   its mod revision is still our token. If etcd is unreachable the release is
   retried until it lands; a run whose lease was lost is recorded as ``lost``.
   While commits are slow the release may also claim the job's next tick, with
   the lock passed on to that run (``workers.handover``).
5. No way out skips rule 4 (``execute`` ends in a ``finally``): an error in the
   output sink or the local log file, a failed spawn, an exception in the
   worker's own bookkeeping (``failed``, with a message naming the cause), a
   cancelled task (the worker going away: ``killed``) all write a final record
   and release the lock.

Its parts: the handle of a run and the words for how it ended
(:mod:`workers.run_handle`), the child's argv and environment
(:mod:`workers.run_env`), the run-as user and cgroup
(:mod:`workers.run_placement`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime

import structlog

from scheduler.durations import format_duration
from scheduler.etcd.claim_txn import Handed, release, release_and_claim
from scheduler.etcd.client import EtcdError, TxnSender
from scheduler.limits import format_size
from scheduler.runs import RunRecord, RunStatus
from workers.cgroups import CgroupHost
from workers.executor import Child, Outcome, OutputSink, StopReason
from workers.run_env import argv_of, child_env
from workers.run_handle import NextRun, RunHandle, RunObserver, final_status, lost_message
from workers.run_placement import RunPlacement

log = structlog.get_logger("etcron.run")

MIN_LEASE_LEFT = 0.5
FLUSH_TIMEOUT = 10.0
"""Longest the end of a run waits for its last output chunks before the release."""


class Runner:
    """Executes claimed runs for a worker. ``lease_left`` says how long the session is proven."""

    def __init__(
        self,
        client: TxnSender,
        worker_id: str,
        *,
        kill_grace: float,
        allow_run_as: bool,
        default_user: str | None = None,
        lease_left: Callable[[], float],
        now: Callable[[], datetime],
        guard_add: Callable[[int], None],
        guard_remove: Callable[[int], None],
        sink_factory: Callable[[RunHandle], OutputSink] | None = None,
        launch: Callable[[int, Callable[[], None]], Awaitable[None]] | None = None,
        next_run: Callable[[RunHandle], NextRun | None] | None = None,
        observer: RunObserver | None = None,
        cgroups: Callable[[], tuple[CgroupHost | None, str]] = CgroupHost.detect,
    ) -> None:
        self.client = client
        self.placement = RunPlacement(
            allow_run_as=allow_run_as, default_user=default_user, cgroups=cgroups
        )
        """The run-as user and the cgroup of each attempt."""
        self.worker_id = worker_id
        self.kill_grace = kill_grace
        self.lease_left = lease_left
        self.now = now
        self.guard_add = guard_add
        self.guard_remove = guard_remove
        self.sink_factory = sink_factory
        self.launch = launch
        self.next_run = next_run
        self.observer = observer

    def _start(self, h: RunHandle, child: Child) -> None:
        """Start ``child`` unless the run was stopped or the lease is not proven (rule 2)."""
        if h.stop_reason is None and self.lease_left() >= MIN_LEASE_LEFT:
            if self.observer is not None:
                self.observer.run_started(h)
            child.start()

    async def execute(self, h: RunHandle, start_at_ms: int | None = None) -> RunRecord:
        """Run ``h`` to the end (all attempts) and release its claim; return the final record.

        With ``start_at_ms`` the first attempt is prepared now and started by
        the launcher at that instant (the tick); later attempts start at once.

        Every way out ends the same (rule 5): a final record and the release.
        An exception in the output sink, the spawn or our own bookkeeping fails
        the run with a message naming it; a cancellation (the worker going
        away) kills the child and records the run as ``killed`` before the
        cancellation goes on.
        """
        result = _Result()
        sink: OutputSink | None = None
        cancelled = False
        try:
            try:
                sink = self._sink(h)
            except Exception as exc:
                log.exception("output sink could not be set up", job=h.job.name, run=h.run_id)
                result.error = f"output capture could not be set up: {type(exc).__name__}: {exc}"
                result.broken = True
            else:
                await self._attempts(h, sink, start_at_ms, result)
        except asyncio.CancelledError:
            cancelled = True
            if h.stop_reason is None:
                h.stop_reason = StopReason.KILLED
                result.error = result.error or "the worker stopped while the run was active"
            h.stop(h.stop_reason, now=True)
        except Exception as exc:
            log.exception("run failed in the worker", job=h.job.name, run=h.run_id)
            result.error = f"internal error in the worker: {type(exc).__name__}: {exc}"
            result.broken = True
            if h.child is not None:
                h.child.stop(StopReason.KILLED, now=True)
        finally:
            # the end of the run, whatever happened above: record it and release the
            # lock, even if this task is cancelled meanwhile (a second cancel gives up)
            end = asyncio.ensure_future(self._end(h, sink, result))
            while not end.done():
                try:
                    await asyncio.shield(end)
                except asyncio.CancelledError:
                    if end.done():
                        break  # the end itself was cancelled (the client is closing)
                    if cancelled:
                        end.cancel()
                        raise
                    cancelled = True
                except Exception:
                    break  # logged below
            if end.done() and not end.cancelled() and end.exception() is not None:
                log.error("could not end the run", job=h.job.name, error=repr(end.exception()))
            if cancelled:
                raise asyncio.CancelledError
        return h.record

    async def _attempts(
        self, h: RunHandle, sink: OutputSink, start_at_ms: int | None, result: _Result
    ) -> None:
        job, rec = h.job, h.record
        user, result.error = self.placement.user(job)
        attempts = job.retries + 1
        for attempt in range(1, attempts + 1):
            rec.attempt = attempt
            if result.error:
                break
            if self.lease_left() < MIN_LEASE_LEFT:
                h.stop_reason = StopReason.LOST
                result.error = "session lease not proven alive: not started"
                break
            cgroup, result.error = self.placement.cgroup(job, f"{rec.run_id}-{attempt}", user)
            if result.error:
                break
            child = Child(
                argv_of(job),
                env=child_env(job, rec, self.worker_id),
                cwd=job.workdir,
                user=user,
                sink=sink,
                kill_grace=self.kill_grace,
                on_start=self.guard_add,
                on_exit=self.guard_remove,
                cgroup=cgroup,
            )
            h.child = child
            if h.stop_reason is not None:
                break
            if attempt == 1 and start_at_ms is not None and self.launch is not None:
                await self.launch(start_at_ms, functools.partial(self._start, h, child))
                if h.stop_reason is not None and not child.started:
                    result.error = "stopped before it started"
                    break
                if not child.started:
                    h.stop_reason = StopReason.LOST
                    result.error = "session lease not proven alive: not started"
                    break
            if attempt == 1:
                log.debug("run started", job=job.name, run=rec.run_id, token=h.token)
            try:
                outcome = await child.run(job.timeout)
            finally:
                if cgroup is not None:
                    oom = cgroup.oom_kills()
                    cgroup.remove()
            if cgroup is not None and oom:
                assert job.resources is not None and job.resources.memory is not None
                outcome.error = (
                    "killed by the kernel's OOM killer: the run went over its memory limit "
                    f"(resources.memory {format_size(job.resources.memory)})"
                )
            elif cgroup is not None and outcome.exit_code == 125 and not child.sink_error:
                outcome.error = "exit status 125: the run may not have entered its cgroup"
            if (
                h.stop_reason is None
                and outcome.signal == signal.SIGKILL
                and self.lease_left() <= 0
            ):
                # the lease ran out under us (a paused worker): the guard killed the
                # child before the session loop could say so
                h.stop_reason = StopReason.LOST
            if h.stop_reason is None and outcome.stopped is StopReason.TIMEOUT:
                h.stop_reason = StopReason.TIMEOUT
            result.exit_code, result.signal = outcome.exit_code, outcome.signal
            result.attempts.append(_ended(outcome))
            result.error = outcome.error or child.sink_error
            if child.sink_error:
                result.broken = True
                break  # the output is incomplete: a retry would not be shown either
            if outcome.ok or h.stop_reason in (
                StopReason.KILLED,
                StopReason.LOST,
                StopReason.DRAIN,
            ):
                break
            if attempt < attempts:
                log.info("attempt failed, retrying", job=job.name, run=rec.run_id, attempt=attempt)
                marker = (
                    f"--- etcron: attempt {attempt} of {attempts} ended: {_ended(outcome)}; "
                    f"attempt {attempt + 1} follows after {format_duration(job.retry_backoff)} ---\n"
                )
                sink.write("stderr", marker.encode())
                h.stop_reason = None if h.stop_reason is StopReason.TIMEOUT else h.stop_reason
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(job.retry_backoff):
                        await h.stopped.wait()

    async def _end(self, h: RunHandle, sink: OutputSink | None, result: _Result) -> None:
        """Fill in the final record (output, status, message) and release the claim."""
        rec = h.record
        if sink is not None:
            try:
                async with asyncio.timeout(FLUSH_TIMEOUT):
                    await sink.flush()
            except TimeoutError:  # etcd too slow for the last chunks: the run's result stands
                log.warning("output flush timed out", job=h.job.name, run=h.run_id)
            except Exception as exc:
                log.warning("output flush failed", job=h.job.name, run=h.run_id, error=repr(exc))
                if not result.error:
                    result.error = f"output capture failed at the end: {type(exc).__name__}: {exc}"
                result.broken = True
            try:
                rec.output_bytes = sink.total
                rec.output_tail = sink.tail
                for name in ("omitted", "chunks"):
                    if hasattr(sink, name):
                        setattr(rec, f"output_{name}", getattr(sink, name))
            except Exception as exc:  # a broken sink costs its numbers, not the record
                log.warning("output summary failed", job=h.job.name, run=h.run_id, error=repr(exc))
        status = final_status(h, result.exit_code, result.error)
        if result.broken and status is RunStatus.SUCCEEDED:
            status = RunStatus.FAILED
        rec.status = status
        rec.exit_code, rec.signal = result.exit_code, result.signal
        rec.end = self.now()
        rec.message = result.error or lost_message(h)
        if len(result.attempts) > 1:
            tried = "; ".join(f"attempt {i}: {e}" for i, e in enumerate(result.attempts, 1))
            rec.message = f"{rec.message} ({tried})" if rec.message else tried
        await self.finish(h)
        if self.observer is not None:
            self.observer.run_ended(h)

    def _sink(self, h: RunHandle) -> OutputSink:
        if self.sink_factory is not None:
            return self.sink_factory(h)
        return OutputSink()

    async def finish(self, h: RunHandle, *, patience: float = 120.0) -> None:
        """Release the claim with the final record; retry while etcd is unreachable.

        With a hand-over (``next_run``) the same transaction claims the next
        tick; every re-send is the same request, and its answer is passed on
        once, after a definite reply.
        """
        delay = 0.1
        loop = asyncio.get_running_loop()
        give_up = loop.time() + patience
        nxt = self._next_run(h)
        handed: Handed | None = None
        while True:
            try:
                if nxt is None:
                    await release(
                        self.client, h.lock_key, h.token, h.record_key, h.record.to_json()
                    )
                else:
                    handed = await release_and_claim(
                        self.client, h.lock_key, h.token, h.record_key, h.record.to_json(), nxt[0]
                    )
                log.info(
                    "run finished",
                    job=h.job.name,
                    run=h.run_id,
                    status=str(h.record.status),
                    exit_code=h.record.exit_code,
                    attempt=h.record.attempt,
                    handed_over=bool(handed and handed.token),
                )
                break
            except Exception as exc:  # EtcdError, or anything else: retried, never silent
                if loop.time() > give_up:
                    log.error(
                        "could not record run result", job=h.job.name, run=h.run_id, error=str(exc)
                    )
                    return
                if not isinstance(exc, EtcdError):
                    log.warning("release failed, retrying", job=h.job.name, error=repr(exc))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
        if nxt is not None and handed is not None:
            try:
                nxt[1](handed)
            except Exception:
                log.exception("hand-over could not start the next run", job=h.job.name)

    def _next_run(self, h: RunHandle) -> NextRun | None:
        if self.next_run is None:
            return None
        try:
            return self.next_run(h)
        except Exception:  # bookkeeping must not cost the release
            log.exception("hand-over could not be prepared", job=h.job.name)
            return None


@dataclass
class _Result:
    """What the attempts ended with, filled in as they go."""

    exit_code: int | None = None
    signal: int | None = None
    error: str = ""
    broken: bool = False
    """The worker itself failed the run (sink, bookkeeping): never ``succeeded``."""
    attempts: list[str] = field(default_factory=list)
    """How each attempt ended (``exit status 1``), for the message of a retried run."""


def _ended(outcome: Outcome) -> str:
    """One attempt's end in words, for the retry marker and the record's message."""
    if outcome.stopped is StopReason.TIMEOUT:
        return "timed out"
    if outcome.exit_code is not None:
        return f"exit status {outcome.exit_code}"
    if outcome.signal is not None:
        return f"signal {outcome.signal}"
    return outcome.error or "failed"

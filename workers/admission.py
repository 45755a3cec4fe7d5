"""Which stored job definitions this worker agrees to run: signature, then policy.

:class:`Admission` judges a value read from ``jobs/<name>``; the job table
(:class:`workers.state.JobTable`) asks once per mod revision of the key and
keeps the answer, so neither the Ed25519 verification nor the policy is ever
on the per-tick path. A re-list (after a reconnect or a compaction) finds the
same revisions and asks nothing again.

A refused definition is out of the job table, so none of its ticks is fired,
claimed or accounted by this worker; the worker records the refusal once per
revision (:meth:`workers.refusals.Refusals.report`).

Signing is on when ``worker.trusted_key_files`` is not empty; off, a signed
value is read like an unsigned one (its signature is not checked).
"""

from __future__ import annotations

import os
import pwd
from dataclasses import dataclass

import structlog

from scheduler.config import Config, ConfigError, WorkerConfig
from scheduler.model import JobSpec
from scheduler.signing import Verifier, refusal_text, unwrap
from workers.credentials import check_credentials
from workers.policy import check

log = structlog.get_logger("etcron.worker")

POLICY = "policy"
"""The ``reason`` label of a policy refusal (signature refusals: :class:`scheduler.signing.Refusal`)."""


@dataclass(frozen=True, slots=True)
class Verdict:
    spec: JobSpec | None
    """The parsed spec (None only for a malformed value)."""
    refusal: str = ""
    """Why it may not run here, in words ("" when admitted or malformed)."""
    reason: str = ""
    """The metric label: ``unsigned``, ``untrusted_key``, ``bad_signature`` or ``policy``."""
    error: str = ""
    """The value is malformed (not a refusal: it is reported as invalid)."""


def default_run_as(cfg: WorkerConfig, euid: int | None = None) -> str | None:
    """Who runs a job without ``user``: ``worker.default_user`` when the worker is
    root (None when it is set to ""), else None (the worker's own user)."""
    if (os.geteuid() if euid is None else euid) != 0:
        return None
    return cfg.default_user or None


class Admission:
    def __init__(self, cfg: WorkerConfig, verifier: Verifier | None) -> None:
        self.cfg = cfg
        self.verifier = verifier
        self.default_user = default_run_as(cfg)

    @property
    def signing(self) -> bool:
        return self.verifier is not None

    def run_as(self, job: JobSpec) -> str | None:
        return job.user if job.user is not None else self.default_user

    def judge(self, name: str, value: bytes) -> Verdict:
        try:
            env = unwrap(value)
            spec = JobSpec.from_json(env.spec)
            if spec.name != name:
                raise ValueError(f"stored under {name!r} but named {spec.name!r}")
        except ValueError as exc:
            return Verdict(None, error=str(exc))
        if self.verifier is not None:
            why = self.verifier.check(env)
            if why is not None:
                return Verdict(spec, refusal_text(why, env), why.value)
        broken = check(
            spec, self.cfg.policy, run_as=self.run_as(spec), output_limit=self.cfg.output_limit
        )
        if broken is not None:
            return Verdict(spec, broken, POLICY)
        return Verdict(spec)


def admission_for(config: Config) -> Admission:
    """Check the credential files, load the trusted keys and the default user;
    ConfigError (exit 2) for what must change, warnings for what may be a mistake."""
    cfg = config.worker
    check_credentials(config)
    verifier = Verifier.from_files(cfg.trusted_key_files) if cfg.trusted_key_files else None
    admission = Admission(cfg, verifier)
    if verifier is None:
        log.warning(
            "job signing is off: worker.trusted_key_files is empty, so any job written "
            "into etcd runs here",
            worker=cfg.id,
        )
    if admission.default_user is not None:
        try:
            pwd.getpwnam(admission.default_user)
        except KeyError:
            raise ConfigError(
                f"worker.default_user: no user {admission.default_user!r} on this host"
            ) from None
    elif os.geteuid() == 0:
        log.warning("worker.default_user is empty: jobs without a user run as root", worker=cfg.id)
    return admission

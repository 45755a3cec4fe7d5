"""One configuration for masters and workers.

Sources, later ones win: built-in defaults, the YAML file (``--config`` or
``ETCRON_CONFIG``), then ``ETCRON_<SECTION>__<FIELD>`` environment variables
(for example ``ETCRON_ETCD__ENDPOINTS=10.0.0.1:2379,10.0.0.2:2379`` or
``ETCRON_MASTER__TOKEN=...``). Unknown keys are errors, so a typo is never
silently ignored. ``config.example.yaml`` documents every setting.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from scheduler.durations import parse_duration, parse_size
from scheduler.limits import MAX_OUTPUT_LIMIT, MAX_SPEC_BYTES
from scheduler.notify.rules import MAX_RULES, NotifyRule

Duration = Annotated[float, BeforeValidator(parse_duration)]
Size = Annotated[int, BeforeValidator(parse_size)]


def _signed_duration(value: Any) -> Any:
    if isinstance(value, str) and value.strip().startswith("-"):
        return -parse_duration(value.strip()[1:])
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return parse_duration(value)


SignedDuration = Annotated[float, BeforeValidator(_signed_duration)]


def _split_list(value: Any) -> Any:
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return value


def _split_labels(value: Any) -> Any:
    if isinstance(value, str):
        pairs = [p.strip() for p in value.split(",") if p.strip()]
        out: dict[str, str] = {}
        for pair in pairs:
            k, sep, v = pair.partition("=")
            if not sep:
                raise ValueError(f"expected key=value labels, got {pair!r}")
            out[k.strip()] = v.strip()
        return out
    return value


def _listen(value: Any) -> Any:
    """``host:port`` or ``[v6]:port``; ``""`` or ``off`` turns the listener off."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text.lower() in ("", "off"):
        return ""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"expected host:port, [v6]:port, '' or off, got {value!r}")
    return text


Listen = Annotated[str, BeforeValidator(_listen)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EtcdConfig(_Section):
    endpoints: Annotated[list[str], BeforeValidator(_split_list)] = ["127.0.0.1:2379"]
    prefix: str = "/cron"
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    tls_server_name: str | None = None
    username: str | None = None
    password: str | None = None
    password_file: Path | None = None
    request_timeout: Duration = 2.0
    connect_timeout: Duration = 10.0

    def resolved_password(self) -> str | None:
        if self.password_file is not None:
            return self.password_file.read_text().strip()
        return self.password


DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024


class MasterConfig(_Section):
    listen: str = "127.0.0.1:8070"
    token: str | None = None
    """One admin token, named ``token`` (at least 16 bytes)."""
    token_file: Path | None = None
    """A file holding that token (wins over ``token``); mode 0600 or stricter."""
    tokens_file: Path | None = None
    """Named, scoped tokens, as SHA-256 digests (``etcron token create``); mode 0600 or stricter."""
    allow_insecure_tokens: bool = False
    """Accept a token shorter than 16 bytes and token files others can read (tests only)."""
    tls_cert_file: Path | None = None
    """The API serves HTTPS with this certificate (chain) and ``tls_key_file``."""
    tls_key_file: Path | None = None
    public_docs: bool = False
    """Serve ``/docs``, ``/redoc`` and ``/openapi.json`` without a token."""
    max_body_bytes: Annotated[Size, Field(gt=0)] = DEFAULT_MAX_BODY_BYTES
    request_timeout: Annotated[Duration, Field(gt=0)] = 10.0
    keep_alive_timeout: Annotated[Duration, Field(gt=0)] = 5.0
    max_connections: Annotated[int, Field(ge=1)] = 1000
    housekeeping_interval: Duration = 30.0
    keep_succeeded: int = 10
    keep_failed: int = 20
    keep_for: Duration = 7 * 86400.0
    compact_interval: Duration = 300.0
    compact_keep_revisions: int = 10000
    metrics_token: str | None = None
    """Bearer token for ``GET /metrics``; None: ``/metrics`` needs no token."""
    etcd_quota_bytes: Size = 2 * 1024**3
    """etcd's ``--quota-backend-bytes`` (2 GiB unless etcd was started otherwise)."""
    output_budget_bytes: Size = 512 * 1024**2
    """Run output kept in etcd, all jobs together; the oldest runs' output goes first."""
    output_budget_per_job_bytes: Size = 64 * 1024**2
    """Run output kept in etcd for one job (0: no per-job budget)."""
    recover_nospace: bool = True
    """On a NOSPACE alarm the leader frees space, compacts, defragments and disarms."""
    max_spec_bytes: Annotated[int, BeforeValidator(parse_size), Field(gt=0, le=640 * 1024)] = (
        MAX_SPEC_BYTES
    )
    """Largest job spec (compact JSON) the API accepts. A write carries it twice (the
    job and its version in the definition history); etcd refuses requests over 1.5 MiB."""
    audit_keep_for: Annotated[Duration, Field(gt=0)] = 90 * 86400.0
    """Audit entries older than this are deleted by the leader's housekeeping."""
    audit_max_entries: Annotated[int, Field(ge=1)] = 100_000
    """At most this many audit entries are kept (the oldest go first)."""
    keep_versions: Annotated[int, Field(ge=1, le=1000)] = 20
    """Definition history: versions kept per job name."""
    signing_key_file: Path | None = None
    """Ed25519 private key (``etcron keygen``) the master signs every job it writes with."""

    def resolved_token(self) -> str | None:
        if self.token_file is not None:
            return self.token_file.read_text().strip()
        return self.token


class PolicyConfig(_Section):
    """What this worker agrees to run (docs/security.md, "Worker policy"); None: no rule."""

    commands: Annotated[list[str], BeforeValidator(_split_list)] | None = None
    """Allowed programs, absolute path globs (``*`` stays within one directory);
    a ``shell`` job's program is ``/bin/sh``."""
    users: Annotated[list[str], BeforeValidator(_split_list)] | None = None
    """Allowed run-as users (globs), the default user included; root only if listed."""
    max_timeout: Duration | None = None
    """Jobs must set a ``timeout`` of at most this."""
    max_output_limit: Size | None = None
    """A job's ``output_limit`` (or ``worker.output_limit``) must be at most this."""
    env: Annotated[list[str], BeforeValidator(_split_list)] | None = None
    """Allowed names (globs) of a job's ``env`` variables."""


class WorkerConfig(_Section):
    id: str = Field(default_factory=socket.gethostname)
    labels: Annotated[dict[str, str], BeforeValidator(_split_labels)] = {}
    capacity: int = 128
    lease_ttl: int = 6
    lease_margin: Duration = 1.0
    drain_grace: Duration = 30.0
    kill_grace: Duration = 5.0
    handoff_delay: Duration = 0.2
    claim_ahead: Duration = 0.25
    default_starting_deadline: Duration = 30.0
    max_clock_skew: Duration = 0.5
    stop_claiming_on_skew: bool = True
    clock_offset: SignedDuration = 0.0
    allow_run_as: bool = False
    default_user: str = "nobody"
    """Who runs jobs without a ``user`` when the worker is root; ``""``: the worker's own user."""
    trusted_key_files: Annotated[list[Path], BeforeValidator(_split_list)] = []
    """Ed25519 public keys; when set, only jobs signed by one of them run."""
    policy: PolicyConfig = PolicyConfig()
    output_limit: Size = 1024 * 1024
    max_output_limit: Annotated[int, BeforeValidator(parse_size), Field(gt=0)] = MAX_OUTPUT_LIMIT
    """Output kept per run is at most this, whatever a job's ``output_limit`` asks for."""
    output_flush_interval: Duration = 0.5
    output_chunk_size: Size = 64 * 1024
    output_tail: Size = 4096
    log_dir: Path | None = None
    log_file_max: Size = 10 * 1024 * 1024
    log_file_count: int = 5
    listen: Listen = "127.0.0.1:8071"
    """``/metrics``, ``/healthz``, ``/readyz``; ``""`` or ``off``: no listener."""
    cgroup_root: Path | None = None
    """cgroup v2 directory for runs with ``resources`` (None: ``/sys/fs/cgroup/etcron``
    on a cgroup v2 host, ``<hierarchy>/etcron`` on cgroup v1; workers/cgroups.py)."""


class CliConfig(_Section):
    ca_file: Path | None = None
    """CA certificate(s) the CLI trusts for an https master (else the system's)."""


class SmtpConfig(_Section):
    host: str = ""
    """Empty: no email notifications (an ``email`` rule then fails, and says so)."""
    port: Annotated[int, Field(ge=1, le=65535)] = 587
    starttls: bool = True
    username: str | None = None
    password_file: Path | None = None
    from_: Annotated[str, Field(alias="from")] = "etcron@localhost"
    timeout: Annotated[Duration, Field(gt=0)] = 10.0

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    def resolved_password(self) -> str | None:
        if self.password_file is not None:
            return self.password_file.read_text().strip()
        return None


class NotifyConfig(_Section):
    """Notifications and the did-not-run detector, both run by the leader master
    (docs/operations.md, "Notifications" and "Did-not-run detection")."""

    defaults: Annotated[list[NotifyRule], Field(max_length=MAX_RULES)] = []
    """Rules for every job without a ``notify:`` list of its own."""
    secret_file: Path | None = None
    """The HMAC-SHA256 key of webhook signatures (required for webhook rules)."""
    smtp: SmtpConfig = SmtpConfig()
    timeout: Annotated[Duration, Field(gt=0, le=300)] = 10.0
    """Every HTTP call of a delivery (connect, send, answer) within this."""
    attempts: Annotated[int, Field(ge=1, le=20)] = 5
    backoff: Annotated[Duration, Field(gt=0)] = 2.0
    """First retry after this, then doubling, at most ``max_backoff``."""
    max_backoff: Annotated[Duration, Field(gt=0)] = 60.0
    rate_per_job: Annotated[int, Field(ge=1)] = 20
    """At most this many notifications per job per ``rate_interval``; more are dropped (and counted)."""
    rate_interval: Annotated[Duration, Field(gt=0)] = 60.0
    queue_size: Annotated[int, Field(ge=1, le=100_000)] = 1000
    concurrency: Annotated[int, Field(ge=1, le=64)] = 4
    max_age: Annotated[Duration, Field(gt=0)] = 3600.0
    """Run records older than this seen at start-up (or after a compaction) are not notified."""
    keep: Annotated[int, Field(ge=1)] = 200
    """Delivery records kept per job (and none older than ``master.keep_for``)."""
    output_tail: Annotated[Size, Field(ge=0, le=64 * 1024)] = 2048
    """Bytes of the run's output tail sent in webhooks and emails."""
    did_not_run: bool = True
    """The did-not-run detector (a ``missed`` record for every tick that got none)."""
    did_not_run_grace: Annotated[Duration, Field(ge=0)] = 30.0
    """A tick with no record by ``tick + starting_deadline + this`` did not run."""
    did_not_run_interval: Annotated[Duration, Field(gt=0)] = 10.0
    did_not_run_max_ticks: Annotated[int, Field(ge=2, le=1000)] = 100
    """At most this many ticks of one job recorded per sweep (the oldest first)."""

    def resolved_secret(self) -> bytes | None:
        if self.secret_file is None:
            return None
        return self.secret_file.read_bytes().strip()


class LogConfig(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"


class Config(_Section):
    etcd: EtcdConfig = EtcdConfig()
    master: MasterConfig = MasterConfig()
    worker: WorkerConfig = WorkerConfig()
    cli: CliConfig = CliConfig()
    log: LogConfig = LogConfig()
    notify: NotifyConfig = NotifyConfig()


class ConfigError(Exception):
    """A configuration file or variable is invalid; the message names it."""


def _env_overrides(environ: Mapping[str, str]) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for name, value in environ.items():
        if not name.startswith("ETCRON_") or "__" not in name:
            continue
        section, _, field = name[len("ETCRON_") :].lower().partition("__")
        out.setdefault(section, {})[field] = value
    return out


def load_config(path: str | Path | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Build the configuration from ``path`` (optional) and the environment."""
    env = os.environ if environ is None else environ
    if path is None and env.get("ETCRON_CONFIG"):
        path = env["ETCRON_CONFIG"]
    data: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        source = str(path)
        try:
            loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read config: {exc.strerror}") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(
                f"{path}: expected a mapping of sections (etcd, master, worker, cli, log)"
            )
        data = loaded
    for section, fields in _env_overrides(env).items():
        current = data.setdefault(section, {})
        if not isinstance(current, dict):
            raise ConfigError(f"{source}: section {section!r} must be a mapping")
        current.update(fields)
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"])
            msg = str(err["msg"]).removeprefix("Value error, ")
            lines.append(f"{source}: {where}: {msg}")
        raise ConfigError("\n".join(lines)) from exc

"""API tokens: hashed entries with scopes, the tokens file, the start-up refusals,
the scope table, and ``etcron token create``."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from scheduler.config import MasterConfig
from scheduler.master.access import MasterConfigError, master_tokens, tls_context
from scheduler.master.principal import Principal, required_scope
from scheduler.master.tokens import TokenEntry, Tokens, digest, new_token

ETCRON = str(Path(sys.executable).with_name("etcron"))
ROOT = Path(__file__).resolve().parents[2]


def _entry(name: str, scope: str, token: str) -> TokenEntry:
    return TokenEntry(name, scope, hashlib.sha256(token.encode()).digest())


def _private(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


def test_check_finds_the_named_entry_and_its_scope() -> None:
    reader, admin = new_token(), new_token()
    tokens = Tokens(entries=[_entry("dash", "read", reader), _entry("ops", "admin", admin)])
    assert tokens.check(reader.encode(), "10.0.0.1:5") == Principal("dash", "read", "10.0.0.1:5")
    assert tokens.check(admin.encode()) == Principal("ops", "admin")
    assert tokens.check(admin.encode()[:-1]) is None
    assert tokens.check(b"") is None
    assert tokens.check(digest(admin.encode())) is None  # the digest is not a token


def test_plain_token_is_an_admin_named_token_and_is_not_kept() -> None:
    plain = "p" * 20
    tokens = Tokens(plain, entries=[_entry("ci", "operate", "c" * 20)])
    assert tokens.check(plain.encode()) == Principal("token", "admin")
    assert tokens.names == ["ci", "token"]
    assert plain not in repr(vars(tokens))


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ([_entry("a", "read", "x" * 20), _entry("a", "admin", "y" * 20)], "'a' is used more"),
        ([_entry("a", "read", "x" * 20), _entry("b", "admin", "x" * 20)], "same sha256"),
        ([], "at least one token"),
    ],
)
def test_bad_token_sets_are_refused(entries: list[TokenEntry], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Tokens(entries=entries)


@pytest.mark.parametrize(
    ("method", "path", "scope"),
    [
        ("GET", "/v1/jobs", "read"),
        ("HEAD", "/v1/jobs/a/runs", "read"),
        ("GET", "/openapi.json", "read"),
        ("POST", "/v1/jobs/a/run", "operate"),
        ("POST", "/v1/jobs/a/kill", "operate"),
        ("POST", "/v1/jobs/a/suspend", "operate"),
        ("POST", "/v1/jobs/a/resume", "operate"),
        ("PUT", "/v1/jobs/a/run", "admin"),
        ("POST", "/v1/jobs/a/b/run", "admin"),
        ("POST", "/v1/apply", "admin"),
        ("PUT", "/v1/jobs/a", "admin"),
        ("DELETE", "/v1/jobs/a", "admin"),
        ("POST", "/v1/anything-new", "admin"),
    ],
)
def test_required_scope_table(method: str, path: str, scope: str) -> None:
    assert required_scope(method, path) == scope


# the tokens file and the start-up refusals -------------------------------------------


def test_tokens_file_loads_hashed_entries(tmp_path: Path) -> None:
    token = new_token()
    f = _private(tmp_path / "tokens.yaml", _entry("ci", "operate", token).line() + "\n")
    tokens = master_tokens(MasterConfig(tokens_file=f))
    assert tokens.check(token.encode()) == Principal("ci", "operate")
    assert token not in f.read_text()


def test_tokens_file_as_json(tmp_path: Path) -> None:
    token = new_token()
    hexd = hashlib.sha256(token.encode()).hexdigest()
    f = _private(tmp_path / "t.json", f'[{{"name": "j", "scope": "read", "sha256": "{hexd}"}}]')
    assert master_tokens(MasterConfig(tokens_file=f)).check(token.encode()) == Principal(
        "j", "read"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{name: a}", "expected a list of entries"),
        ("- just-a-string", "entry 1: expected a mapping"),
        ("- {name: A, scope: read, sha256: " + "0" * 64 + "}", "entry 1: name: expected"),
        ("- {name: a, scope: root, sha256: " + "0" * 64 + "}", r"entry 1 \(a\): scope: expected"),
        ("- {name: a, scope: read, sha256: abc}", r"entry 1 \(a\): sha256: expected 64 hex"),
        ("- {name: a, scope: read, sha256: " + "0" * 64 + ", token: x}", "unknown field 'token'"),
        ("- [unclosed", "not valid YAML"),
        ("", "needs an API token"),
    ],
)
def test_bad_tokens_file_names_the_setting_and_entry(
    tmp_path: Path, text: str, message: str
) -> None:
    f = _private(tmp_path / "tokens.yaml", text)
    with pytest.raises(MasterConfigError, match=message) as info:
        master_tokens(MasterConfig(tokens_file=f))
    assert "master.tokens_file" in str(info.value) or "needs an API token" in str(info.value)


def test_no_token_at_all_is_refused() -> None:
    with pytest.raises(MasterConfigError, match=r"needs an API token: set master\.tokens_file"):
        master_tokens(MasterConfig())


@pytest.mark.parametrize("length", [1, 15])
def test_short_token_is_refused_unless_allowed(length: int) -> None:
    with pytest.raises(MasterConfigError, match=f"master.token: the token is {length} bytes"):
        master_tokens(MasterConfig(token="t" * length))
    allowed = master_tokens(MasterConfig(token="t" * length, allow_insecure_tokens=True))
    assert allowed.check(b"t" * length) == Principal("token", "admin")
    assert master_tokens(MasterConfig(token="t" * 16)).check(b"t" * 16) is not None


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620])
def test_token_files_others_can_read_are_refused_unless_allowed(tmp_path: Path, mode: int) -> None:
    token = new_token()
    f = _private(tmp_path / "token", token + "\n", mode)
    with pytest.raises(MasterConfigError, match=rf"master.token_file {f}: mode {oct(mode)}"):
        master_tokens(MasterConfig(token_file=f))
    many = _private(tmp_path / "tokens.yaml", _entry("a", "read", token).line(), mode)
    with pytest.raises(MasterConfigError, match=rf"master.tokens_file {many}: mode"):
        master_tokens(MasterConfig(tokens_file=many))
    loose = MasterConfig(token_file=f, allow_insecure_tokens=True)
    assert master_tokens(loose).check(token.encode()) is not None
    f.chmod(0o600)
    assert master_tokens(MasterConfig(token_file=f)).check(token.encode()) is not None


def test_missing_token_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(MasterConfigError, match=r"master\.token_file .*nope: cannot read"):
        master_tokens(MasterConfig(token_file=tmp_path / "nope"))


def test_tls_settings_go_together(tmp_path: Path) -> None:
    assert tls_context(MasterConfig()) is None
    with pytest.raises(MasterConfigError, match="go together"):
        tls_context(MasterConfig(tls_key_file=tmp_path / "k"))
    with pytest.raises(MasterConfigError, match=r"master.tls_cert_file .*/c: cannot read"):
        tls_context(MasterConfig(tls_cert_file=tmp_path / "c", tls_key_file=tmp_path / "k"))
    (tmp_path / "c").write_text("not pem")
    (tmp_path / "k").write_text("not pem")
    with pytest.raises(MasterConfigError, match="not a PEM certificate"):
        tls_context(MasterConfig(tls_cert_file=tmp_path / "c", tls_key_file=tmp_path / "k"))


# etcron token create --------------------------------------------------------------------


def _create(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCRON_")}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run(
        [ETCRON, "token", "create", *args], capture_output=True, text=True, env=env, timeout=60
    )


def test_token_create_prints_the_token_once_and_its_entry(tmp_path: Path) -> None:
    r = _create("--name", "ci", "--scope", "operate")
    assert r.returncode == 0, r.stderr
    token, line = r.stdout.splitlines()
    assert len(token.encode()) >= 32
    assert line == _entry("ci", "operate", token).line()
    assert "shown once" in r.stderr and token not in r.stderr

    f = tmp_path / "tokens.yaml"
    r = _create("--name", "dash", "--scope", "read", "--append", str(f))
    assert r.returncode == 0, r.stderr
    dash = r.stdout.splitlines()[0]
    r = _create("--name", "ops", "--scope", "admin", "--append", str(f))
    ops = r.stdout.splitlines()[0]
    assert os.stat(f).st_mode & 0o777 == 0o600
    assert dash not in f.read_text() and ops not in f.read_text()
    tokens = master_tokens(MasterConfig(tokens_file=f))
    assert tokens.check(dash.encode()) == Principal("dash", "read")
    assert tokens.check(ops.encode()) == Principal("ops", "admin")

    before = f.read_text()
    r = _create("--name", "ops", "--scope", "read", "--append", str(f))
    assert r.returncode == 2 and "already there" in r.stderr and r.stdout == ""
    assert f.read_text() == before


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--name", "CI", "--scope", "read"], "--name 'CI': expected"),
        (["--name", "ci", "--scope", "root"], "--scope 'root': expected one of read, operate"),
    ],
)
def test_token_create_refuses_bad_names_and_scopes(args: list[str], message: str) -> None:
    r = _create(*args)
    assert r.returncode == 2 and message in r.stderr and r.stdout == ""

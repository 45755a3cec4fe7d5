"""Job signing: the envelope, keygen, the signer's and the verifier's rules."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from scheduler.model import JobSpec
from scheduler.signing import (
    KeyFileError,
    Refusal,
    Signer,
    Verifier,
    keygen,
    spec_bytes,
    unwrap,
)

SPEC = JobSpec(name="backup", schedule="@every 1m", command=["/bin/true"]).to_json()


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Signer, Verifier, Path]:
    key, pub, _ = keygen(tmp_path / "k")
    return Signer.from_file(key), Verifier.from_files([pub]), pub


def test_keygen_writes_a_private_key_only_the_owner_reads(tmp_path: Path) -> None:
    key, pub, kid = keygen(tmp_path / "new")
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(pub.stat().st_mode) == 0o644
    assert Signer.from_file(key).key_id == kid
    with pytest.raises(FileExistsError):
        keygen(tmp_path / "new")
    assert Signer.from_file(key).key_id == kid  # not overwritten


def test_the_signature_covers_the_exact_stored_spec_bytes(
    keys: tuple[Signer, Verifier, Path],
) -> None:
    signer, verifier, _ = keys
    value = signer.seal(SPEC)
    env = unwrap(value)
    assert env.spec == SPEC and spec_bytes(value) == SPEC
    assert env.key_id == signer.key_id
    assert verifier.check(env) is None
    tampered = json.loads(value)
    tampered["spec"] = tampered["spec"].replace("/bin/true", "/bin/sh")
    assert verifier.check(unwrap(json.dumps(tampered).encode())) is Refusal.BAD_SIGNATURE


def test_unsigned_and_untrusted_values_are_refused(
    keys: tuple[Signer, Verifier, Path], tmp_path: Path
) -> None:
    _, verifier, _ = keys
    assert unwrap(SPEC).sig is None  # a value written before signing: still readable
    assert verifier.check(unwrap(SPEC)) is Refusal.UNSIGNED
    other, _, _ = keygen(tmp_path / "other")
    foreign = Signer.from_file(other).seal(SPEC)
    assert verifier.check(unwrap(foreign)) is Refusal.UNTRUSTED_KEY
    # a forged key id naming the trusted key does not help
    forged = json.loads(foreign)
    forged["key_id"] = next(iter(verifier.keys))
    assert verifier.check(unwrap(json.dumps(forged).encode())) is Refusal.BAD_SIGNATURE


@pytest.mark.parametrize(
    "value",
    [
        b'{"spec":',
        b'{"spec":"{}","sig":"@@@","key_id":"x"}',
        b'{"spec":"{}","sig":"AA==","key_id":"x","extra":1}',
        b'{"spec":{},"sig":"AA==","key_id":"x"}',
    ],
)
def test_a_malformed_envelope_is_a_value_error(value: bytes) -> None:
    with pytest.raises(ValueError, match="invalid signed job value"):
        unwrap(value)


def test_a_signing_key_readable_by_others_is_refused(tmp_path: Path) -> None:
    key, _, _ = keygen(tmp_path / "k")
    key.chmod(0o640)
    with pytest.raises(KeyFileError, match="chmod 600"):
        Signer.from_file(key)
    with pytest.raises(KeyFileError, match="not a PEM signing key"):
        key.chmod(0o600)
        key.write_bytes(b"junk")
        Signer.from_file(key)
    with pytest.raises(KeyFileError, match="cannot read trusted key"):
        Verifier.from_files([tmp_path / "missing.pub"])
    with pytest.raises(KeyFileError, match="not a PEM trusted key"):
        Verifier.from_files([key])

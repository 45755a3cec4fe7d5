"""shellcheck over the shell scripts people run: deploy/**/*.sh, scripts/, .ci/run.

Skipped where shellcheck is not installed (.ci/run installs it).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SHELLCHECK = shutil.which("shellcheck")


def _is_shell(path: Path) -> bool:
    if path.suffix == ".sh":
        return True
    with path.open("rb") as f:
        first = f.readline()
    return first.startswith(b"#!") and (b"bash" in first or first.rstrip().endswith(b"/sh"))


def _scripts() -> list[Path]:
    found = sorted((ROOT / "deploy").rglob("*.sh"))
    found += sorted(p for p in (ROOT / "scripts").iterdir() if p.is_file() and _is_shell(p))
    found.append(ROOT / ".ci/run")
    return found


def test_the_script_list_covers_the_deploy_scripts() -> None:
    names = {str(p.relative_to(ROOT)) for p in _scripts()}
    assert {
        "deploy/install.sh", "deploy/etcd/make-certs.sh", "deploy/etcd/setup-auth.sh",
        "scripts/bootstrap", ".ci/run",
    } <= names  # fmt: skip


@pytest.mark.skipif(SHELLCHECK is None, reason="shellcheck not installed (Debian: shellcheck)")
@pytest.mark.parametrize("script", _scripts(), ids=lambda p: str(p.relative_to(ROOT)))
def test_shellcheck_finds_nothing(script: Path) -> None:
    assert SHELLCHECK is not None
    done = subprocess.run(
        [SHELLCHECK, "--external-sources", "--format=gcc", str(script)],
        cwd=script.parent, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr

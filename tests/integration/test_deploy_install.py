"""deploy/install.sh, for real, in a throwaway root (``--root DIR``).

The script creates the user in DIR/etc/passwd (``useradd --prefix``), a real
virtualenv from a wheel built from this checkout (its dependencies come from
the package index, as on a host), the units and the configuration skeleton.
It runs twice (the second run must change nothing: same paths, modes, owners,
contents and mtimes), the units pass ``systemd-analyze verify``, then
``--uninstall --purge`` leaves DIR as it found it. The root is removed at the end.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
INSTALL = ROOT / "deploy/install.sh"
SEEDED = ("passwd", "group", "shadow", "gshadow", "login.defs")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(600),
    pytest.mark.skipif(os.geteuid() != 0, reason="install.sh runs as root"),
    pytest.mark.skipif(shutil.which("useradd") is None, reason="no useradd"),
]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(ROOT)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    [whl] = out.glob("etcron-*.whl")
    return whl


@pytest.fixture
def fakeroot(tmp_path: Path) -> Iterator[Path]:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    for name in SEEDED:
        if Path("/etc", name).exists():
            shutil.copy2(Path("/etc", name), root / "etc" / name)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)  # the virtualenv is ~100 MB


def _install(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        ["bash", str(INSTALL), "--root", str(root), "--python", sys.executable, *args],
        capture_output=True, text=True, timeout=500,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def _snapshot(root: Path) -> dict[str, tuple[object, ...]]:
    snap: dict[str, tuple[object, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath, name)
            st = p.lstat()
            digest = ""
            if stat.S_ISREG(st.st_mode):
                digest = hashlib.sha256(p.read_bytes()).hexdigest()
            snap[str(p.relative_to(root))] = (
                st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns, digest,
            )  # fmt: skip
    return snap


def _ids(root: Path) -> tuple[int, int]:
    [line] = [x for x in (root / "etc/passwd").read_text().splitlines() if x.startswith("etcron:")]
    fields = line.split(":")
    return int(fields[2]), int(fields[3])


def _mode_owner(p: Path) -> tuple[int, int, int]:
    st = p.stat()
    return stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid


def _verify_units(root: Path, tmp: Path) -> None:
    """``systemd-analyze verify`` on the installed units (ExecStart pointed into the root)."""
    units = tmp / "units"
    shutil.copytree(root / "etc/systemd/system", units)
    for unit in units.glob("*.service"):
        unit.write_text(unit.read_text().replace("ExecStart=/opt/", f"ExecStart={root}/opt/"))
    done = subprocess.run(
        ["systemd-analyze", "verify", "etcron-master.service", "etcron-worker.service"],
        env={**os.environ, "SYSTEMD_UNIT_PATH": f"{units}:"},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    # an unknown or misspelt setting is only a warning on stderr: fail on any output
    assert done.returncode == 0 and done.stderr == "", done.stderr
    # systemd's own exposure score (0 best, 10 worst; the old units scored 8.5
    # and 8.7): the worker with the run-as drop-in scores 2.4, the master 1.4
    score = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", "--threshold=25",
         "etcron-master.service", "etcron-worker.service"],
        env={**os.environ, "SYSTEMD_UNIT_PATH": f"{units}:"},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert score.returncode == 0, score.stdout[-2000:] + score.stderr


def test_install_twice_changes_nothing_then_uninstall_restores_the_root(
    fakeroot: Path, wheel: Path, tmp_path: Path
) -> None:
    before = {name: (fakeroot / "etc" / name).read_bytes() for name in SEEDED}
    first = _install(fakeroot, "--wheel", str(wheel), "--run-as")
    assert "created user etcron" in first.stdout
    uid, gid = _ids(fakeroot)
    assert uid != 0 and gid != 0

    etc = fakeroot / "etc/etcron"
    assert _mode_owner(etc) == (0o750, 0, gid)
    assert _mode_owner(etc / "config.yaml") == (0o640, 0, gid)
    assert _mode_owner(etc / "credentials") == (0o700, 0, 0)
    units = fakeroot / "etc/systemd/system"
    for unit in ("etcron-master.service", "etcron-worker.service"):
        assert (units / unit).read_bytes() == (ROOT / "deploy/systemd" / unit).read_bytes()
        assert _mode_owner(units / unit) == (0o644, 0, 0)
    assert (units / "etcron-worker.service.d/run-as.conf").is_file()
    venv = fakeroot / "opt/etcron/venv"
    assert _mode_owner(venv / "bin/etcron")[1:] == (0, 0)  # the service user cannot change its code
    version = subprocess.run(
        [str(venv / "bin/etcron"), "version"], capture_output=True, text=True, timeout=60
    )
    assert version.returncode == 0 and version.stdout.split()[-1] == _project_version()

    snap = _snapshot(fakeroot)
    second = _install(fakeroot, "--wheel", str(wheel), "--run-as")
    assert second.stdout.strip().splitlines()[-1] == "install.sh: nothing to change"
    assert _snapshot(fakeroot) == snap

    if shutil.which("systemd-analyze"):
        _verify_units(fakeroot, tmp_path)

    # a secret left readable is tightened, an edited config is kept
    (etc / "credentials/api-token").write_text("t" * 32)
    (etc / "credentials/api-token").chmod(0o644)
    (etc / "config.yaml").write_text("etcd: {endpoints: ['10.0.0.1:2379']}\n")
    _install(fakeroot, "--wheel", str(wheel))
    assert _mode_owner(etc / "credentials/api-token") == (0o600, 0, 0)
    assert (etc / "config.yaml").read_text() == "etcd: {endpoints: ['10.0.0.1:2379']}\n"

    kept = _install(fakeroot, "--uninstall")
    assert "removed user etcron" in kept.stdout
    assert (etc / "config.yaml").exists(), "uninstall without --purge keeps configuration"
    assert not (fakeroot / "opt/etcron").exists()
    assert not list(units.rglob("etcron*"))
    _install(fakeroot, "--uninstall", "--purge")
    assert not etc.exists()
    for name, content in before.items():
        assert (fakeroot / "etc" / name).read_bytes() == content, name


def test_install_refuses_unknown_arguments(fakeroot: Path) -> None:
    done = subprocess.run(
        ["bash", str(INSTALL), "--root", str(fakeroot), "--frobnicate"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 2 and "unknown argument: --frobnicate" in done.stderr
    assert sorted(p.name for p in (fakeroot / "etc").iterdir()) == sorted(
        n for n in SEEDED if Path("/etc", n).exists()
    )


def _project_version() -> str:
    from scheduler import __version__

    return __version__

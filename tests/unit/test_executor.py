"""The executor and the spawner: real child processes, no etcd."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest

from scheduler.clock import Clock
from tests.support import wait_for
from workers.executor import Child, OutputSink, StopReason
from workers.launch import Launcher
from workers.spawn import as_user, executable, seal_inherited_fds

ENV = {"PATH": "/usr/bin:/bin"}


def child(argv: list[str], sink: OutputSink | None = None, **kw: object) -> Child:
    opts: dict[str, object] = {"env": ENV, "cwd": None, "user": None, "kill_grace": 0.5}
    opts.update(kw)
    return Child(argv, sink=sink or OutputSink(), **opts)  # type: ignore[arg-type]


class Streams(OutputSink):
    def __init__(self) -> None:
        super().__init__()
        self.by_stream: dict[str, bytearray] = {"stdout": bytearray(), "stderr": bytearray()}

    def write(self, stream: str, data: bytes) -> None:
        super().write(stream, data)
        self.by_stream[stream] += data


async def test_exit_code_and_both_streams_apart() -> None:
    sink = Streams()
    out = await child(["/bin/sh", "-c", "echo out; echo err >&2; exit 3"], sink).run(5)
    assert (out.exit_code, out.signal, out.stopped) == (3, None, None)
    assert sink.by_stream == {"stdout": bytearray(b"out\n"), "stderr": bytearray(b"err\n")}


async def test_large_output_never_blocks_the_child() -> None:
    sink = OutputSink()
    out = await child(["/bin/sh", "-c", "head -c 3000000 /dev/zero"], sink).run(10)
    assert out.ok
    assert sink.total == 3_000_000


async def test_environment_is_exactly_what_was_given() -> None:
    sink = Streams()
    env = {"PATH": "/usr/bin:/bin", "ETCRON_JOB": "j1"}
    out = await child(["env"], sink, env=env).run(5)
    assert out.ok
    assert sorted(sink.by_stream["stdout"].decode().splitlines()) == [
        "ETCRON_JOB=j1",
        "PATH=/usr/bin:/bin",
    ]


async def test_only_stdio_is_inherited_and_signals_are_reset(tmp_path: Path) -> None:
    leak = os.open(tmp_path / "f", os.O_CREAT | os.O_WRONLY)
    os.set_inheritable(leak, True)  # as a shell or service manager may pass one
    try:
        assert seal_inherited_fds() >= 1  # what the worker does at start
        sink = Streams()
        script = "ls /proc/$$/fd; echo --; ps -o sid=,pgid= -p $$"
        out = await child(["/bin/sh", "-c", script], sink).run(10)
        # the signal state of the spawned process itself, not of a shell that
        # blocks signals for a moment while it forks and waits
        # (a signal blocked in the worker must not stay blocked in the job)
        sigs = Streams()
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
        try:
            sig_child = child(["grep", "-E", "^Sig(Blk|Ign)", "/proc/self/status"], sigs)
            sig_child.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        sig_out = await sig_child.run(10)
    finally:
        os.close(leak)
    assert out.ok, sink.tail
    assert sig_out.ok, sigs.tail
    lines = sink.by_stream["stdout"].decode().split("\n")
    fds = sorted(int(x) for x in lines[: lines.index("--")])
    assert fds == [0, 1, 2] or fds == [0, 1, 2, 10]  # dash may keep one fd for itself
    sid, pgid = lines[-2].split()
    assert sid == pgid  # its own session, so its own group
    status = dict(line.split(":\t") for line in sigs.by_stream["stdout"].decode().splitlines())
    assert int(status["SigBlk"], 16) == 0
    assert int(status["SigIgn"], 16) & (1 << (signal.SIGPIPE - 1)) == 0


async def test_stdin_is_devnull() -> None:
    sink = Streams()
    out = await child(["/bin/sh", "-c", "cat; echo done"], sink).run(5)
    assert out.ok and sink.by_stream["stdout"] == b"done\n"


async def test_missing_program_and_not_executable(tmp_path: Path) -> None:
    sink = Streams()
    c = child(["no-such-program-etcron"], sink)
    assert not c.start() and c.started  # tried once (as the launcher does), then run
    out = await c.run(5)
    assert out.exit_code == 127 and "cannot start" in out.error
    assert sink.by_stream["stderr"].count(b"cannot start") == 1
    script = tmp_path / "x.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    out = await child([str(script)]).run(5)
    assert out.exit_code == 126


def test_bare_names_are_found_in_the_childs_path(tmp_path: Path) -> None:
    prog = tmp_path / "myjob"
    prog.write_text("#!/bin/sh\n")
    prog.chmod(0o755)
    assert executable("myjob", {"PATH": f"/nonexistent:{tmp_path}"}) == str(prog)
    assert executable("./rel", {}) == "./rel"
    with pytest.raises(FileNotFoundError):
        executable("myjob", {"PATH": "/usr/bin"})


async def test_workdir_uses_the_fallback_spawner(tmp_path: Path) -> None:
    sink = Streams()
    out = await child(["pwd"], sink, cwd=str(tmp_path)).run(5)
    assert out.ok
    assert sink.by_stream["stdout"].decode().strip() == str(tmp_path)
    out = await child(["pwd"], cwd=str(tmp_path / "missing")).run(5)
    assert out.exit_code == 127


async def test_timeout_terms_then_kills_the_whole_group() -> None:
    sink = Streams()
    # the shell ignores TERM; its grandchild sleeps: both must be gone
    c = child(["/bin/sh", "-c", "trap '' TERM; sleep 30 & echo $!; wait"], sink, kill_grace=0.2)
    out = await c.run(0.3)
    assert out.stopped is StopReason.TIMEOUT and out.signal == signal.SIGKILL
    grandchild = int(sink.by_stream["stdout"].decode().split()[0])
    await wait_for(lambda: _dead(grandchild), 5)


def _dead(pid: int) -> bool:
    """Gone, or a zombie waiting for its new parent to reap it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


async def test_a_daemon_holding_stdout_does_not_hold_the_run() -> None:
    c = child(["/bin/sh", "-c", "sleep 30 & exit 0"])
    out = await asyncio.wait_for(c.run(None), 10)
    assert out.ok
    assert c.pid is not None
    os.killpg(c.pid, signal.SIGKILL)


async def test_stop_before_start_and_stop_now() -> None:
    c = child(["/bin/sh", "-c", "sleep 30"])
    run = asyncio.create_task(c.run(None))
    await wait_for(lambda: c.pid is not None, 5)
    c.stop(StopReason.KILLED, now=True)
    out = await asyncio.wait_for(run, 5)
    assert out.stopped is StopReason.KILLED and out.signal == signal.SIGKILL


async def test_launcher_starts_a_batch_at_the_instant_and_drops_cancelled() -> None:
    clock = Clock()
    launcher = Launcher(clock)
    at_ms = int((clock.time() + 0.2) * 1000)
    started: list[tuple[str, float]] = []

    def start(name: str) -> None:
        started.append((name, clock.time()))

    first = asyncio.create_task(launcher.at(at_ms, lambda: start("a")))
    dropped = asyncio.create_task(launcher.at(at_ms, lambda: start("dropped")))
    second = asyncio.create_task(launcher.at(at_ms, lambda: start("b")))
    await asyncio.sleep(0)
    dropped.cancel()
    await asyncio.wait_for(asyncio.gather(first, second), 5)
    assert [n for n, _ in started] == ["a", "b"]
    assert all(t >= at_ms / 1000 for _, t in started)
    await launcher.at(at_ms, lambda: start("late"))  # a passed instant starts at once
    assert started[-1][0] == "late"


def _root_group_file(where: str) -> str:
    os.chmod(where, 0o755)
    secret = os.path.join(where, "root-group-only")
    with open(secret, "w") as f:
        f.write("secret\n")
    os.chown(secret, 0, 0)
    os.chmod(secret, 0o040)  # readable by the group root only
    return secret


@pytest.mark.skipif(os.geteuid() != 0, reason="run-as needs root")
@pytest.mark.parametrize("cwd", [None, "/"], ids=["posix_spawn+setpriv", "popen"])
async def test_run_as_takes_the_users_groups_not_roots(cwd: str | None) -> None:
    """A job run as ``nobody`` gets nobody's gid and supplementary groups: not
    root's group, so a root-group-only file stays closed to it. Both ways of
    starting it (``workers.spawn``): through ``setpriv``, and ``Popen`` (a workdir)."""
    import grp
    import pwd
    import shutil
    import tempfile

    pw = pwd.getpwnam("nobody")
    expected = sorted(set(os.getgrouplist("nobody", pw.pw_gid)))
    where = tempfile.mkdtemp(dir="/tmp")  # a directory nobody may enter
    secret = _root_group_file(where)
    sink = Streams()
    script = f"id -u; id -g; id -G; cat {secret} || echo refused"
    try:
        out = await child(["/bin/sh", "-c", script], sink, user="nobody", cwd=cwd).run(5)
    finally:
        shutil.rmtree(where)
    assert out.ok, sink.by_stream
    uid, gid, groups, last = sink.by_stream["stdout"].decode().split("\n")[:4]
    assert int(uid) == pw.pw_uid and int(gid) == pw.pw_gid
    assert sorted(int(g) for g in groups.split()) == expected
    assert 0 not in {int(g) for g in groups.split()}, grp.getgrgid(0).gr_name
    assert last == "refused"


@pytest.mark.skipif(os.geteuid() != 0, reason="run-as needs root")
async def test_run_as_keeps_no_capability_and_a_missing_program_fails_at_spawn() -> None:
    """Through ``setpriv`` the child is nobody with no capability left; a missing
    program is a FileNotFoundError from the spawn, as without a user."""
    sink = Streams()
    out = await child(["grep", "^Cap[PE]", "/proc/self/status"], sink, user="nobody").run(5)
    assert out.ok, sink.by_stream
    caps = sink.by_stream["stdout"].decode().split()
    assert caps == ["CapPrm:", "0000000000000000", "CapEff:", "0000000000000000"], caps
    with pytest.raises(FileNotFoundError):
        as_user(["no-such-program-x"], ENV, "nobody", "/usr/bin/setpriv")
    with pytest.raises(FileNotFoundError):
        as_user(["/no/such/program"], ENV, "nobody", "/usr/bin/setpriv")

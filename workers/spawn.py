"""Start a job's process: its own session, stdin from /dev/null, two output pipes.

Rules:

- The child runs in a new session, so its process group id is its pid; a stop
  signals the whole group.
- Only fds 0, 1 and 2 reach the child: the worker's own fds are close-on-exec
  (Python's default, and ours for the pipes), and :func:`seal_inherited_fds`
  makes those it inherited so once at start (``Popen`` also closes the rest).
- Signals are as a fresh process expects them: an empty signal mask and SIGPIPE
  and SIGXFSZ at their default action (Python ignores SIGPIPE).
- A bare command name is looked up in the ``PATH`` of the child's environment,
  as :class:`subprocess.Popen` does.
- The common case (no ``workdir``) uses ``posix_spawn``, which the C library
  implements with ``vfork``: the cost does not grow with the worker's memory
  and nothing in Python runs between fork and exec. A run-as ``user`` (on a
  root worker, every job: ``worker.default_user``) is started the same way
  through util-linux's ``setpriv``, which sets the user's uid, gid and
  supplementary groups (never the worker's; capabilities go with uid 0) and
  execs the program by its resolved path: one more small exec instead of a
  ``fork`` of the whole worker. A working directory, a host without
  ``setpriv``, or a worker that is not root (``Popen`` then reports the
  refusal as a :class:`PermissionError`) need steps before exec that
  ``posix_spawn`` cannot take here, so those use :class:`subprocess.Popen`; the
  returned :class:`Spawned` keeps the ``Popen`` so that it alone reaps the child.
- Errors are :class:`OSError` from the exec (``FileNotFoundError`` for a missing
  program, ``PermissionError`` for one that may not run) or :class:`KeyError`
  for an unknown user; nothing is left open when one is raised. Through
  ``setpriv``, a program that exists but that the user may not execute fails
  the run instead (exit 126 or 127, ``setpriv``'s message in its output).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass

_DEFAULT_SIGNALS = (signal.SIGPIPE, signal.SIGXFSZ)
SETPRIV = shutil.which("setpriv", path="/usr/bin:/bin")
"""util-linux's ``setpriv`` (None: run-as jobs start through ``Popen``)."""


@dataclass
class Spawned:
    pid: int
    stdout: int
    """Read end of the child's stdout pipe (non-blocking, owned by the caller)."""
    stderr: int
    popen: subprocess.Popen[bytes] | None = None

    def reap(self) -> int:
        """The exit status (negative: killed by that signal). Call once the child has exited."""
        if self.popen is not None:
            return self.popen.wait()
        _, status = os.waitpid(self.pid, 0)
        return os.waitstatus_to_exitcode(status)


def executable(name: str, env: Mapping[str, str]) -> str:
    """``name`` itself if it has a slash, else the first match in the environment's PATH."""
    if "/" in name:
        return name
    for directory in env.get("PATH", os.defpath).split(os.pathsep):
        path = os.path.join(directory or ".", name)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    raise FileNotFoundError(2, "No such file or directory", name)


def seal_inherited_fds() -> int:
    """Mark every open fd above 2 close-on-exec; how many were not. The worker
    calls this once at start for fds it was given (by a shell, a service manager);
    every fd opened later is close-on-exec by Python's default."""
    sealed = 0
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd > 2:
            with contextlib.suppress(OSError):  # the fd listdir itself used is gone
                if os.get_inheritable(fd):
                    os.set_inheritable(fd, False)
                    sealed += 1
    return sealed


def use_pidfd_child_watcher() -> None:
    """Python 3.11's default child watcher starts a thread per child; a pidfd
    watcher costs nothing per child (it is the default from Python 3.12 on)."""
    if sys.version_info >= (3, 12) or not hasattr(asyncio, "PidfdChildWatcher"):
        return
    current = asyncio.get_child_watcher()
    if isinstance(current, asyncio.PidfdChildWatcher):
        return
    try:
        watcher = asyncio.PidfdChildWatcher()
        watcher.attach_loop(asyncio.get_running_loop())
    except (OSError, RuntimeError):
        return  # no pidfd_open (old kernel): keep the default
    asyncio.set_child_watcher(watcher)


def as_user(argv: list[str], env: Mapping[str, str], user: str, setpriv: str) -> list[str]:
    """``argv`` run through ``setpriv`` as ``user`` with the user's own gid and groups.

    The program is resolved here (a bare name in the environment's PATH, as
    :func:`executable`); a missing one raises :class:`FileNotFoundError` now,
    as an exec would.
    """
    pw = pwd.getpwnam(user)
    groups = ",".join(str(g) for g in os.getgrouplist(pw.pw_name, pw.pw_gid))
    program = executable(argv[0], env)
    if not os.path.isfile(program):
        raise FileNotFoundError(2, "No such file or directory", program)
    ids = [f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", f"--groups={groups}"]
    return [setpriv, *ids, "--", program, *argv[1:]]


def spawn(
    argv: list[str], env: Mapping[str, str], *, cwd: str | None = None, user: str | None = None
) -> Spawned:
    out_r, out_w = os.pipe2(os.O_CLOEXEC)
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    popen: subprocess.Popen[bytes] | None = None
    try:
        if cwd is None and (user is None or (SETPRIV is not None and os.geteuid() == 0)):
            if user is not None:
                assert SETPRIV is not None
                argv = as_user(argv, env, user, SETPRIV)
            pid = os.posix_spawn(
                executable(argv[0], env),
                argv,
                env,
                file_actions=[
                    (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                    (os.POSIX_SPAWN_DUP2, out_w, 1),
                    (os.POSIX_SPAWN_DUP2, err_w, 2),
                ],
                setsid=True,
                setsigmask=(),
                setsigdef=_DEFAULT_SIGNALS,
            )
        else:
            gid: int | None = None
            extra: list[int] | None = None
            if user is not None:
                # the user's own group and supplementary groups, never the worker's
                # (root's gid 0 would stay otherwise)
                pw = pwd.getpwnam(user)
                gid, extra = pw.pw_gid, os.getgrouplist(pw.pw_name, pw.pw_gid)
            popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out_w,
                stderr=err_w,
                env=env,
                cwd=cwd,
                user=user,
                start_new_session=True,
                group=gid,
                extra_groups=extra,
            )
            pid = popen.pid
    except BaseException:
        for fd in (out_r, err_r):
            os.close(fd)
        raise
    finally:
        for fd in (out_w, err_w):
            with contextlib.suppress(OSError):
                os.close(fd)
    os.set_blocking(out_r, False)
    os.set_blocking(err_r, False)
    return Spawned(pid, out_r, err_r, popen)

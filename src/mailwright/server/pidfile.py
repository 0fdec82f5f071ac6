"""The pid file in data_dir: how ``mailwright reload`` finds the server to signal.

``serve`` writes it once SIGHUP is handled (a SIGHUP before that would end the
process: its default action) and removes it when it exits cleanly; with
``[smtp] processes`` above 1 it names the supervisor, which passes SIGHUP on.
A pid file left behind by a crash (kill -9) names a process that is gone, or
whose number a new process took since: ``running_pid`` tells both from a live
server, so ``reload`` never signals a stranger (SIGHUP ends most programs).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

PID_FILE_NAME = "mailwright.pid"
#: What the command line of a live server contains (``python -m mailwright serve``,
#: or the ``mailwright`` script), checked where /proc can tell.
_SERVER_MARK = b"mailwright"


class NoServer(Exception):
    """No server runs for this data_dir; the message says how that is known."""


def pid_file_of(data_dir: Path) -> Path:
    return data_dir / PID_FILE_NAME


def write_pid_file(path: Path) -> None:
    """Write this process's pid (a stale file from a crash is replaced)."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    temporary.write_text(f"{os.getpid()}\n")
    os.replace(temporary, path)  # a reader never sees half a number


def remove_pid_file(path: Path) -> None:
    """Remove the pid file if it still names this process."""
    with contextlib.suppress(OSError, ValueError):
        if int(path.read_text().strip()) == os.getpid():
            path.unlink()


def running_pid(path: Path) -> int:
    """The pid of the server that wrote ``path``; NoServer when none runs."""
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        raise NoServer(f"no server is running: {path} does not exist") from None
    except OSError as exc:
        raise NoServer(f"cannot read {path}: {exc.strerror or exc}") from None
    if not text.isdigit() or int(text) <= 0:
        raise NoServer(f"{path} holds no pid ({text[:20]!r})")
    pid = int(text)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        raise NoServer(f"no server is running: process {pid} of {path} is gone") from None
    except PermissionError:
        pass  # another user's process: the signal will say so
    if Path("/proc/self/cmdline").exists():  # Linux: make sure it is a server
        try:
            if _SERVER_MARK not in Path(f"/proc/{pid}/cmdline").read_bytes():
                raise NoServer(
                    f"no server is running: process {pid} of {path} is not mailwright"
                    " (the file was left by a crash)"
                )
        except OSError:
            raise NoServer(f"no server is running: process {pid} of {path} is gone") from None
    return pid

"""Pid files and signals: start detached, stop with SIGTERM then SIGKILL, spot stale pids."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return True
    return state != "Z"


def identity(pid: int) -> str | None:
    """What tells this process from any other that has or will have its pid: the boot it
    runs in and when it started in that boot (clock ticks, /proc/PID/stat's 22nd field).
    Unlike a start time in wall-clock seconds it does not move when the clock is set. None
    when it cannot be read (the process is gone, or there is no /proc)."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (2nd field) is in parentheses and may hold spaces: count after it.
    return f"{boot}:{stat.rpartition(')')[2].split()[19]}"


def read_pid(pid_file: Path) -> int | None:
    """The pid in `pid_file` if that process still runs; a stale file is removed. The file
    holds the pid and the process's identity, so a pid reused by another process (after a
    reboot, or once pids wrap around) counts as stale."""
    try:
        fields = pid_file.read_text().split()
        pid = int(fields[0])
    except (OSError, ValueError, IndexError):
        return None
    recorded = fields[1] if len(fields) > 1 and ":" in fields[1] else None  # else: pid only
    if pid_alive(pid) and (recorded is None or identity(pid) == recorded):
        return pid
    pid_file.unlink(missing_ok=True)
    return None


LOG_ROTATE_BYTES = 64 * 2**20
"""A log this large is set aside (as `<name>.log.1`, replacing the last one) when its process
next starts: the services log a line per application, about 300 MB per million."""


def rotate(log_file: Path, *, limit_bytes: int = LOG_ROTATE_BYTES) -> None:
    with contextlib.suppress(FileNotFoundError):
        if log_file.stat().st_size > limit_bytes:
            log_file.replace(log_file.with_name(log_file.name + ".1"))


def spawn(
    argv: Sequence[str],
    *,
    log_file: Path,
    pid_file: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    user: str | None = None,
) -> int:
    log_file.parent.mkdir(parents=True, exist_ok=True)
    rotate(log_file)
    with log_file.open("ab") as log:
        process = subprocess.Popen(
            list(argv),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
            user=user,
        )
    pid_file.write_text(f"{process.pid} {identity(process.pid) or ''}".rstrip() + "\n")
    return process.pid


def _signal(pid: int, sig: signal.Signals, *, group: bool) -> None:
    """Signal a process, or its whole process group (what `spawn` started: its own session)."""
    if group:
        os.killpg(pid, sig)
    else:
        os.kill(pid, sig)


def terminate(pid: int, *, grace_s: float = 20.0, group: bool = False) -> None:
    """SIGTERM, wait up to `grace_s`, then SIGKILL."""
    try:
        _signal(pid, signal.SIGTERM, group=group)
    except ProcessLookupError:
        return
    if wait_until(lambda: not pid_alive(pid), timeout_s=grace_s):
        return
    kill(pid, group=group)


def kill(pid: int, *, group: bool = False) -> None:
    """SIGKILL; with `group`, its children too (an API's worker processes must not outlive it)."""
    try:
        _signal(pid, signal.SIGKILL, group=group)
    except ProcessLookupError:
        return
    wait_until(lambda: not pid_alive(pid), timeout_s=10)


def wait_until(predicate: Callable[[], bool], *, timeout_s: float, interval_s: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout_s
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval_s)


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log yet)"

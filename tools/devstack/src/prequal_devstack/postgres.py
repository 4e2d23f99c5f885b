"""A private PostgreSQL cluster under the state folder, from the machine's server binaries."""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import pwd
import shutil
import subprocess
from pathlib import Path

import asyncpg
import psutil

from prequal_devstack.config import DB_NAME, DB_USER, StackConfig
from prequal_devstack.errors import StackError
from prequal_devstack.procs import kill, pid_alive, port_open, rotate, tail, wait_until

OS_USER_CANDIDATES = ("postgres", "prequal")


def find_bindir(data: Path | None = None) -> Path:
    """The server binaries: those of the major version `data` was created with when they are
    installed (a newer `postgresql` package cannot open an older cluster), else the newest."""
    if configured := os.environ.get("DEVSTACK_PG_BINDIR"):
        return Path(configured)
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name), reverse=True
    )
    version = None
    if data is not None:
        with contextlib.suppress(OSError):
            version = (data / "PG_VERSION").read_text().strip()
    if version is not None and candidates:
        own = f"/usr/lib/postgresql/{version}/bin"
        if own not in candidates:
            msg = (
                f"{data} was created by PostgreSQL {version}, whose server is not installed "
                f"(apt-get install -y postgresql-{version}); or remove .devstack to start over"
            )
            raise StackError(msg)
        candidates = [own, *candidates]
    for candidate in candidates:
        if (Path(candidate) / "postgres").exists():
            return Path(candidate)
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).resolve().parent
    msg = (
        "PostgreSQL server binaries not found: install them with `apt-get install -y postgresql` "
        "(or set DEVSTACK_PG_BINDIR to the folder holding initdb and pg_ctl)"
    )
    raise StackError(msg)


class Postgres:
    name = "postgres"

    def __init__(self, config: StackConfig) -> None:
        self.config = config
        self.home = config.state / "postgres"
        self.data = self.home / "data"
        self.log_file = config.state / "logs" / "postgres.log"

    @property
    def port(self) -> int:
        return self.config.pg_port

    def _os_user(self) -> str | None:
        """initdb refuses to run as root: as root, run the cluster as a dedicated user."""
        if os.geteuid() != 0:
            return None
        for candidate in OS_USER_CANDIDATES:
            try:
                pwd.getpwnam(candidate)
            except KeyError:
                continue
            return candidate
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "prequal"],
            check=True,
        )
        return "prequal"

    def _run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            list(argv), user=self._os_user(), capture_output=True, text=True, check=check, cwd="/"
        )

    def pid(self) -> int | None:
        """The postmaster's pid, if it runs. The postmaster works in its data directory,
        which tells it from another process that has the pid since (after a reboot)."""
        pid = self._lock_file_pid()
        if pid is None or not pid_alive(pid):
            return None
        try:
            process = psutil.Process(pid)
            try:
                same = Path(process.cwd()).resolve() == self.data.resolve()
            except psutil.AccessDenied:
                # Not ours to inspect (say, root in a container without ptrace rights, the
                # server running as postgres): its owner must be the data directory's.
                same = process.uids().real == self.data.stat().st_uid
        except (psutil.Error, OSError):
            same = False
        return pid if same else None

    def _init(self) -> None:
        bindir = find_bindir()
        self.home.mkdir(parents=True, exist_ok=True)
        user = self._os_user()
        if user:
            shutil.chown(self.home, user)
            # The cluster's user must reach the state folder through its parents.
            for parent in self.home.parents:
                if parent == Path("/"):
                    break
                mode = parent.stat().st_mode
                if not mode & 0o001:
                    parent.chmod(mode | 0o001)
        result = self._run(
            str(bindir / "initdb"),
            "-D",
            str(self.data),
            "-U",
            DB_USER,
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C",
            check=False,
        )
        if result.returncode != 0:
            raise StackError(f"initdb failed:\n{result.stdout}\n{result.stderr}")
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(
                "\n# prequal devstack\n"
                "listen_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{self.home}'\n"
                "max_connections = 300\n"
                "shared_buffers = 256MB\n"
                "log_min_messages = warning\n"
                "log_min_error_statement = panic\n"
            )

    def start(self) -> None:
        if self.pid():
            return
        if (stale := self._lock_file_pid()) is not None:
            # Killed, by `kill` or by anything else (the OOM killer): pg_ctl would fail at once
            # while its remnants last, so wait for them (pg_ctl then says what is left, if any).
            wait_until(lambda: not self._remnants(stale), timeout_s=10)
        if port_open(self.port):
            msg = (
                f"port {self.port} is taken by another program, so the stack's PostgreSQL cannot "
                "start: stop that program or set DEVSTACK_PG_PORT to a free port"
            )
            raise StackError(msg)
        if not (self.data / "PG_VERSION").exists():
            self._init()
        bindir = find_bindir(self.data)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        rotate(self.log_file)  # pg_ctl appends to it; the services' logs are set aside by spawn
        user = self._os_user()
        if user:
            shutil.chown(self.log_file.parent, user)
            self.log_file.touch()
            shutil.chown(self.log_file, user)
        result = self._run(
            str(bindir / "pg_ctl"),
            "-D",
            str(self.data),
            "-o",
            # terse: no DETAIL lines, which would quote rows (and so PANs) into the server log
            f"-p {self.port} -c log_error_verbosity=terse",
            "-l",
            str(self.log_file),
            "-w",
            "-t",
            "60",
            "start",
            check=False,
        )
        if result.returncode != 0:
            raise StackError(
                f"PostgreSQL did not start:\n{result.stdout}{result.stderr}\n{tail(self.log_file)}"
            )
        asyncio.run(self._ensure_database())

    async def _ensure_database(self) -> None:
        conn = await asyncpg.connect(
            host="127.0.0.1", port=self.port, user=DB_USER, database="postgres", timeout=10
        )
        try:
            exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", DB_NAME)
            if not exists:
                await conn.execute(f'CREATE DATABASE "{DB_NAME}"')
        finally:
            await conn.close()

    def stop(self) -> None:
        if not self.pid():
            return
        try:
            bindir = find_bindir(self.data)
        except StackError:  # its version's binaries are gone: stop it by signal
            self.kill()
            return
        self._run(
            str(bindir / "pg_ctl"),
            "-D",
            str(self.data),
            "-m",
            "fast",
            "-w",
            "stop",
            check=False,
        )
        pid = self.pid()
        if pid:
            kill(pid)

    def kill(self) -> None:
        pid = self.pid()
        if pid:
            kill(pid)
            # Backends notice the postmaster is gone and exit; wait for the port to close.
            wait_until(lambda: not port_open(self.port), timeout_s=10)
            # And for every trace of it, which a new postmaster would refuse to start beside.
            if not wait_until(lambda: not self._remnants(pid), timeout_s=10):
                msg = (
                    f"PostgreSQL's postmaster (pid {pid}) was killed, but 10 s later it is still "
                    "a process (a zombie its parent, PID 1, has not reaped) or processes are still "
                    "attached to its shared memory: it cannot be started again until they are gone"
                )
                raise StackError(msg)

    def _lock_file(self) -> list[str]:
        """The lines of `postmaster.pid` (none if there is none): the postmaster's pid first,
        its shared memory's key and id seventh."""
        try:
            return (self.data / "postmaster.pid").read_text().splitlines()
        except OSError:
            return []

    def _lock_file_pid(self) -> int | None:
        try:
            return int(self._lock_file()[0])
        except (ValueError, IndexError):
            return None

    def _remnants(self, pid: int) -> bool:
        """What PostgreSQL checks before it starts: whether the postmaster of `postmaster.pid`
        still answers a signal (a zombie not yet reaped does), and whether processes (its
        backends, on their way out) are still attached to its shared memory."""
        try:
            os.kill(pid, 0)
        except (ProcessLookupError, PermissionError):  # gone; or the pid is another user's now
            pass
        else:
            return True
        return self._shared_memory_attached()

    def _shared_memory_attached(self) -> bool:
        """Line 7 of `postmaster.pid` holds the key and id of the server's System V shared
        memory, and `/proc/sysvipc/shm` how many processes are attached to it (readable by
        anyone, unlike the backends' own `/proc` entries)."""
        try:
            shmid = int(self._lock_file()[6].split()[1])
            segments = Path("/proc/sysvipc/shm").read_text().splitlines()[1:]
        except (OSError, ValueError, IndexError):
            return False
        for segment in segments:
            fields = segment.split()  # key shmid perms size cpid lpid nattch ...
            if int(fields[1]) == shmid:
                return int(fields[6]) > 0
        return False

    def healthy(self) -> bool:
        async def probe() -> bool:
            try:
                conn = await asyncpg.connect(
                    host="127.0.0.1", port=self.port, user=DB_USER, database=DB_NAME, timeout=2
                )
            except (OSError, asyncpg.PostgresError, TimeoutError):
                return False
            await conn.close()
            return True

        return asyncio.run(probe())

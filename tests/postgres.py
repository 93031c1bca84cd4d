"""A private PostgreSQL server for the tests, run from a temp dir and removed afterwards.

The server is the one installed on the machine (``scripts/ensure-postgres.sh`` installs Debian's
package when it is missing), but never its clusters: :class:`PostgresServer` creates a cluster of its
own with ``initdb``, starts it with ``pg_ctl`` on 127.0.0.1 and a free port, with its socket in the
temp dir, and removes everything on :meth:`PostgresServer.stop`.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
USER = "ontrack"
# initdb and the server refuse to run as root; as root they run as this OS user instead.
SERVER_OS_USER = "postgres"
INSTALL_HINT = "Run scripts/ensure-postgres.sh (make test does), or install Debian's postgresql package."

# The server holds only throw-away test data: durability is not worth the time it costs.
SETTINGS = {
    "listen_addresses": HOST,
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "shared_buffers": "32MB",
    "max_connections": "50",
}


class PostgresUnavailable(RuntimeError):
    """PostgreSQL cannot be found or started; the message says why and what to do."""


def find_programs() -> tuple[Path, Path]:
    """``initdb`` and ``pg_ctl`` of the newest Debian install, else from PATH."""
    for directory in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version, reverse=True):
        initdb, pg_ctl = Path(directory, "initdb"), Path(directory, "pg_ctl")
        if os.access(initdb, os.X_OK) and os.access(pg_ctl, os.X_OK):
            return initdb, pg_ctl
    initdb_path, pg_ctl_path = shutil.which("initdb"), shutil.which("pg_ctl")
    if initdb_path and pg_ctl_path:
        return Path(initdb_path), Path(pg_ctl_path)
    raise PostgresUnavailable(
        "PostgreSQL server programs (initdb, pg_ctl) were found neither in /usr/lib/postgresql/*/bin "
        f"nor on PATH. {INSTALL_HINT}"
    )


def _version(directory: str) -> tuple[int, str]:
    name = Path(directory).parent.name
    return (int(name) if name.isdigit() else -1, name)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


class PostgresServer:
    """One private PostgreSQL cluster: started by :meth:`start`, gone after :meth:`stop`."""

    def __init__(self) -> None:
        self.initdb, self.pg_ctl = find_programs()
        self.password = secrets.token_urlsafe(18)
        self.port = 0
        self.base: Path | None = None
        self._as_server_user: list[str] = []
        self._owner: pwd.struct_passwd | None = None
        self._databases = 0

    @property
    def data(self) -> Path:
        assert self.base is not None
        return self.base / "data"

    @property
    def log_file(self) -> Path:
        assert self.base is not None
        return self.base / "server.log"

    # -- life cycle -----------------------------------------------------------------------------------

    def start(self) -> PostgresServer:
        """Create the cluster and start it; raises :class:`PostgresUnavailable` with the reason."""
        if os.geteuid() == 0:
            self._run_as_server_user()
        self.base = Path(tempfile.mkdtemp(prefix="ontrack-pg-"))
        try:
            if self._owner is not None:
                os.chown(self.base, self._owner.pw_uid, self._owner.pw_gid)
            self._init_cluster()
            self._start_on_a_free_port()
            self.execute("postgres", "SELECT 1")
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the server at once and delete its files; safe to call more than once."""
        if self.base is None:
            return
        if (self.data / "postmaster.pid").exists():
            # Immediate: nothing in it needs to survive, and a clean shutdown costs a checkpoint.
            self._run([str(self.pg_ctl), "stop", "-D", str(self.data), "-m", "immediate", "-w"], check=False)
        shutil.rmtree(self.base, ignore_errors=True)
        self.base = None

    def _run_as_server_user(self) -> None:
        try:
            self._owner = pwd.getpwnam(SERVER_OS_USER)
        except KeyError:
            raise PostgresUnavailable(
                f"The tests run as root, so PostgreSQL must run as the OS user {SERVER_OS_USER!r} "
                f"(initdb refuses root), but that user does not exist. {INSTALL_HINT}"
            ) from None
        runuser = shutil.which("runuser")
        if runuser is None:
            raise PostgresUnavailable(
                f"The tests run as root and need runuser (util-linux) to start PostgreSQL as "
                f"{SERVER_OS_USER!r}, but it is not on PATH."
            )
        self._as_server_user = [runuser, "-u", SERVER_OS_USER, "--"]

    def _init_cluster(self) -> None:
        assert self.base is not None
        password_file = self.base / "password"
        password_file.write_text(self.password + "\n")
        password_file.chmod(0o600)
        if self._owner is not None:
            os.chown(password_file, self._owner.pw_uid, self._owner.pw_gid)
        try:
            self._run(
                [
                    str(self.initdb),
                    "--pgdata", str(self.data),
                    "--username", USER,
                    "--pwfile", str(password_file),
                    # Password checks for every connection, TCP and socket alike.
                    "--auth", "scram-sha-256",
                    "--encoding", "UTF8",
                    "--locale", "C",
                    "--no-sync",
                ],
                what="initdb",
            )
        finally:
            password_file.unlink(missing_ok=True)

        settings = dict(SETTINGS, unix_socket_directories=str(self.base))
        lines = [f"{name} = '{value.replace(chr(39), chr(39) * 2)}'" for name, value in settings.items()]
        with open(self.data / "postgresql.conf", "a", encoding="utf-8") as conf:
            conf.write("\n# Private test server of airflow-provider-ontrack\n" + "\n".join(lines) + "\n")

    def _start_on_a_free_port(self) -> None:
        # The port is free when picked but may be taken before the server binds it; then try another.
        for _attempt in range(5):
            self.port = _free_port()
            started = self._run(
                [
                    str(self.pg_ctl), "start",
                    "-D", str(self.data),
                    "-l", str(self.log_file),
                    "-o", f"-p {self.port}",
                    "-w", "-t", "60",
                ],
                check=False,
            )
            if started.returncode == 0:
                return
            if "could not bind" not in self._log_tail():
                break
        raise PostgresUnavailable(
            f"pg_ctl could not start PostgreSQL ({self.pg_ctl}) on {HOST}:{self.port}:\n"
            f"{started.stdout}{started.stderr}\nServer log:\n{self._log_tail()}"
        )

    def _run(self, command: list[str], *, check: bool = True, what: str = "") -> subprocess.CompletedProcess:
        # cwd: the server user may not be allowed into the directory the tests run in.
        done = subprocess.run(
            self._as_server_user + command,
            cwd=self.base,
            env=self._environment(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        if check and done.returncode != 0:
            raise PostgresUnavailable(
                f"{what or command[0]} failed with exit code {done.returncode}:\n{done.stdout}{done.stderr}"
            )
        return done

    @staticmethod
    def _environment() -> dict[str, str]:
        # libpq and pg_ctl read PG* variables; none of the caller's may point them elsewhere.
        env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
        env["LC_ALL"] = "C"
        return env

    def _log_tail(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")[-3000:]
        except OSError:
            return "(no server log)"

    # -- databases ------------------------------------------------------------------------------------

    def connection(self, database: str) -> dict[str, Any]:
        """The Airflow connection of ``database``, as the JSON form of an ``AIRFLOW_CONN_...`` variable."""
        return {
            "conn_type": "postgres",
            "host": HOST,
            "port": self.port,
            "login": USER,
            "password": self.password,
            "schema": database,
        }

    def hook(self, database: str) -> Any:
        """A ``PostgresHook`` of ``database`` that needs no registered connection."""
        from airflow.providers.postgres.hooks.postgres import PostgresHook
        from airflow.sdk import Connection

        return PostgresHook(connection=Connection(conn_id=f"pg_{database}", **self.connection(database)))

    def create_database(self) -> str:
        """A new empty database, with a name not used before on this server."""
        self._databases += 1
        name = f"test_{self._databases}"
        self.execute("postgres", f'CREATE DATABASE "{name}"')
        return name

    def execute(self, database: str, statement: str) -> None:
        """Run one statement outside a transaction (``CREATE DATABASE`` cannot run inside one)."""
        self.hook(database).run(statement, autocommit=True)

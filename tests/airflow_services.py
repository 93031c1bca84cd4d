"""Real Airflow processes for the tests: an api-server and a triggerer on loopback, and CLI runs.

Every process starts in a session of its own and writes its output to a file, never to a pipe that
could fill up. Airflow's task supervisor moves each task process into a process group of its own,
so stopping the group of the command that was started would leave task processes behind;
:meth:`AirflowProcess.stop` therefore ends every process of the session, first with ``SIGTERM`` to
the command's group, then with ``SIGKILL`` to whatever of the session is left after a bounded wait.

The metadata database is the SQLite file of the Airflow home: task processes reach it only through
the api-server, so SQLite serves the LocalExecutor, the api-server and the triggerer together.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import sqlite3
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from tests.postgres import HOST, _free_port


class AirflowServiceError(RuntimeError):
    """An Airflow process did not start, did not end in time, or left processes behind."""


def metadata(home: Path, statement: str, *params: Any) -> list[tuple]:
    """Rows of a query on the home's metadata database, read-only and without blocking its writers."""
    uri = f"file:{home / 'airflow.db'}?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=10)) as db:
        return db.execute(statement, params).fetchall()


def _wait_for(condition: Callable[[], bool], timeout: float, interval: float = 0.2) -> bool:
    """Poll ``condition`` until it holds (``True``) or ``timeout`` seconds have passed (``False``)."""
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


class AirflowProcess:
    """One command run in the background, in a session of its own, with its output in a file."""

    def __init__(self, name: str, command: list[str], env: dict[str, str], output: Path) -> None:
        self.name = name
        self.command = command
        self.env = env
        self.output_file = output
        self._popen: subprocess.Popen | None = None
        self._terminated = False

    def start(self) -> AirflowProcess:
        """Start the command in a new session, its output going to ``output``."""
        with open(self.output_file, "wb") as output:
            self._popen = subprocess.Popen(
                self.command,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    @property
    def pid(self) -> int:
        """The command's process id, which is also its session and process group id."""
        assert self._popen is not None, f"{self.name} was not started"
        return self._popen.pid

    def running(self) -> bool:
        """Whether the command has been started and has not exited yet."""
        return self._popen is not None and self._popen.poll() is None

    def output(self) -> str:
        """Everything the command printed so far."""
        try:
            return self.output_file.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def tail(self, characters: int = 4000) -> str:
        """The end of the output, headed by the command's name, for failure messages."""
        return f"--- last output of {self.name} ---\n{self.output()[-characters:]}"

    def wait(self, timeout: float) -> int:
        """The exit code; raises :class:`AirflowServiceError` (and stops it) if it runs longer."""
        assert self._popen is not None, f"{self.name} was not started"
        try:
            return self._popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            message = f"{self.name} did not end within {timeout:.0f} s\n{self.tail()}"
            raise AirflowServiceError(message) from None

    def session(self) -> list[psutil.Process]:
        """The live processes of this command's session: the command and everything it started."""
        if self._popen is None:
            return []
        members = []
        for process in psutil.process_iter():
            try:
                if os.getsid(process.pid) == self._popen.pid and process.status() != psutil.STATUS_ZOMBIE:
                    members.append(process)
            except (ProcessLookupError, PermissionError, psutil.Error):
                continue
        return members

    def terminate(self) -> None:
        """Send ``SIGTERM`` to the command's process group, once, if the command still runs.

        Once only: a second ``SIGTERM`` makes the triggerer and the scheduler give up their
        graceful shutdown and exit at once.
        """
        if self._popen is None or self._terminated or self._popen.poll() is not None:
            return
        self._terminated = True
        try:
            os.killpg(self._popen.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass

    def stop(self, grace: float = 30.0) -> None:
        """End the command and every process of its session; safe to call more than once.

        ``SIGTERM`` goes to the command's process group, which lets the api-server and the triggerer
        shut down as they do under a service manager; after ``grace`` seconds, or once the command
        has exited, whatever of the session is still running gets ``SIGKILL``.
        """
        if self._popen is None:
            return

        self.terminate()
        try:
            self._popen.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass

        for process in self.session():
            try:
                process.kill()
            except psutil.Error:
                continue
        survivors_gone = _wait_for(lambda: not self.session(), timeout=10)
        try:
            self._popen.wait(timeout=10)
        except subprocess.TimeoutExpired:
            survivors_gone = False
        if not survivors_gone:
            left = ", ".join(f"{process.pid} {process.name()}" for process in self.session())
            raise AirflowServiceError(f"{self.name}: processes still running after SIGKILL: {left}")


class AirflowServices:
    """A real ``airflow api-server`` (its Execution API) and ``airflow triggerer`` for one Airflow home.

    Use it as a context manager; every process it started, the commands of :meth:`run` included, is
    stopped on leaving, also when the block failed. ``env`` is the environment shared by all of them:
    the connection, the DAGs folder and the home. The services add what their processes must agree on:

    - ``[api_auth] jwt_secret``: the executor signs each task's token with it and the api-server checks
      it; a random one of 64 bytes, since a shorter one draws a warning from PyJWT for HS512;
    - ``[core] execution_api_server_url``: where task processes and the triggerer find the Execution
      API; Airflow's default is ``http://localhost:8080``, whereas the tests take a free port;
    - ``[core] executor``: the LocalExecutor, so that ``airflow dags test --use-executor`` or a scheduler
      runs each task in a supervised process of its own, as a worker would.

    :param airflow: the ``airflow`` command.
    :param home: the Airflow home, with a migrated SQLite metadata database.
    :param env: the environment of every process.
    :param output_dir: where each process's output file goes.
    """

    def __init__(self, airflow: str, home: Path, env: dict[str, str], output_dir: Path) -> None:
        self.airflow = airflow
        self.home = home
        self.output_dir = output_dir
        # Calls between the processes stay on loopback even where a proxy is configured.
        no_proxy = ",".join(filter(None, (env.get("NO_PROXY"), HOST, "localhost")))
        self.env = dict(
            env,
            AIRFLOW__CORE__EXECUTOR="LocalExecutor",
            AIRFLOW__API_AUTH__JWT_SECRET=secrets.token_urlsafe(64),
            NO_PROXY=no_proxy,
            no_proxy=no_proxy,
        )
        self.processes: list[AirflowProcess] = []
        self.api_server: AirflowProcess | None = None
        self.triggerer: AirflowProcess | None = None
        self.triggerer_job_id: int | None = None
        self._use_port(_free_port())

    def __enter__(self) -> AirflowServices:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> None:
        """Start the api-server and the triggerer together; return when both are up.

        Up means: the api-server answers its health check, and the triggerer has registered its job
        in the metadata database. Raises :class:`AirflowServiceError` with the process's output when
        either exits or takes longer than two minutes.
        """
        # The port is free when picked but may be taken before uvicorn binds it; then take another.
        for attempt in range(3):
            suffix = f"-{attempt + 1}" if attempt else ""
            server = self.api_server = self._start(
                "api-server" + suffix,
                # Only the Execution API: the tasks and the triggerer need no UI and no public REST API.
                [self.airflow, "api-server", "--host", HOST, "--port", str(self.port), "--apps", "execution"],
            )
            triggerer = self.triggerer = self._start(
                "triggerer" + suffix,
                # Without serve-logs, which would listen on every interface; the tests read the files.
                [self.airflow, "triggerer", "--skip-serve-logs"],
            )
            if not _wait_for(lambda: self._healthy() or not server.running(), timeout=120):
                raise AirflowServiceError(f"the api-server did not answer within 120 s\n{server.tail()}")
            if self._healthy():
                break
            if "address already in use" not in server.output().lower():
                code = server.wait(5)
                raise AirflowServiceError(f"the api-server exited with code {code}\n{server.tail()}")
            triggerer.stop()
            self._use_port(_free_port())
        else:
            raise AirflowServiceError(f"the api-server found no free port in 3 attempts\n{server.tail()}")

        if not _wait_for(lambda: self._triggerer_job() is not None or not triggerer.running(), timeout=120):
            raise AirflowServiceError(f"the triggerer registered no job within 120 s\n{triggerer.tail()}")
        if not triggerer.running():
            code = triggerer.wait(5)
            raise AirflowServiceError(f"the triggerer exited with code {code}\n{triggerer.tail()}")
        self.triggerer_job_id = self._triggerer_job()

    def run(self, name: str, args: list[str]) -> AirflowProcess:
        """Start ``airflow <args>`` with the services' environment; stopped with the services.

        It may start before :meth:`start`, for a command that needs no Execution API.
        """
        return self._start(name, [self.airflow, *args])

    def outputs(self) -> dict[str, str]:
        """The output so far of every process started, by name."""
        return {process.name: process.output() for process in self.processes}

    def stop(self) -> None:
        """Stop every process started; raise if any left processes behind.

        All get ``SIGTERM`` first and then shut down side by side: the triggerer alone can take ten
        seconds to stop its trigger runner.
        """
        for process in reversed(self.processes):
            process.terminate()
        problems = []
        for process in reversed(self.processes):
            try:
                process.stop()
            except AirflowServiceError as error:
                problems.append(str(error))
        if problems:
            raise AirflowServiceError("; ".join(problems))

    def _use_port(self, port: int) -> None:
        self.port = port
        self.env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] = f"http://{HOST}:{port}/execution/"

    def _start(self, name: str, command: list[str]) -> AirflowProcess:
        process = AirflowProcess(name, command, dict(self.env), self.output_dir / f"{name}.out")
        self.processes.append(process)
        return process.start()

    def _healthy(self) -> bool:
        direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with direct.open(f"http://{HOST}:{self.port}/execution/health", timeout=2) as answer:
                return answer.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def _triggerer_job(self) -> int | None:
        try:
            rows = metadata(
                self.home, "SELECT id FROM job WHERE job_type = 'TriggererJob' AND state = 'running'"
            )
        except sqlite3.OperationalError:
            return None
        return rows[-1][0] if rows else None

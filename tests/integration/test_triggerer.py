"""The deferrable sensors in a real Airflow triggerer process, with a real api-server and executor.

Each test starts ``airflow api-server`` (its Execution API) and ``airflow triggerer`` on 127.0.0.1,
then runs a DAG with ``airflow dags test --use-executor`` or a scheduler: the LocalExecutor runs
every task in a supervised process of its own, a deferred sensor's trigger goes through the
metadata database to the triggerer, and the task resumes in a new process when the trigger fires.
Nothing runs in line.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import textwrap
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from airflow_provider_ontrack.sandbox import OnTrackSandbox
from tests.airflow_services import AirflowProcess, AirflowServices, metadata
from tests.conftest import SECRETS, connection_for
from tests.integration.test_airflow import AIRFLOW, _airflow_env

TRANSFER_TRIGGER = "airflow_provider_ontrack.triggers.ontrack.OnTrackTransferTrigger"
ASSET_TRIGGER = "airflow_provider_ontrack.triggers.ontrack.OnTrackAssetTrigger"

# The 200 waits share one ON!Track tenant. The sandbox refuses calls beyond LIMIT in any second, and
# the connection allows LIMIT: at Hilti's 2 calls per second one round of 200 polls takes 100 s, at
# 20 it takes 10 s, and the property tested (one pacer per tenant in the triggerer holds all waits
# to the limit) is the same. The waits ask for more than the limit (200 polls every POLL_INTERVAL
# seconds are 40 calls per second), so that it is the pacer that keeps them within it.
LIMIT = 20
POLL_INTERVAL = 5
WAITS = 200
WAIT_DAG_ID = "ontrack_wait_for_200_assets"

WAIT_DAG = '''
"""Two hundred tools sent to repair: one deferrable sensor per tool waits until it is back."""

import pendulum
from airflow.sdk import DAG

from airflow_provider_ontrack.sensors.ontrack import OnTrackAssetSensor

ASSET_IDS = {asset_ids}

with DAG("{dag_id}", schedule=None, start_date=pendulum.datetime(2025, 1, 1, tz="UTC")):
    OnTrackAssetSensor.partial(
        task_id="wait_until_back",
        status="ACTIVE",
        deferrable=True,
        poke_interval={poll_interval},
        timeout=600,
    ).expand(asset_id=ASSET_IDS)
'''


@pytest.fixture(scope="module")
def migrated_database(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A metadata database migrated once for the module; each test works on a copy of its own."""
    home = tmp_path_factory.mktemp("triggerer-template-home")
    subprocess.run([AIRFLOW, "db", "migrate"], env=_airflow_env(home), check=True, capture_output=True,
                   timeout=300)
    return home / "airflow.db"


@pytest.fixture
def scratch_home(migrated_database: Path, tmp_path: Path) -> Path:
    """An Airflow home of the test's own: a copy of the migrated database, and nothing else yet.

    Only the database is copied: the template's ``airflow.cfg`` names the template's paths, and
    Airflow writes a new one for this home on first use.
    """
    home = tmp_path / "airflow-home"
    home.mkdir()
    shutil.copy(migrated_database, home / "airflow.db")
    return home


@pytest.fixture
def airflow_services(tmp_path: Path) -> Iterator[Callable[[Path, dict[str, str]], AirflowServices]]:
    """Services (api-server, triggerer) for a home and an environment, for the test to start.

    Every process the services started, the DAG runs too, is stopped in the ``finally``, also when
    the test failed or timed out: ``SIGTERM`` first, ``SIGKILL`` after a bounded wait.
    """
    made: list[AirflowServices] = []

    def make(home: Path, env: dict[str, str]) -> AirflowServices:
        """New services for ``home``, started by the test, stopped by this fixture."""
        output_dir = tmp_path / f"process-output-{len(made)}"
        output_dir.mkdir()
        made.append(AirflowServices(AIRFLOW, home, env, output_dir))
        return made[-1]

    try:
        yield make
    finally:
        for services in made:
            services.stop()


def _finish(run: AirflowProcess, timeout: float) -> None:
    """Wait for an Airflow command to end; fail if it failed."""
    code = run.wait(timeout)
    assert code == 0, f"{run.name} exited with code {code}\n{run.tail()}"


def _leaks(server: OnTrackSandbox, services: AirflowServices) -> list[str]:
    """Where a secret or an issued token shows: a process's output or a file of the logs folder."""
    texts = {f"output of {name}": text for name, text in services.outputs().items()}
    for path in sorted((services.home / "logs").rglob("*")):
        if path.is_file():
            texts[str(path.relative_to(services.home))] = path.read_text(errors="replace")
    issued = server.issued_tokens()
    assert issued, "no token was issued, so the check for leaked tokens would prove nothing"
    return [
        f"{where} holds {secret[:8]}..."
        for where, text in texts.items()
        for secret in (*SECRETS, *issued)
        if secret in text
    ]


def _events(home: Path, dag_id: str, task_id: str) -> list[str]:
    """The state changes Airflow's audit log recorded for a task, oldest first."""
    rows = metadata(
        home, "SELECT event FROM log WHERE dag_id = ? AND task_id = ? ORDER BY id", dag_id, task_id
    )
    return [event for (event,) in rows]


def _states(home: Path, dag_id: str) -> Counter:
    """How many task instances of a DAG are in each state."""
    rows = metadata(home, "SELECT state FROM task_instance WHERE dag_id = ?", dag_id)
    return Counter(state for (state,) in rows)


def _trigger_log_files(services: AirflowServices, dag_id: str, task_id: str) -> list[Path]:
    """A task's trigger log files that the services' triggerer wrote: they are named after its job."""
    folder = services.home / "logs" / f"dag_id={dag_id}"
    pattern = f"run_id=*/task_id={task_id}/**/*.log.trigger.{services.triggerer_job_id}.log"
    return sorted(folder.glob(pattern))


def _triggerer_lines(services: AirflowServices, dag_id: str, task_id: str) -> list[str]:
    """What the triggerer logged about a task's triggers, in its trigger log files and its output.

    While a trigger runs, the triggerer writes the trigger's records to the trigger's log file; a
    record that reaches it after the trigger has finished goes to its own output instead.
    """
    lines = []
    for path in _trigger_log_files(services, dag_id, task_id):
        lines += path.read_text().splitlines()
    assert services.triggerer is not None
    lines += [line for line in services.triggerer.output().splitlines() if f"dag_id={dag_id} " in line]
    return lines


def _most_in_any_window(times: list[float], seconds: float) -> int:
    """The largest number of the sorted ``times`` that fall within any span of ``seconds``."""
    most, first = 0, 0
    for last, moment in enumerate(times):
        while moment - times[first] >= seconds:
            first += 1
        most = max(most, last - first + 1)
    return most


def _wait(condition: Callable[[], bool], timeout: float, what: str, *needed: AirflowProcess) -> None:
    """Poll ``condition`` until it holds; fail after ``timeout``, or at once if a needed process ended."""
    deadline = time.monotonic() + timeout
    while not condition():
        for process in needed:
            if not process.running():
                pytest.fail(f"{process.name} ended before {what}\n{process.tail()}")
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout:.0f} s: {what}\n" + "\n".join(p.tail() for p in needed))
        time.sleep(0.5)


def test_the_waiting_example_dag_defers_to_a_real_triggerer(scratch_home, fresh_sandbox, airflow_services):
    """The example's sensor defers, its trigger runs in the triggerer, and the asset reaches the site."""
    # With its default params, as the README runs it: tool ERP-A-000257 goes to jobsite SITE-0106.
    # The transfer completes at once: the example polls every ten minutes, so the trigger's first
    # poll has to find it done; the sensor tests cover a transfer that is still in transit.
    asset = next(a for a in fresh_sandbox.tenant.all("assets") if a["externalId"] == "ERP-A-000257")
    jobsite = next(loc for loc in fresh_sandbox.tenant.all("locations") if loc["externalId"] == "SITE-0106")
    assert asset["currentLocationId"] != jobsite["id"], "the transfer would not move the tool"
    env = _airflow_env(
        scratch_home,
        AIRFLOW_CONN_ONTRACK_DEFAULT=json.dumps(connection_for(fresh_sandbox, calls_per_second=LIMIT)),
        # One executor worker: the tasks run one after the other anyway, and with more than one,
        # LocalExecutor.end() can count its workers wrong and leave the CLI hanging after the run.
        AIRFLOW__CORE__PARALLELISM="1",
    )
    services = airflow_services(scratch_home, env)
    services.start()

    run = services.run("dags-test", ["dags", "test", "--use-executor", "ontrack_wait_for_transfer"])
    _finish(run, timeout=240)

    dag_id = "ontrack_wait_for_transfer"
    assert metadata(scratch_home, "SELECT state FROM dag_run WHERE dag_id = ?", dag_id) == [("success",)]
    assert _states(scratch_home, dag_id) == {"success": 3}
    # The sensor ran, deferred, and ran again (execute_complete) in a new task process.
    events = _events(scratch_home, dag_id, "wait_until_arrived")
    assert events == ["running", "deferred", "running", "success"]

    # The triggerer, and no other process, ran the trigger: it wrote the trigger's log, under its job id.
    assert metadata(scratch_home, "SELECT id FROM job WHERE job_type = 'TriggererJob'") == [
        (services.triggerer_job_id,)
    ]
    assert len(_trigger_log_files(services, dag_id, "wait_until_arrived")) == 1
    lines = _triggerer_lines(services, dag_id, "wait_until_arrived")
    tokens = [line for line in lines if "Obtained an ON!Track token" in line]
    assert len(tokens) == 1 and TRANSFER_TRIGGER in tokens[0], lines
    fired = [line for line in lines if "Trigger fired event" in line]
    assert len(fired) == 1 and "'transfer_status': 'COMPLETED'" in fired[0], lines

    stats = fresh_sandbox.stats()
    assert stats["calls"] == {
        "GET /assets": 1, "GET /locations": 1, "POST /transfers": 1, "GET /transfers/{id}": 1
    }
    # One token for each process that called the API: find_records, the transfer, the triggerer.
    assert stats["token_requests"] == 3
    assert fresh_sandbox.tenant.get("assets", asset["id"])["currentLocationId"] == jobsite["id"]
    assert _leaks(fresh_sandbox, services) == []


@pytest.mark.timeout(480)
def test_200_deferred_asset_sensors_share_the_call_limit_in_one_triggerer(
    scratch_home, fresh_sandbox, airflow_services, tmp_path
):
    """200 deferred sensors wait in one triggerer on one token, within the call limit, then all succeed."""
    fresh_sandbox.set_config(rate_limit=LIMIT)
    assets = [a["id"] for a in fresh_sandbox.tenant.all("assets") if a["status"] == "ACTIVE"][:WAITS]
    for asset_id in assets:
        fresh_sandbox.tenant.update("assets", asset_id, {"status": "IN_REPAIR"})
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "wait_for_200_assets.py").write_text(
        textwrap.dedent(WAIT_DAG).format(asset_ids=assets, dag_id=WAIT_DAG_ID, poll_interval=POLL_INTERVAL)
    )
    env = _airflow_env(
        scratch_home,
        AIRFLOW__CORE__DAGS_FOLDER=str(dags),
        AIRFLOW_CONN_ONTRACK_DEFAULT=json.dumps(connection_for(fresh_sandbox, calls_per_second=LIMIT)),
        AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION="False",
        # As many tasks of the DAG at once as the executor has workers (Airflow's default is 16).
        AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG="32",
    )
    services = airflow_services(scratch_home, env)

    # A scheduler runs the 200 tasks, as in production. ``dags test --use-executor`` would need a
    # LocalExecutor of many workers, whose end() can miscount them and hang after the run; stopping
    # a scheduler ends its workers with it. The DAG goes to the database while the services start.
    reserialize = services.run("reserialize", ["dags", "reserialize"])
    services.start()
    _finish(reserialize, timeout=120)
    scheduler = services.run("scheduler", ["scheduler", "--skip-serve-logs"])
    _finish(services.run("trigger", ["dags", "trigger", WAIT_DAG_ID]), timeout=120)
    needed = (scheduler, services.triggerer, services.api_server)

    def all_waiting_in_the_triggerer() -> bool:
        """All 200 task instances deferred, and all 200 triggers assigned to the one triggerer."""
        triggers = metadata(scratch_home, "SELECT classpath, triggerer_id FROM trigger")
        return _states(scratch_home, WAIT_DAG_ID)["deferred"] == WAITS and Counter(triggers) == {
            (ASSET_TRIGGER, services.triggerer_job_id): WAITS
        }

    _wait(all_waiting_in_the_triggerer, 240, f"{WAITS} sensors deferred to the one triggerer", *needed)
    all_deferred = time.monotonic()

    # Watch the polls for at least two intervals, and until every trigger has polled again.
    asset_paths = {f"/assets/{asset_id}" for asset_id in assets}

    def watched_long_enough() -> bool:
        """Two poll intervals passed, and each trigger polled again since all were deferred."""
        polled = {call["path"] for call in fresh_sandbox.call_log() if call["at"] >= all_deferred}
        return time.monotonic() - all_deferred >= 2 * POLL_INTERVAL and polled >= asset_paths

    _wait(watched_long_enough, 90, "every trigger polled again", *needed)
    watched = time.monotonic() - all_deferred
    calls = fresh_sandbox.call_log()
    stats = fresh_sandbox.stats()

    assert _states(scratch_home, WAIT_DAG_ID) == {"deferred": WAITS}
    assert {call["template"] for call in calls} == {"/assets/{id}"}
    assert {call["path"] for call in calls} == asset_paths  # every one of the 200 triggers polled
    window = sorted(call["at"] for call in calls if call["at"] >= all_deferred)
    busiest = _most_in_any_window(window, POLL_INTERVAL)
    assert busiest <= LIMIT * POLL_INTERVAL, f"{busiest} calls within {POLL_INTERVAL} s"
    # The waits ask for 40 calls a second, twice the limit, so the pacer, not the poll interval, must
    # have set the pace: close to the limit (measured: 19 calls a second) and not below it by much.
    assert len(window) >= 0.75 * LIMIT * watched, f"{len(window)} calls in {watched:.1f} s"
    # The sandbox refuses a call that makes LIMIT + 1 within a second. Calls leave 5 % further apart
    # than the limit, so 50 ms of lateness in a busy event loop lets one meet the next in the same
    # second: 0 to 1 % of calls were refused on an idle machine, 2.2 % (12 of 555) once in a full CI
    # run, each waited out by its trigger. Without the pacer the waits' 40 calls a second would meet
    # the limit of 20 and about half of them would be refused, far above this bound.
    statuses = Counter(call["status"] for call in calls)
    assert statuses[429] == stats["rejected_429"]
    assert statuses[429] <= max(2, len(calls) // 20), statuses
    # One token for all 200 triggers: one token request, and no call was refused for its token.
    assert stats["token_requests"] == 1 and len(fresh_sandbox.issued_tokens()) == 1
    assert set(statuses) <= {200, 429}, statuses

    flipped = time.monotonic()
    for asset_id in assets:
        fresh_sandbox.tenant.update("assets", asset_id, {"status": "ACTIVE"})

    def run_state() -> str | None:
        """The state of the DAG run, once the scheduler has created it."""
        rows = metadata(scratch_home, "SELECT state FROM dag_run WHERE dag_id = ?", WAIT_DAG_ID)
        return rows[0][0] if rows else None

    _wait(lambda: run_state() in ("success", "failed"), 300, "the DAG run ended", *needed)

    assert run_state() == "success", _states(scratch_home, WAIT_DAG_ID)
    assert _states(scratch_home, WAIT_DAG_ID) == {"success": WAITS}
    assert Counter(_events(scratch_home, WAIT_DAG_ID, "wait_until_back"))["deferred"] == WAITS
    after = [call for call in fresh_sandbox.call_log() if call["at"] >= flipped]
    assert {call["path"] for call in after if call["status"] == 200} == asset_paths
    # The triggerer logged all 200 triggers: each fired a success event, and one asked for a token.
    assert len(_trigger_log_files(services, WAIT_DAG_ID, "wait_until_back")) == WAITS
    lines = _triggerer_lines(services, WAIT_DAG_ID, "wait_until_back")
    fired = [line for line in lines if "Trigger fired event" in line]
    assert len(fired) == WAITS and all("'status': 'success'" in line for line in fired), fired[:3]
    tokens = [line for line in lines if "Obtained an ON!Track token" in line]
    assert len(tokens) == 1 and ASSET_TRIGGER in tokens[0], tokens
    assert fresh_sandbox.stats()["token_requests"] == 1
    assert _leaks(fresh_sandbox, services) == []

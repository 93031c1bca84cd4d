"""The ON!Track sensors over real HTTP against the local sandbox: poke, reschedule and deferrable."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from airflow_provider_ontrack.client.errors import OnTrackApiError, OnTrackConfigError, OnTrackError
from airflow_provider_ontrack.hooks.ontrack import OnTrackHook
from airflow_provider_ontrack.sensors.ontrack import (
    OnTrackAssetSensor,
    OnTrackChangesSensor,
    OnTrackTransferSensor,
)
from tests.conftest import SECRETS, connection_for
from tests.integration.test_airflow import _airflow_env as shared_airflow_env

try:
    from airflow.sdk.exceptions import AirflowSensorTimeout, AirflowSkipException, TaskDeferred
except ImportError:
    from airflow.exceptions import AirflowSensorTimeout, AirflowSkipException, TaskDeferred

AIRFLOW = str(Path(sys.executable).parent / "airflow")
SINCE = "2026-01-01T00:00:00Z"
PLAIN = (str, int, float, bool, type(None))


def _asset(server) -> dict:
    """A seeded asset that has a location and a responsible worker."""
    return next(
        asset
        for asset in server.tenant.all("assets")
        if asset.get("currentLocationId") and asset.get("responsibleWorkerId")
    )


def _other(server, resource: str, record_id: str) -> str:
    return next(record["id"] for record in server.tenant.all(resource) if record["id"] != record_id)


def _poke(sensor):
    """The sensor's poke as the XCom value it would push, or ``False``."""
    answer = sensor.poke({})
    return answer.xcom_value if answer else False


def _assert_plain(value) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            assert isinstance(key, str)
            _assert_plain(item)
    elif isinstance(value, list):
        for item in value:
            _assert_plain(item)
    else:
        assert isinstance(value, PLAIN), f"{value!r} is not a plain value"


class TestAssetSensor:
    def test_status_location_and_worker_match(self, sandbox, ontrack_connection):
        ontrack_connection(sandbox)
        asset = _asset(sandbox)
        sandbox.reset_stats()

        sensor = OnTrackAssetSensor(
            task_id="wait",
            asset_id=asset["id"],
            status=asset["status"],
            location_id=asset["currentLocationId"],
            responsible_worker_id=asset["responsibleWorkerId"],
        )

        assert _poke(sensor) == {
            "asset_id": asset["id"],
            "matched": {
                "status": asset["status"],
                "currentLocationId": asset["currentLocationId"],
                "responsibleWorkerId": asset["responsibleWorkerId"],
            },
        }
        assert sandbox.stats()["calls"] == {"GET /assets/{id}": 1}

    @pytest.mark.parametrize("argument", ["status", "location_id", "responsible_worker_id"])
    def test_one_differing_field_keeps_it_waiting(self, sandbox, ontrack_connection, argument):
        ontrack_connection(sandbox)
        asset = _asset(sandbox)
        others = {
            "status": "LOST" if asset["status"] != "LOST" else "ACTIVE",
            "location_id": _other(sandbox, "locations", asset["currentLocationId"]),
            "responsible_worker_id": _other(sandbox, "workers", asset["responsibleWorkerId"]),
        }
        sandbox.reset_stats()

        sensor = OnTrackAssetSensor(task_id="wait", asset_id=asset["id"], **{argument: others[argument]})

        assert _poke(sensor) is False
        assert sandbox.stats()["calls"] == {"GET /assets/{id}": 1}

    def test_condition_callable(self, sandbox, ontrack_connection):
        ontrack_connection(sandbox)
        asset = _asset(sandbox)
        seen = []

        def named(expected):
            def check(record):
                seen.append(record["id"])
                return record["name"] == expected

            return check

        assert _poke(OnTrackAssetSensor(task_id="a", asset_id=asset["id"], condition=named(asset["name"])))
        assert not _poke(OnTrackAssetSensor(task_id="b", asset_id=asset["id"], condition=named("no such")))
        assert seen == [asset["id"], asset["id"]]

    def test_condition_is_not_asked_when_a_field_differs(self, sandbox, ontrack_connection):
        ontrack_connection(sandbox)
        asset = _asset(sandbox)
        other = _other(sandbox, "locations", asset["currentLocationId"])

        def must_not_run(record):
            raise AssertionError("condition asked although the location differs")

        sensor = OnTrackAssetSensor(
            task_id="wait", asset_id=asset["id"], location_id=other, condition=must_not_run
        )
        assert _poke(sensor) is False

    def test_poke_mode_waits_for_the_asset_to_move(self, fresh_sandbox, ontrack_connection):
        ontrack_connection(fresh_sandbox)
        asset = _asset(fresh_sandbox)
        target = _other(fresh_sandbox, "locations", asset["currentLocationId"])
        sensor = OnTrackAssetSensor(
            task_id="wait", asset_id=asset["id"], location_id=target, poke_interval=0.3, timeout=10
        )
        fresh_sandbox.reset_stats()

        assert _poke(sensor) is False
        fresh_sandbox.tenant.update("assets", asset["id"], {"currentLocationId": target})
        result = sensor.execute({})

        assert result == {"asset_id": asset["id"], "matched": {"currentLocationId": target}}
        assert fresh_sandbox.stats()["calls"] == {"GET /assets/{id}": 2}

    def test_poke_mode_times_out_with_one_call_per_poke(self, sandbox, ontrack_connection):
        ontrack_connection(sandbox)
        asset = _asset(sandbox)
        sensor = OnTrackAssetSensor(
            task_id="wait", asset_id=asset["id"], status="NOT_A_STATUS", poke_interval=0.2, timeout=0.5
        )
        sandbox.reset_stats()

        with pytest.raises(AirflowSensorTimeout):
            sensor.execute({})

        calls = sandbox.stats()["calls"]
        assert set(calls) == {"GET /assets/{id}"}
        assert 3 <= calls["GET /assets/{id}"] <= 5
        assert sandbox.stats()["token_requests"] == 1

    def test_missing_asset_fails_instead_of_waiting(self, sandbox, ontrack_connection):
        ontrack_connection(sandbox)
        sensor = OnTrackAssetSensor(task_id="wait", asset_id="no-such-asset", status="ACTIVE")

        with pytest.raises(OnTrackApiError) as caught:
            sensor.poke({})
        assert caught.value.status == 404

    def test_nothing_to_wait_for_is_refused(self):
        with pytest.raises(OnTrackConfigError, match="at least one of"):
            OnTrackAssetSensor(task_id="wait", asset_id="a1")

    def test_condition_with_deferrable_is_refused(self):
        with pytest.raises(OnTrackConfigError) as caught:
            OnTrackAssetSensor(task_id="wait", asset_id="a1", condition=lambda asset: True, deferrable=True)
        assert caught.value.field == "condition"

    def test_blank_rendered_value_is_refused(self, sandbox, ontrack_connection):
        ontrack_connection(sandbox)
        sensor = OnTrackAssetSensor(task_id="wait", asset_id="a1", location_id="  ")

        with pytest.raises(OnTrackConfigError) as caught:
            sensor.poke({})
        assert caught.value.field == "location_id"

    def test_template_fields(self):
        assert set(OnTrackAssetSensor.template_fields) == {
            "asset_id",
            "status",
            "location_id",
            "responsible_worker_id",
            "ontrack_conn_id",
        }


class TestChangesSensor:
    def test_nothing_changed_then_an_update(self, fresh_sandbox, ontrack_connection):
        ontrack_connection(fresh_sandbox)
        asset = _asset(fresh_sandbox)
        # A moment after every seeded change: the seeded tenant's dates all lie before its start.
        since = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
        time.sleep(0.05)
        sensor = OnTrackChangesSensor(task_id="wait", resource="assets", since=since)
        fresh_sandbox.reset_stats()

        assert _poke(sensor) is False
        assert fresh_sandbox.stats()["calls"] == {"GET /assets": 1}

        fresh_sandbox.tenant.update("assets", asset["id"], {"name": "Moved by the sensor test"})
        # The API reads changes up to "now" rounded up to the second; wait until the change is in.
        assert _poke(sensor) == {"resource": "assets", "since": since.strftime("%Y-%m-%dT%H:%M:%SZ")}
        assert fresh_sandbox.stats()["calls"] == {"GET /assets": 2}

    def test_one_call_per_poke_however_many_changed(self, sandbox, ontrack_connection):
        ontrack_connection(sandbox)
        # Within the API's 90 days, so that one window (one call) covers the whole span.
        since = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=60)).strftime("%Y-%m-%dT%H:%M:%SZ")
        sandbox.reset_stats()

        assert _poke(OnTrackChangesSensor(task_id="wait", resource="workers", since=since))
        assert sandbox.stats()["calls"] == {"GET /workers": 1}

    def test_since_defaults_to_the_data_interval_start(self, fresh_sandbox, ontrack_connection):
        ontrack_connection(fresh_sandbox)
        start = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=80)

        class Lazy:
            """Airflow's lazy context proxy: the value sits in ``__wrapped__``."""

            __wrapped__ = start

        answer = OnTrackChangesSensor(task_id="wait", resource="locations").poke(
            {"data_interval_start": Lazy()}
        )
        assert answer.xcom_value == {"resource": "locations", "since": start.strftime("%Y-%m-%dT%H:%M:%SZ")}

    @pytest.mark.parametrize(
        ("since", "context", "message"),
        [
            (None, {}, "no data interval"),
            ("yesterday", {}, "ISO 8601"),
            (dt.datetime(2025, 1, 1), {}, "time zone"),
            ("2025-01-01T00:00:00", {}, "time zone"),
        ],
    )
    def test_unusable_since_is_refused(self, since, context, message):
        sensor = OnTrackChangesSensor(task_id="wait", resource="assets", since=since)

        with pytest.raises(OnTrackConfigError, match=message) as caught:
            sensor.poke(context)
        assert caught.value.field == "since"


class TestTransferSensor:
    def test_in_transit_then_completed(self, fresh_sandbox, ontrack_connection):
        fresh_sandbox.set_config(transfer_completion_delay=2)
        ontrack_connection(fresh_sandbox)
        asset = _asset(fresh_sandbox)
        target = _other(fresh_sandbox, "locations", asset["currentLocationId"])
        transfer = OnTrackHook().create_transfer([asset["id"]], to_location_id=target)
        created = time.monotonic()
        assert transfer["status"] == "IN_TRANSIT"
        sensor = OnTrackTransferSensor(
            task_id="wait", transfer_id=transfer["transferId"], poke_interval=0.5, timeout=10
        )
        fresh_sandbox.reset_stats()

        assert _poke(sensor) is False
        assert fresh_sandbox.stats()["calls"] == {"GET /transfers/{id}": 1}

        result = sensor.execute({})

        assert time.monotonic() - created >= 2
        assert result == {"transfer_id": transfer["transferId"], "transfer_status": "COMPLETED"}
        pokes = fresh_sandbox.stats()["calls"]["GET /transfers/{id}"]
        assert 3 <= pokes <= 7, pokes  # one GET per poke, every half second for about two seconds
        assert fresh_sandbox.stats()["total_calls"] == pokes

    def test_unknown_transfer_fails(self, sandbox, ontrack_connection):
        ontrack_connection(sandbox)

        with pytest.raises(OnTrackApiError) as caught:
            OnTrackTransferSensor(task_id="wait", transfer_id="no-such-transfer").poke({})
        assert caught.value.status == 404


class TestDeferrable:
    def _deferred(self, sensor, context=None):
        with pytest.raises(TaskDeferred) as caught:
            sensor.execute(context or {})
        return caught.value

    def _check_serialized(self, trigger, server) -> dict:
        classpath, kwargs = trigger.serialize()
        assert classpath.startswith("airflow_provider_ontrack.triggers.ontrack.")
        _assert_plain(kwargs)
        text = json.dumps(kwargs)
        for secret in (*SECRETS, *server.issued_tokens()):
            assert secret not in text
        assert "token" not in text.lower()
        return kwargs

    def test_asset_sensor_defers_with_the_expected_fields(self, sandbox, ontrack_connection):
        from airflow_provider_ontrack.triggers.ontrack import OnTrackAssetTrigger

        ontrack_connection(sandbox)
        sensor = OnTrackAssetSensor(
            task_id="wait",
            asset_id="a1",
            status="ACTIVE",
            location_id="l1",
            deferrable=True,
            poke_interval=7,
            timeout=120,
        )
        before = time.time()
        deferred = self._deferred(sensor)

        assert isinstance(deferred.trigger, OnTrackAssetTrigger)
        assert deferred.method_name == "execute_complete"
        kwargs = self._check_serialized(deferred.trigger, sandbox)
        assert kwargs["asset_id"] == "a1"
        assert kwargs["expected"] == {"status": "ACTIVE", "currentLocationId": "l1"}
        assert kwargs["poll_interval"] == 7
        assert before + 120 <= kwargs["end_time"] <= time.time() + 120
        assert kwargs["ontrack_conn_id"] == "ontrack_default"

    def test_changes_sensor_defers_with_since_as_api_text(self, sandbox, ontrack_connection):
        from airflow_provider_ontrack.triggers.ontrack import OnTrackChangesTrigger

        ontrack_connection(sandbox)
        since = dt.datetime(2025, 3, 1, 7, 30, tzinfo=dt.timezone(dt.timedelta(hours=1)))
        deferred = self._deferred(
            OnTrackChangesSensor(task_id="wait", resource="assets", deferrable=True),
            {"data_interval_start": since},
        )

        assert isinstance(deferred.trigger, OnTrackChangesTrigger)
        kwargs = self._check_serialized(deferred.trigger, sandbox)
        assert kwargs["since"] == "2025-03-01T06:30:00Z"
        assert kwargs["resource"] == "assets"
        assert deferred.kwargs == {"details": {"resource": "assets", "since": "2025-03-01T06:30:00Z"}}

    def test_transfer_sensor_defers_after_a_token_was_used(self, fresh_sandbox, ontrack_connection):
        from airflow_provider_ontrack.triggers.ontrack import OnTrackTransferTrigger

        ontrack_connection(fresh_sandbox, conn_id="ontrack_other")
        OnTrackHook("ontrack_other").get_token()  # a token the worker holds must not travel
        deferred = self._deferred(
            OnTrackTransferSensor(
                task_id="wait", transfer_id="t1", ontrack_conn_id="ontrack_other", deferrable=True
            )
        )

        assert isinstance(deferred.trigger, OnTrackTransferTrigger)
        kwargs = self._check_serialized(deferred.trigger, fresh_sandbox)
        assert kwargs["transfer_id"] == "t1" and kwargs["ontrack_conn_id"] == "ontrack_other"
        assert fresh_sandbox.issued_tokens()

    @pytest.mark.parametrize("deferrable", [True, False])
    @pytest.mark.parametrize(
        ("sensor", "arguments", "field"),
        [
            (OnTrackAssetSensor, {"asset_id": "..", "status": "ACTIVE"}, "asset_id"),
            (OnTrackAssetSensor, {"asset_id": "", "status": "ACTIVE"}, "asset_id"),
            (OnTrackAssetSensor, {"asset_id": 12345, "status": "ACTIVE"}, "asset_id"),
            (OnTrackAssetSensor, {"asset_id": "a1", "status": " "}, "status"),
            (OnTrackTransferSensor, {"transfer_id": None}, "transfer_id"),
            (OnTrackTransferSensor, {"transfer_id": "."}, "transfer_id"),
            (OnTrackChangesSensor, {"resource": "bogus", "since": SINCE}, "resource"),
            (OnTrackChangesSensor, {"resource": "transfers", "since": SINCE}, "resource"),
            (OnTrackChangesSensor, {"resource": "assets", "since": "soon"}, "since"),
        ],
    )
    def test_unusable_arguments_are_refused_before_any_wait(
        self, sandbox, ontrack_connection, sensor, arguments, field, deferrable
    ):
        ontrack_connection(sandbox)
        sandbox.reset_stats()
        made = sensor(task_id="wait", deferrable=deferrable, poke_interval=0.1, timeout=1, **arguments)

        with pytest.raises(OnTrackConfigError) as caught:
            made.execute({})

        assert caught.value.field == field
        assert sandbox.stats()["total_calls"] == 0

    def test_execute_complete_success_returns_the_details(self):
        sensor = OnTrackTransferSensor(task_id="wait", transfer_id="t1", deferrable=True)
        event = {"status": "success", "transfer_id": "t1", "transfer_status": "COMPLETED"}

        assert sensor.execute_complete({}, event, details={"transfer_id": "t1"}) == {
            "transfer_id": "t1",
            "transfer_status": "COMPLETED",
        }

    def test_execute_complete_timeout(self):
        sensor = OnTrackAssetSensor(task_id="wait", asset_id="a1", status="ACTIVE", deferrable=True)

        with pytest.raises(AirflowSensorTimeout, match="still IN_REPAIR"):
            sensor.execute_complete({}, {"status": "timeout", "message": "asset a1 still IN_REPAIR"})

    def test_execute_complete_error(self):
        sensor = OnTrackChangesSensor(task_id="wait", resource="assets", since="2025-01-01T00:00:00Z")

        with pytest.raises(OnTrackError, match="404"):
            sensor.execute_complete({}, {"status": "error", "message": "GET /assets answered 404"})
        with pytest.raises(OnTrackError, match="no event"):
            sensor.execute_complete({}, None)

    def test_execute_complete_error_with_never_fail_skips(self):
        sensor = OnTrackTransferSensor(task_id="wait", transfer_id="t1", deferrable=True, never_fail=True)

        with pytest.raises(AirflowSkipException):
            sensor.execute_complete({}, {"status": "error", "message": "credentials refused"})


@pytest.fixture(scope="module")
def sensor_airflow_home(tmp_path_factory) -> Path:
    """An Airflow home with a migrated SQLite metadata database and a DAGs folder of its own."""
    home = tmp_path_factory.mktemp("sensor-airflow-home")
    (home / "dags").mkdir()
    subprocess.run(
        [AIRFLOW, "db", "migrate"], env=_airflow_env(home), check=True, capture_output=True, timeout=300
    )
    return home


def _airflow_env(home: Path, **extra: str) -> dict[str, str]:
    """The shared Airflow environment, with this module's own DAGs folder inside the home."""
    return shared_airflow_env(home, AIRFLOW__CORE__DAGS_FOLDER=str(home / "dags"), **extra)


DAG_FILE = '''
"""Move an asset, then wait in the triggerer until ON!Track completes the transfer."""

import pendulum
from airflow.sdk import DAG

from airflow_provider_ontrack.operators.ontrack import OnTrackTransferAssetsOperator
from airflow_provider_ontrack.sensors.ontrack import OnTrackTransferSensor

with DAG("ontrack_wait_for_transfer", schedule=None, start_date=pendulum.datetime(2025, 1, 1, tz="UTC")):
    move = OnTrackTransferAssetsOperator(
        task_id="move", asset_ids=["ASSET_ID"], to_location_id="LOCATION_ID"
    )
    wait = OnTrackTransferSensor(
        task_id="wait_for_transfer",
        transfer_id="{{ ti.xcom_pull(task_ids='move')['transferId'] }}",
        deferrable=True,
        poke_interval=0.5,
        timeout=60,
    )
    move >> wait
'''


class TestDagRun:
    def test_deferrable_transfer_sensor_in_a_dag_run(self, sensor_airflow_home, fresh_sandbox):
        # Longer than the few seconds Airflow takes from the transfer task to the trigger's first
        # poll, so that the trigger sees the transfer IN_TRANSIT before it completes.
        fresh_sandbox.set_config(transfer_completion_delay=10)
        env = _airflow_env(
            sensor_airflow_home, AIRFLOW_CONN_ONTRACK_DEFAULT=json.dumps(connection_for(fresh_sandbox))
        )
        asset = _asset(fresh_sandbox)
        target = _other(fresh_sandbox, "locations", asset["currentLocationId"])
        dag_file = textwrap.dedent(DAG_FILE).replace("ASSET_ID", asset["id"]).replace("LOCATION_ID", target)
        (sensor_airflow_home / "dags" / "wait_for_transfer.py").write_text(dag_file)

        run = subprocess.run(
            [AIRFLOW, "dags", "test", "ontrack_wait_for_transfer"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        output = run.stdout + run.stderr

        assert run.returncode == 0, output[-3000:]
        with sqlite3.connect(sensor_airflow_home / "airflow.db") as db:
            states = dict(
                db.execute(
                    "SELECT task_id, state FROM task_instance WHERE dag_id = 'ontrack_wait_for_transfer'"
                ).fetchall()
            )
        assert states == {"move": "success", "wait_for_transfer": "success"}, output[-3000:]
        assert "Deferring to OnTrackTransferTrigger" in output, output[-3000:]
        assert "'transfer_status': 'COMPLETED'" in output
        # The trigger polled while the transfer was IN_TRANSIT, then once more when it had completed.
        stats = fresh_sandbox.stats()
        assert stats["calls"]["POST /transfers"] == 1
        assert stats["calls"]["GET /transfers/{id}"] >= 2, stats
        assert not [secret for secret in (*SECRETS, *fresh_sandbox.issued_tokens()) if secret in output]

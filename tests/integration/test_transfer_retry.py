"""A transfer task that fails after ON!Track made the transfer, retried by a real Airflow."""

from __future__ import annotations

import json
import subprocess
import textwrap

from tests.conftest import connection_for
from tests.integration.test_airflow import AIRFLOW, _airflow_env
from tests.integration.test_writeback import airflow_home  # noqa: F401 - a fixture

DAG_FILE = textwrap.dedent(
    """
    import datetime as dt

    from airflow.sdk import DAG, task

    from airflow_provider_ontrack.operators.ontrack import OnTrackTransferAssetsOperator


    class FailsAfterTheTransfer(OnTrackTransferAssetsOperator):
        # The first try loses its worker once ON!Track has answered, before Airflow hears of it.
        def execute(self, context):
            answer = super().execute(context)
            if context["ti"].try_number == 1:
                raise RuntimeError("worker lost after the transfer was made")
            return answer


    with DAG(dag_id="ontrack_transfer_retry", schedule=None, start_date=dt.datetime(2026, 1, 1)):
        moved = FailsAfterTheTransfer(
            task_id="move",
            asset_ids=["{{ params.asset_id }}"],
            to_location_id="{{ params.target }}",
            retries=1,
            retry_delay=dt.timedelta(seconds=0),
        )

        @task
        def report(answer: dict) -> None:
            print("transfer of the run:", answer["transferId"], answer["status"])

        report(moved.output)
    """
)


def test_a_retry_returns_the_transfer_the_failed_try_made(  # noqa: F811 - airflow_home is a fixture
    airflow_home, fresh_sandbox, tmp_path
):
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "ontrack_transfer_retry.py").write_text(DAG_FILE)
    asset = fresh_sandbox.tenant.all("assets")[3]
    target = next(
        loc["id"] for loc in fresh_sandbox.tenant.all("locations") if loc["id"] != asset["currentLocationId"]
    )
    env = _airflow_env(
        airflow_home,
        AIRFLOW__CORE__DAGS_FOLDER=str(dags),
        AIRFLOW_CONN_ONTRACK_DEFAULT=json.dumps(connection_for(fresh_sandbox)),
    )

    conf = json.dumps({"asset_id": asset["id"], "target": target})
    run = subprocess.run([AIRFLOW, "dags", "test", "ontrack_transfer_retry", "-c", conf], env=env,
                         capture_output=True, text=True, timeout=600)

    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-4000:]
    assert "worker lost after the transfer was made" in output  # the first try did fail
    assert fresh_sandbox.stats()["calls"]["POST /transfers"] == 1
    assert "Try 2: an earlier try made transfer" in output
    reported = {line.split()[-2] for line in output.splitlines() if "transfer of the run:" in line}
    assert len(reported) == 1 and fresh_sandbox.tenant.get_transfer(reported.pop()) is not None

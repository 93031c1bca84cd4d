"""Copy ON!Track workers, locations and assets into SQL tables once a day.

Connections used:

* ``ontrack_default``: the ON!Track tenant (connection type ``ontrack``).
* ``ontrack_warehouse``: the target database; any connection with a common-sql hook works
  (SQLite, PostgreSQL, MySQL, Snowflake, ...).

Each task upserts by ON!Track id, so the DAG is safe to re-run and to retry. The three reads run one
after another because each task process paces its own calls: run side by side, they would add up to
more than the API's two calls per second.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import DAG

from airflow_provider_ontrack.operators.sql import OnTrackToSqlOperator

with DAG(
    dag_id="ontrack_assets_sync",
    description="Full copy of ON!Track workers, locations and assets into SQL tables",
    schedule="@daily",
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 2, "retry_delay": dt.timedelta(minutes=5)},
    tags=["ontrack", "example"],
) as dag:
    previous = None
    for resource in ("workers", "locations", "assets"):
        task = OnTrackToSqlOperator(
            task_id=f"sync_{resource}",
            resource=resource,
            sql_conn_id="ontrack_warehouse",
            table=f"ontrack_{resource}",
        )
        if previous is not None:
            previous >> task
        previous = task

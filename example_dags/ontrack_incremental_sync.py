"""Copy only what changed in ON!Track since the last run, every hour, with a full read each Sunday.

Each run reads the workers, locations and assets changed between the end of the last successful
run's data interval and the end of its own, reaching back one more hour in case a change was
recorded late. The API serves changes in windows of at most 90 days, so a long gap (a paused DAG,
a backfill) is read in several windows. The first run reads everything, and so does the run whose
interval ends at midnight before a Sunday, because some changes (services, labels set by
multi-select, template edits) never show in ON!Track's change window.

Connections: ``ontrack_default`` (the tenant) and ``ontrack_warehouse`` (any common-sql database).
The tables are the ones ``ontrack_assets_sync`` fills; both DAGs upsert by ON!Track id.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import DAG

from airflow_provider_ontrack.operators.sql import OnTrackToSqlOperator

with DAG(
    dag_id="ontrack_incremental_sync",
    description="Hourly copy of ON!Track changes into SQL tables, with a weekly full read",
    schedule="@hourly",
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 2, "retry_delay": dt.timedelta(minutes=5)},
    tags=["ontrack", "example"],
) as dag:
    previous = None
    for resource in ("workers", "locations", "assets"):
        task = OnTrackToSqlOperator(
            task_id=f"sync_{resource}_changes",
            resource=resource,
            sql_conn_id="ontrack_warehouse",
            table=f"ontrack_{resource}",
            incremental=True,
            overlap=dt.timedelta(hours=1),
            full_read="{{ data_interval_end.weekday() == 6 and data_interval_end.hour == 0 }}",
        )
        if previous is not None:
            previous >> task
        previous = task

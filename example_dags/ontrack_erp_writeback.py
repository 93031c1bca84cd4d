"""Write an ERP export into ON!Track once a day: workers, then locations, then assets.

The export lives in ``data/`` beside this file: workers and locations as CSV, assets as JSON Lines.
Records name each other by their ERP keys (``managerExternalId``, ``currentLocationExternalId``,
``responsibleWorkerExternalId``, ``parentAssetExternalId``), which the operator turns into ON!Track
ids. Every record is matched by its ``externalId``: missing ones are created, changed ones updated,
and running the DAG again, or retrying a task after a crash, creates nothing twice.

Rejected records (and why) go to ``<ONTRACK_REJECTS_DIR>/<resource>.rejected.jsonl``, a temporary
folder unless the environment variable says otherwise. Set the DAG param ``dry_run`` to see what
would change without writing.
"""

from __future__ import annotations

import datetime as dt
import os
import tempfile
from pathlib import Path

from airflow.sdk import DAG, Param

from airflow_provider_ontrack.operators.writeback import OnTrackUpsertOperator

DATA = Path(__file__).parent / "data"
REJECTS = Path(os.environ.get("ONTRACK_REJECTS_DIR", Path(tempfile.gettempdir()) / "ontrack_rejects"))
SOURCES = {
    "workers": DATA / "erp_workers.csv",
    "locations": DATA / "erp_locations.csv",
    "assets": DATA / "erp_assets.jsonl",
}

with DAG(
    dag_id="ontrack_erp_writeback",
    description="Create and update ON!Track workers, locations and assets from an ERP export",
    schedule="@daily",
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 2, "retry_delay": dt.timedelta(minutes=5)},
    params={"dry_run": Param(False, type="boolean", description="Only report what would change")},
    tags=["ontrack", "example"],
) as dag:
    previous = None
    # Creation order matters: a location needs its manager (a worker), an asset its location.
    for resource, source in SOURCES.items():
        task = OnTrackUpsertOperator(
            task_id=f"upsert_{resource}",
            resource=resource,
            source=str(source),
            reject_path=str(REJECTS / f"{resource}.rejected.jsonl"),
            dry_run="{{ params.dry_run }}",
        )
        if previous is not None:
            previous >> task
        previous = task

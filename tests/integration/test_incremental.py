"""Incremental reads into SQL over real HTTP against the sandbox: windows, first runs, overlap, the DAG.

The operator runs in-process with a hand-made task context (the data interval keys Airflow passes);
the example DAG runs under ``airflow dags test`` with the Airflow home that ``test_writeback`` migrates.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_ontrack.client.core import OnTrackClient
from airflow_provider_ontrack.client.errors import OnTrackConfigError
from airflow_provider_ontrack.client.windows import MAX_WINDOW, api_time
from airflow_provider_ontrack.operators.sql import OnTrackToSqlOperator
from airflow_provider_ontrack.sandbox import OnTrackSandbox
from airflow_provider_ontrack.sandbox.tenant import parse_timestamp
from tests.integration import test_writeback as writeback

SQL_CONN_ID = "ontrack_incremental_sqlite"
UTC = dt.timezone.utc
API_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")

# The migrated Airflow home of the write-back tests: one migration serves both modules.
airflow_home = writeback.airflow_home
run_dag = writeback.run_dag


@pytest.fixture
def database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty SQLite file behind the connection ``SQL_CONN_ID``."""
    path = tmp_path / "warehouse.db"
    monkeypatch.setenv(
        f"AIRFLOW_CONN_{SQL_CONN_ID.upper()}", json.dumps({"conn_type": "sqlite", "host": str(path)})
    )
    return path


@pytest.fixture
def tenant(fresh_sandbox: OnTrackSandbox, ontrack_connection) -> OnTrackSandbox:
    """A sandbox of the test's own, registered as ``ontrack_default``."""
    ontrack_connection(fresh_sandbox)
    return fresh_sandbox


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, dict[str, Any]]]:
    """Every API call the client makes, as ``(method, path, query)``."""
    seen: list[tuple[str, str, dict[str, Any]]] = []
    original = OnTrackClient.request

    def recording(self, method, path, *, params=None, json=None):
        seen.append((method.upper(), path, dict(params or {})))
        return original(self, method, path, params=params, json=json)

    monkeypatch.setattr(OnTrackClient, "request", recording)
    return seen


def _context(start: dt.datetime, end: dt.datetime, previous_end: dt.datetime | None) -> dict[str, Any]:
    return {
        "data_interval_start": start,
        "data_interval_end": end,
        "prev_data_interval_end_success": previous_end,
    }


def _sync(context: dict[str, Any], table: str = "ontrack_assets", **kwargs: Any) -> dict[str, Any]:
    operator = OnTrackToSqlOperator(
        task_id="sync_assets",
        resource="assets",
        sql_conn_id=SQL_CONN_ID,
        table=table,
        incremental=True,
        **kwargs,
    )
    return operator.execute(context)


def _rows(database: Path, table: str = "ontrack_assets") -> dict[str, dict[str, Any]]:
    with closing(sqlite3.connect(database)) as conn:
        conn.row_factory = sqlite3.Row
        return {row["id"]: dict(row) for row in conn.execute(f'SELECT * FROM "{table}"')}


def _changed(server: OnTrackSandbox, start: dt.datetime, end: dt.datetime) -> set[str]:
    return {
        asset["id"]
        for asset in server.tenant.all("assets")
        if start <= parse_timestamp(asset["lastModifiedDate"]) < end
    }


def _windows(calls: list[tuple[str, str, dict[str, Any]]]) -> list[tuple[str, str]]:
    found = {
        (query["startDate"], query["endDate"])
        for method, path, query in calls
        if (method, path) == ("GET", "/assets") and "startDate" in query
    }
    return sorted(found)


def _now() -> dt.datetime:
    return dt.datetime.now(UTC).replace(microsecond=0)


class TestChangeWindows:
    def test_200_day_interval_is_read_in_three_windows_of_at_most_90_days(self, tenant, database, calls):
        # End 20 days before the tenant's "now" so that the span holds only part of the tenant.
        end = tenant.tenant.now - dt.timedelta(days=20)
        start = end - dt.timedelta(days=200)
        expected = _changed(tenant, start - dt.timedelta(hours=1), end)

        summary = _sync(_context(start, end, start))

        windows = _windows(calls)
        assert len(windows) == 3
        assert all(API_TIME.match(edge) for window in windows for edge in window)
        edges = [(parse_timestamp(low), parse_timestamp(high)) for low, high in windows]
        assert edges[0][0] == start - dt.timedelta(hours=1)
        assert edges[-1][1] == end
        assert all(first[1] == second[0] for first, second in zip(edges, edges[1:], strict=False))
        assert all(high - low <= MAX_WINDOW for low, high in edges)
        assert [high - low for low, high in edges][:2] == [MAX_WINDOW, MAX_WINDOW]
        assert 0 < len(expected) < 1500
        assert set(_rows(database)) == expected
        assert summary["mode"] == "incremental"
        assert summary["rows"] == len(expected)
        assert (summary["since"], summary["until"]) == (
            (start - dt.timedelta(hours=1)).isoformat(),
            end.isoformat(),
        )

    def test_earlier_last_success_widens_the_read_to_close_the_gap(self, tenant, database, calls):
        end = _now()
        start = end - dt.timedelta(hours=1)
        previous_end = start - dt.timedelta(days=3)

        summary = _sync(_context(start, end, previous_end), overlap=dt.timedelta(0))

        assert _windows(calls) == [(api_time(previous_end), api_time(end))]
        assert set(_rows(database)) == _changed(tenant, previous_end, end)
        assert summary["since"] == previous_end.isoformat()


class TestFullReads:
    def test_first_run_reads_everything(self, tenant, database, calls):
        end = _now()

        summary = _sync(_context(end - dt.timedelta(hours=1), end, None))

        assert summary["mode"] == "full"
        assert summary["rows"] == 1500
        assert len(_rows(database)) == 1500
        assert _windows(calls) == []
        assert tenant.stats()["calls"] == {"GET /assets": 3}

    @pytest.mark.parametrize("full_read", ["True", "true", "1", "yes", " ON ", True])
    def test_truthy_full_read_forces_a_full_read(self, tenant, database, calls, full_read):
        end = _now()
        start = end - dt.timedelta(hours=1)

        summary = _sync(_context(start, end, start), full_read=full_read)

        assert summary["mode"] == "full"
        assert summary["rows"] == 1500
        assert _windows(calls) == []

    @pytest.mark.parametrize("full_read", ["False", "0", "", "no", "None", False])
    def test_falsy_full_read_keeps_the_read_incremental(self, tenant, database, calls, full_read):
        end = _now()
        start = end - dt.timedelta(hours=1)

        summary = _sync(_context(start, end, start), full_read=full_read)

        assert summary["mode"] == "incremental"
        assert len(_windows(calls)) == 1

    @pytest.mark.parametrize(
        ("template", "mode"),
        [
            ("{{ data_interval_end.weekday() == data_interval_end.weekday() }}", "full"),
            ("{{ data_interval_end.year == 1999 }}", "incremental"),
        ],
    )
    def test_templated_full_read_is_rendered_then_read_as_a_boolean(self, tenant, database, template, mode):
        end = _now()
        context = _context(end - dt.timedelta(hours=1), end, end - dt.timedelta(hours=1))
        operator = OnTrackToSqlOperator(
            task_id="sync_assets",
            resource="assets",
            sql_conn_id=SQL_CONN_ID,
            incremental=True,
            full_read=template,
        )
        operator.render_template_fields(context)

        summary = operator.execute(context)

        assert summary["mode"] == mode

    def test_unreadable_full_read_is_refused_before_any_call(self, tenant, database, calls):
        end = _now()

        with pytest.raises(OnTrackConfigError) as raised:
            _sync(_context(end - dt.timedelta(hours=1), end, end), full_read="maybe")

        assert raised.value.field == "full_read"
        assert "'maybe'" in str(raised.value)
        assert calls == []
        assert tenant.stats()["total_calls"] == 0


class TestLaterRuns:
    def test_later_run_reads_only_the_changes(self, tenant, database, calls):
        first_end = _now()
        _sync(_context(first_end - dt.timedelta(days=1), first_end, None))
        renamed = {
            asset["id"]: f"Renamed by the site office {n}"
            for n, asset in enumerate(tenant.tenant.all("assets")[100:103])
        }
        for asset_id, name in renamed.items():
            tenant.tenant.update("assets", asset_id, {"name": name})
        end = _now() + dt.timedelta(minutes=1)
        expected = _changed(tenant, first_end - dt.timedelta(hours=1), end)
        calls.clear()

        summary = _sync(_context(first_end, end, first_end))

        assert summary["mode"] == "incremental"
        assert set(renamed) <= expected
        assert summary["rows"] == len(expected) < 20
        assert len([call for call in calls if call[:2] == ("GET", "/assets")]) == 1
        rows = _rows(database)
        assert len(rows) == 1500
        assert {asset_id: rows[asset_id]["name"] for asset_id in renamed} == renamed

    def test_change_30_minutes_before_the_interval_is_caught_by_the_default_overlap(self, tenant, database):
        asset_id = tenant.tenant.all("assets")[7]["id"]
        changed = tenant.tenant.update("assets", asset_id, {"status": "LOST"})
        start = parse_timestamp(changed["lastModifiedDate"]) + dt.timedelta(minutes=30)
        context = _context(start, start + dt.timedelta(hours=1), start)

        with_overlap = _sync(context, table="with_overlap")
        without_overlap = _sync(context, table="without_overlap", overlap=dt.timedelta(0))

        assert asset_id in _rows(database, "with_overlap")
        assert _rows(database, "with_overlap")[asset_id]["status"] == "LOST"
        assert with_overlap["since"] == (start - dt.timedelta(hours=1)).isoformat()
        assert without_overlap["rows"] == 0
        assert without_overlap["since"] == start.isoformat()

    def test_negative_overlap_is_refused(self):
        with pytest.raises(OnTrackConfigError) as raised:
            OnTrackToSqlOperator(
                task_id="sync",
                resource="assets",
                sql_conn_id=SQL_CONN_ID,
                incremental=True,
                overlap=dt.timedelta(minutes=-1),
            )

        assert raised.value.field == "overlap"


class TestExampleDag:
    def test_second_run_reads_only_changes_and_keeps_the_tables_whole(
        self, airflow_home, fresh_sandbox, tmp_path
    ):
        warehouse = tmp_path / "warehouse.db"
        sql = {"AIRFLOW_CONN_ONTRACK_WAREHOUSE": json.dumps({"conn_type": "sqlite", "host": str(warehouse)})}

        first = run_dag(airflow_home, "ontrack_incremental_sync", fresh_sandbox, **sql)

        assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
        assert _counts(warehouse) == {"workers": 25, "locations": 12, "assets": 1500}
        assert fresh_sandbox.stats()["calls"] == {"GET /assets": 3, "GET /locations": 1, "GET /workers": 1}
        renamed = {
            asset["id"]: f"Moved to the yard {n}"
            for n, asset in enumerate(fresh_sandbox.tenant.all("assets")[:3])
        }
        for asset_id, name in renamed.items():
            fresh_sandbox.tenant.update("assets", asset_id, {"name": name})
        location_id = fresh_sandbox.tenant.all("locations")[0]["id"]
        added = fresh_sandbox.tenant.create(
            "assets", {"name": "New breaker", "currentLocationId": location_id}
        )
        fresh_sandbox.reset_stats()
        # The DAG reads everything in its run at midnight before a Sunday; any other hour, only changes.
        now = dt.datetime.now(UTC)
        weekly_full_read = now.weekday() == 6 and now.hour == 0

        second = run_dag(airflow_home, "ontrack_incremental_sync", fresh_sandbox, **sql)

        output = second.stdout + second.stderr
        assert second.returncode == 0, output[-6000:]
        assert _counts(warehouse) == {"workers": 25, "locations": 12, "assets": 1501}
        names = _names(warehouse)
        assert {asset_id: names[asset_id] for asset_id in renamed} == renamed
        assert names[added["id"]] == "New breaker"
        if not weekly_full_read:
            assert fresh_sandbox.stats()["calls"] == {
                "GET /assets": 1,
                "GET /locations": 1,
                "GET /workers": 1,
            }
            assert "Reading ON!Track assets changed from" in output


def _counts(database: Path) -> dict[str, int]:
    with closing(sqlite3.connect(database)) as conn:
        return {
            name: conn.execute(f"SELECT COUNT(*) FROM ontrack_{name}").fetchone()[0]
            for name in ("workers", "locations", "assets")
        }


def _names(database: Path) -> dict[str, str]:
    with closing(sqlite3.connect(database)) as conn:
        return dict(conn.execute("SELECT id, name FROM ontrack_assets").fetchall())

"""The SQL sink on a real PostgreSQL server, read over real HTTP from the sandbox.

Every test gets a database of its own on the session's private server (tests/integration/conftest.py)
and a sandbox of its own. SQLite is the reference: the same sync into both must leave the same rows.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from airflow.providers.postgres.hooks.postgres import PostgresHook

from airflow_provider_ontrack.operators.sql import OnTrackToSqlOperator, SqlTableWriter

SQLITE_CONN_ID = "ontrack_sqlite_reference"
RESOURCES = ("workers", "locations", "assets")
LOG = logging.getLogger(__name__)

Table = tuple[list[str], list[tuple[Any, ...]]]

def _sync(resource: str, sql_conn_id: str, table: str | None = None) -> dict[str, Any]:
    operator = OnTrackToSqlOperator(
        task_id=f"sync_{resource}", resource=resource, sql_conn_id=sql_conn_id, table=table
    )
    return operator.execute({})


def _sorted(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    # NULLs cannot be compared with text, so order by (is NULL, text) per cell.
    return sorted(rows, key=lambda row: [(cell is None, cell or "") for cell in row])


def _pg_table(hook: PostgresHook, table: str) -> Table:
    with closing(hook.get_conn()) as conn, closing(conn.cursor()) as cursor:
        cursor.execute(f"SELECT * FROM {table}")
        columns = [str(description[0]) for description in cursor.description]
        return columns, _sorted([tuple(row) for row in cursor.fetchall()])


def _sqlite_table(path: Path, table: str) -> Table:
    with closing(sqlite3.connect(path)) as conn:
        cursor = conn.execute(f'SELECT * FROM "{table}"')
        columns = [description[0] for description in cursor.description]
        return columns, _sorted(cursor.fetchall())


def _row(hook: PostgresHook, table: str, record_id: str) -> dict[str, Any]:
    columns, rows = _pg_table(hook, table)
    (match,) = [row for row in rows if row[columns.index("id")] == record_id]
    return dict(zip(columns, match, strict=True))


def _count(hook: PostgresHook, table: str) -> int:
    return hook.get_first(f"SELECT COUNT(*) FROM {table}")[0]


def _columns(hook: PostgresHook, schema: str, table: str) -> list[str]:
    found = hook.get_records(
        "SELECT column_name FROM information_schema.columns "
        "WHERE table_schema = %s AND table_name = %s ORDER BY ordinal_position",
        parameters=(schema, table),
    )
    return [name for (name,) in found]


@pytest.fixture
def pg(postgres_conn: str) -> PostgresHook:
    """A hook of the test's own PostgreSQL database, to look at what the sync wrote."""
    return PostgresHook(postgres_conn_id=postgres_conn)


@pytest.fixture
def sqlite_conn(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The reference: a SQLite file in the test's temp dir, behind an Airflow connection."""
    path = tmp_path / "reference.db"
    monkeypatch.setenv(
        f"AIRFLOW_CONN_{SQLITE_CONN_ID.upper()}", json.dumps({"conn_type": "sqlite", "host": str(path)})
    )
    return SQLITE_CONN_ID


@pytest.fixture
def sandbox_conn(fresh_sandbox, ontrack_connection) -> Any:
    """The test's own sandbox, registered as ``ontrack_default``."""
    ontrack_connection(fresh_sandbox)
    return fresh_sandbox


class TestSameRowsAsSqlite:
    def test_every_resource_lands_with_the_same_columns_and_rows(
        self, sandbox_conn, postgres_conn, pg, sqlite_conn, tmp_path
    ):
        counts = sandbox_conn.tenant.counts()

        for resource in RESOURCES:
            summary = _sync(resource, postgres_conn)
            _sync(resource, sqlite_conn)

            table = f"ontrack_{resource}"
            pg_columns, pg_rows = _pg_table(pg, table)
            sqlite_columns, sqlite_rows = _sqlite_table(tmp_path / "reference.db", table)
            assert summary["rows"] == len(pg_rows) == counts[resource]
            assert pg_columns == sqlite_columns, resource
            assert pg_rows == sqlite_rows, resource

    def test_a_rerun_changes_no_row_count(self, sandbox_conn, postgres_conn, pg):
        for resource in RESOURCES:
            _sync(resource, postgres_conn)
        before = {resource: _count(pg, f"ontrack_{resource}") for resource in RESOURCES}
        first_assets = _pg_table(pg, "ontrack_assets")

        for resource in RESOURCES:
            _sync(resource, postgres_conn)

        after = {resource: _count(pg, f"ontrack_{resource}") for resource in RESOURCES}
        assert before == after == sandbox_conn.tenant.counts()
        assert _pg_table(pg, "ontrack_assets") == first_assets


class TestChangesBetweenRuns:
    def test_updated_records_show_their_new_values(self, sandbox_conn, postgres_conn, pg):
        _sync("assets", postgres_conn)
        _sync("workers", postgres_conn)
        tenant = sandbox_conn.tenant
        asset, other = tenant.all("assets")[:2]
        worker = tenant.all("workers")[0]
        old_date = _row(pg, "ontrack_assets", asset["id"])["last_modified_date"]

        tenant.update(
            "assets",
            asset["id"],
            {"status": "IN_REPAIR", "description": "Sent to the Hilti repair centre", "labels": ["repair"]},
        )
        tenant.update("assets", other["id"], {"purchasePrice": 1234.5, "externalId": None})
        tenant.update("workers", worker["id"], {"lastName": "Müller-Łukasiewicz"})
        _sync("assets", postgres_conn)
        _sync("workers", postgres_conn)

        changed = _row(pg, "ontrack_assets", asset["id"])
        assert changed["status"] == "IN_REPAIR"
        assert changed["description"] == "Sent to the Hilti repair centre"
        assert json.loads(changed["labels"]) == ["repair"]
        assert changed["last_modified_date"] == tenant.get("assets", asset["id"])["lastModifiedDate"]
        assert changed["last_modified_date"] != old_date
        priced = _row(pg, "ontrack_assets", other["id"])
        assert json.loads(priced["purchase_price"]) == 1234.5
        assert priced["external_id"] is None
        assert _row(pg, "ontrack_workers", worker["id"])["last_name"] == "Müller-Łukasiewicz"
        assert _count(pg, "ontrack_assets") == tenant.count("assets")

    def test_a_field_that_appears_later_gets_a_new_column(self, sandbox_conn, postgres_conn, pg):
        _sync("assets", postgres_conn)
        tenant = sandbox_conn.tenant
        assert "warranty_ends" not in _columns(pg, "public", "ontrack_assets")
        location = tenant.all("locations")[0]["id"]

        new_asset = {"name": "Combihammer TE 60", "currentLocationId": location, "warrantyEnds": "2027-01-01"}
        created = tenant.create("assets", new_asset)
        summary = _sync("assets", postgres_conn)

        columns = _columns(pg, "public", "ontrack_assets")
        assert columns[-1] == "warranty_ends"
        assert _row(pg, "ontrack_assets", created["id"])["warranty_ends"] == "2027-01-01"
        assert summary["rows"] == _count(pg, "ontrack_assets") == tenant.count("assets") == 1501
        assert pg.get_first("SELECT COUNT(*) FROM ontrack_assets WHERE warranty_ends IS NOT NULL")[0] == 1


class TestPostgresSpecifics:
    def test_fields_named_like_sql_keywords(self, pg):
        records = [
            {"id": "k-1", "order": 1, "group": "east", "user": "anna", "select": True, "from": None},
            {"id": "k-2", "order": 2, "group": "west", "user": "ben", "select": False, "from": "2026-01-01"},
        ]

        for table in ("keyword_fields", "order"):
            SqlTableWriter(pg, table, log=LOG).write(records)
            SqlTableWriter(pg, table, log=LOG).write([{"id": "k-1", "order": 3, "group": "north"}])

            quoted = f'"{table}"'
            assert _columns(pg, "public", table) == ["id", "order", "group", "user", "select", "from"]
            assert _pg_table(pg, quoted)[1] == [
                ("k-1", "3", "north", "anna", "true", None),
                ("k-2", "2", "west", "ben", "false", "2026-01-01"),
            ]

    def test_a_nul_character_in_a_text_field_does_not_stop_the_sync(self, sandbox_conn, postgres_conn, pg):
        # JSON allows U+0000 in strings, and SQLite stores it; one such record must not fail a sync.
        asset = sandbox_conn.tenant.all("assets")[0]
        sandbox_conn.tenant.update("assets", asset["id"], {"description": "Case 3\x00 of 4"})

        summary = _sync("assets", postgres_conn)

        assert summary["rows"] == _count(pg, "ontrack_assets") == 1500
        assert _row(pg, "ontrack_assets", asset["id"])["description"] == "Case 3 of 4"

    def test_a_column_the_user_added_survives_a_resync(self, sandbox_conn, postgres_conn, pg):
        _sync("assets", postgres_conn)
        asset = sandbox_conn.tenant.all("assets")[0]
        pg.run("ALTER TABLE ontrack_assets ADD COLUMN checked_by TEXT", autocommit=True)
        pg.run(
            "UPDATE ontrack_assets SET checked_by = %s WHERE id = %s",
            parameters=("site office", asset["id"]),
            autocommit=True,
        )

        sandbox_conn.tenant.update("assets", asset["id"], {"status": "LOST"})
        _sync("assets", postgres_conn)

        row = _row(pg, "ontrack_assets", asset["id"])
        assert row["checked_by"] == "site office"
        assert row["status"] == "LOST"
        assert pg.get_first("SELECT COUNT(checked_by) FROM ontrack_assets")[0] == 1

    def test_a_schema_qualified_table(self, sandbox_conn, postgres_conn, pg):
        pg.run("CREATE SCHEMA ontrack", autocommit=True)
        tenant = sandbox_conn.tenant

        first = _sync("assets", postgres_conn, table="ontrack.assets")
        location = tenant.all("locations")[0]["id"]
        tenant.create("assets", {"name": "PS 1000", "currentLocationId": location, "warrantyEnds": "2028"})
        second = _sync("assets", postgres_conn, table="ontrack.assets")

        assert first["rows"] == 1500
        assert second["rows"] == _count(pg, "ontrack.assets") == 1501
        assert _columns(pg, "ontrack", "assets")[-1] == "warranty_ends"
        tables = pg.get_records(
            "SELECT table_schema FROM information_schema.tables WHERE table_name = 'assets'"
        )
        assert tables == [("ontrack",)]

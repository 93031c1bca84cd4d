"""Tests of writing ON!Track records into a real SQLite table, and of the column names fields get."""

from __future__ import annotations

import json
import logging
import re
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from airflow.providers.sqlite.hooks.sqlite import SqliteHook

from airflow_provider_ontrack.client.errors import OnTrackConfigError
from airflow_provider_ontrack.operators.sql import SqlTableWriter, column_name

CONN_ID = "ontrack_sqlite_test"
LOG = logging.getLogger(__name__)
SQL_COLUMN = re.compile(r"^[a-z][a-z0-9_]*$")
NASTY_NAMES = [
    "costCenter",
    "cost_center",
    "CostCenter",
    "costcenter",
    "cost__center",
    "id",
    "ID",
    "Id",
    "iD",
    "名前",
    "名前2",
    "",
    "!!",
    "??",
    "_",
    "naïve",
    "naive",
    "fooBAR",
    "fooBar",
    "foo_bar",
    "foo_b_a_r",
    "order",
    "lastModifiedDate",
    "last_modified_date",
    "1st",
    "f_1st",
    "a" * 200,
    "a" * 199 + "b",
    "a" + "B" * 199,
    "x" + "Yz" * 30,
    "x" + "Yz" * 29,
]


class Database:
    """A SQLite file behind an Airflow connection, and a way to look at what was written."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.hook = SqliteHook(sqlite_conn_id=CONN_ID)

    def writer(self, table: str = "ontrack_assets") -> SqlTableWriter:
        return SqlTableWriter(self.hook, table, log=LOG)

    def rows(self, table: str = "ontrack_assets") -> list[dict[str, Any]]:
        with sqlite3.connect(self.path) as conn:
            conn.row_factory = sqlite3.Row
            found = conn.execute(f'SELECT * FROM "{table}" ORDER BY "id"').fetchall()
        return [dict(row) for row in found]

    def row(self, record_id: str, table: str = "ontrack_assets") -> dict[str, Any]:
        (match,) = [row for row in self.rows(table) if row["id"] == record_id]
        return match

    def columns(self, table: str = "ontrack_assets") -> list[str]:
        with sqlite3.connect(self.path) as conn:
            return [info[1] for info in conn.execute(f'PRAGMA table_info("{table}")')]


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Database:
    path = tmp_path / "ontrack.db"
    monkeypatch.setenv(
        f"AIRFLOW_CONN_{CONN_ID.upper()}", json.dumps({"conn_type": "sqlite", "host": str(path)})
    )
    return Database(path)


class TestColumnName:
    def test_different_fields_get_different_columns(self) -> None:
        columns = [column_name(name) for name in NASTY_NAMES]

        assert len(set(columns)) == len(NASTY_NAMES), dict(zip(NASTY_NAMES, columns, strict=True))

    def test_the_same_field_always_gets_the_same_column(self) -> None:
        first = [column_name(name) for name in NASTY_NAMES]

        second = [column_name(name) for name in reversed(NASTY_NAMES)]

        assert first == list(reversed(second))

    @pytest.mark.parametrize("name", NASTY_NAMES)
    def test_every_column_is_a_plain_lower_case_sql_name(self, name: str) -> None:
        column = column_name(name)

        assert SQL_COLUMN.match(column), column
        assert len(column) <= 63

    @pytest.mark.parametrize(
        ("field", "column"),
        [("id", "id"), ("lastModifiedDate", "last_modified_date"), ("order", "order"), ("name", "name")],
    )
    def test_api_camel_case_becomes_snake_case(self, field: str, column: str) -> None:
        assert column_name(field) == column

    @pytest.mark.parametrize("field", ["ID", "Id", "cost_center", "名前"])
    def test_no_other_field_gets_the_id_column(self, field: str) -> None:
        assert column_name(field) != "id"


class TestSqlTableWriter:
    def test_fields_differing_only_in_spelling_keep_both_values(self, db: Database) -> None:
        writer = db.writer()

        writer.write([{"id": "1", "costCenter": "A", "cost_center": "B"}])

        row = db.row("1")
        assert row[column_name("costCenter")] == "A"
        assert row[column_name("cost_center")] == "B"

    def test_columns_do_not_depend_on_the_order_fields_first_appear(self, db: Database) -> None:
        first_run = db.writer()
        first_run.write([{"id": "1", "costCenter": "A"}])
        first_run.write([{"id": "2", "cost_center": "B"}])

        db.writer().write([{"id": "2", "cost_center": "B-updated"}])

        row = db.row("2")
        assert row[column_name("cost_center")] == "B-updated"
        assert row[column_name("costCenter")] is None
        assert db.row("1")[column_name("costCenter")] == "A"

    @pytest.mark.parametrize("table", ["order", "ontrack_assets"])
    def test_keyword_names_for_fields_and_table(self, db: Database, table: str) -> None:
        record = {"id": "1", "order": "o", "default": "d", "select": "s", "group": "g"}

        db.writer(table).write([record])

        assert db.rows(table) == [{"id": "1", "order": "o", "default": "d", "select": "s", "group": "g"}]

    def test_upper_case_id_field_does_not_take_the_primary_key(self, db: Database) -> None:
        db.writer().write([{"ID": "x", "id": "1"}])

        rows = db.rows()
        assert [row["id"] for row in rows] == ["1"]
        assert rows[0][column_name("ID")] == "x"

    def test_id_zero_is_a_valid_id(self, db: Database) -> None:
        db.writer().write([{"id": 0, "name": "zero"}])

        assert db.rows() == [{"id": "0", "name": "zero"}]

    def test_field_appearing_in_a_later_batch_adds_a_column(self, db: Database) -> None:
        writer = db.writer()
        writer.write([{"id": "1", "name": "drill"}])

        writer.write([{"id": "2", "name": "saw", "serialNumber": "SN-2"}])

        assert "serial_number" in db.columns()
        assert db.rows() == [
            {"id": "1", "name": "drill", "serial_number": None},
            {"id": "2", "name": "saw", "serial_number": "SN-2"},
        ]
        assert writer.rows_written == 2

    def test_rerun_updates_rows_in_place(self, db: Database) -> None:
        records = [{"id": str(n), "name": f"asset {n}"} for n in range(1, 6)]
        db.writer().write(records)

        db.writer().write([{**record, "name": record["name"] + " (renamed)"} for record in records])

        rows = db.rows()
        assert len(rows) == 5
        assert {row["name"] for row in rows} == {f"asset {n} (renamed)" for n in range(1, 6)}

    def test_values_are_stored_as_text_or_json(self, db: Database) -> None:
        record = {
            "id": "1",
            "tags": ["a", "b"],
            "meta": {"z": 1, "a": [True, None]},
            "isActive": True,
            "isLost": False,
            "count": 3,
            "price": 12.5,
            "note": "plain text",
            "empty": None,
        }

        db.writer().write([record])

        row = db.row("1")
        assert json.loads(row["tags"]) == ["a", "b"]
        assert json.loads(row["meta"]) == {"z": 1, "a": [True, None]}
        assert (row["is_active"], row["is_lost"]) == ("true", "false")
        assert (row["count"], row["price"]) == ("3", "12.5")
        assert row["note"] == "plain text"
        assert row["empty"] is None

    @pytest.mark.parametrize(
        "record", [{"name": "no id"}, {"id": None, "name": "x"}, {"id": "", "name": "x"}, "not a record"]
    )
    def test_record_without_id_is_refused(self, db: Database, record: Any) -> None:
        writer = db.writer()

        with pytest.raises(OnTrackConfigError) as info:
            writer.write([{"id": "1"}, record])

        assert info.value.field == "id"
        assert not db.path.exists() or "ontrack_assets" not in _tables(db.path)


def _tables(path: Path) -> list[str]:
    with sqlite3.connect(path) as conn:
        return [name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]

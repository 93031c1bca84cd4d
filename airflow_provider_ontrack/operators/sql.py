"""Copy ON!Track records into a table of any database that has a common-sql hook."""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import closing
from itertools import islice
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseHook

from airflow_provider_ontrack.client.errors import OnTrackConfigError
from airflow_provider_ontrack.operators._sync import BaseOnTrackSyncOperator

if TYPE_CHECKING:
    from airflow.providers.common.sql.hooks.sql import DbApiHook
    from airflow.sdk import Context


_TABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")


class OnTrackToSqlOperator(BaseOnTrackSyncOperator):
    """Copy ON!Track workers, locations or assets into a SQL table, upserting by ON!Track id.

    Records are read page by page at the largest page size the API serves and written in batches,
    so memory stays flat however large the tenant. The table is created when missing, with one
    ``TEXT`` column per record field (camelCase names become snake_case: ``lastModifiedDate`` is
    ``last_modified_date``) and ``id`` as primary key; a field that appears later gets its own new
    column. Lists and objects are stored as JSON text, numbers and booleans as their JSON text.
    Running the task again updates the rows in place. With ``incremental=True`` only the records
    changed since the last successful run are read; see :class:`BaseOnTrackSyncOperator`.

    .. note::
        Rows are never deleted: a record that disappears from ON!Track stays in the table.

    :param resource: ``workers``, ``locations`` or ``assets``. (templated)
    :param sql_conn_id: any Airflow connection whose hook is a common-sql ``DbApiHook``. (templated)
    :param table: the target table, optionally with a schema; ``ontrack_<resource>`` by default.
        (templated)
    :param batch_size: rows per database transaction.
    """

    template_fields: Sequence[str] = (*BaseOnTrackSyncOperator.template_fields, "sql_conn_id", "table")

    def __init__(
        self, *, sql_conn_id: str, table: str | None = None, batch_size: int = 500, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        if batch_size < 1:
            raise OnTrackConfigError("batch_size", f"must be at least 1, got {batch_size}")
        self.sql_conn_id = sql_conn_id
        self.table = table
        self.batch_size = batch_size

    def execute(self, context: Context) -> dict[str, Any]:
        table = self.table or f"ontrack_{self.resource}"
        if not _TABLE_NAME.match(table):
            raise OnTrackConfigError(
                "table", f"must be a plain table name, optionally schema.table; got {table!r}"
            )

        started = time.monotonic()
        writer = SqlTableWriter(_db_hook(self.sql_conn_id), table, log=self.log)
        records, read = self.read_records(context)
        calls_before = self.hook.client.calls_made
        for batch in _batches(records, self.batch_size):
            writer.write(batch)

        summary = {
            "resource": self.resource,
            "table": table,
            **read,
            "rows": writer.rows_written,
            "columns": len(writer.fields),
            "api_calls": self.hook.client.calls_made - calls_before,
            "seconds": round(time.monotonic() - started, 1),
        }
        self.log.info(
            "Synced %d %s into %s in %.1f s with %d API calls",
            summary["rows"],
            self.resource,
            table,
            summary["seconds"],
            summary["api_calls"],
        )
        return summary


class SqlTableWriter:
    """Upserts record batches into one table, creating it and adding columns as fields appear."""

    def __init__(self, db_hook: DbApiHook, table: str, *, log: Any) -> None:
        self.db_hook = db_hook
        self.table = ".".join(self._quote(part) for part in table.split("."))
        self.log = log
        self.fields: list[str] = []
        self.rows_written = 0
        self._columns: set[str] | None = None

    @property
    def columns(self) -> dict[str, str]:
        """The column of each field written so far."""
        return {field: column_name(field) for field in self.fields}

    def write(self, records: list[dict[str, Any]]) -> None:
        """Upsert ``records``; each must carry an ``id``."""
        for record in records:
            if not isinstance(record, dict) or record.get("id") in (None, ""):
                raise OnTrackConfigError(
                    "id", f"every record needs an id to be upserted, got {_brief(record)}"
                )

        known = set(self.fields)
        new_fields = [
            field
            for field in dict.fromkeys(key for record in records for key in record)
            if field not in known
        ]
        if new_fields:
            self._add_columns(new_fields)

        rows = [tuple(_cell(record.get(field)) for field in self.fields) for record in records]
        self.db_hook.insert_rows(
            self.table,
            rows,
            target_fields=[self._quote(column_name(field)) for field in self.fields],
            commit_every=len(rows),
            replace=True,
            replace_index=[self._quote("id")],
            executemany=True,
        )
        self.rows_written += len(rows)

    def _add_columns(self, fields: list[str]) -> None:
        if self._columns is None:
            self._columns = self._existing_columns()
            if self._columns is None:
                self._create_table(fields)
                self._columns = {column_name(field) for field in fields} | {"id"}

        for field in fields:
            name = column_name(field)
            if name not in self._columns:
                self.log.info("Adding column %s to %s for the new field %s", name, self.table, field)
                self._run(f"ALTER TABLE {self.table} ADD COLUMN {self._quote(name)} TEXT")
                self._columns.add(name)
            self.fields.append(field)

    def _existing_columns(self) -> set[str] | None:
        with closing(self.db_hook.get_conn()) as conn, closing(conn.cursor()) as cursor:
            try:
                cursor.execute(f"SELECT * FROM {self.table} WHERE 1 = 0")
            except Exception:
                # The table does not exist. Databases differ in how they say so, hence the broad
                # catch; a real problem resurfaces at CREATE TABLE with the database's own message.
                return None
            return {str(description[0]).lower() for description in cursor.description}

    def _create_table(self, fields: list[str]) -> None:
        others = [column_name(field) for field in fields if field != "id"]
        columns = ", ".join(
            [f"{self._quote('id')} VARCHAR(255) NOT NULL PRIMARY KEY"]
            + [f"{self._quote(name)} TEXT" for name in others]
        )
        self.log.info("Creating table %s with %d columns", self.table, len(others) + 1)
        self._run(f"CREATE TABLE IF NOT EXISTS {self.table} ({columns})")

    def _run(self, statement: str) -> None:
        self.db_hook.run(statement, autocommit=True)

    def _quote(self, name: str) -> str:
        # Always quoted: a field may be named after a keyword of one database or another.
        return self.db_hook.escape_word_format.format(name)


_CAMEL_CASE = re.compile(r"^[a-z][a-zA-Z0-9]*$")
_LONGEST_COLUMN = 60


def column_name(field: str) -> str:
    """Turn an API field name into a SQL column name: ``lastModifiedDate`` is ``last_modified_date``.

    Different fields always get different columns, whatever order they first appear in: the API's
    camelCase names become snake_case, and any other name (``cost_center``, ``ID``, ``名前``)
    keeps a readable stem plus a short digest of the exact name, so it cannot meet a camelCase one.
    """
    if _CAMEL_CASE.match(field):
        snake = re.sub(r"[A-Z]", lambda letter: "_" + letter.group().lower(), field)
        if len(snake) <= _LONGEST_COLUMN:
            return snake

    stem = re.sub(r"[^a-z0-9]+", "_", field.lower()).strip("_")[:40] or "field"
    if not stem[0].isalpha():
        stem = "f_" + stem
    digest = hashlib.sha256(field.encode()).hexdigest()[:8]
    return f"{stem}__{digest}"


def _cell(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        # PostgreSQL text cannot hold NUL; drop it everywhere, so that every database holds the same.
        return value.replace("\x00", "")
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def _brief(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 120 else text[:120] + "..."


def _batches(records: Iterable[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    iterator = iter(records)
    while batch := list(islice(iterator, size)):
        yield batch


def _db_hook(conn_id: str) -> DbApiHook:
    from airflow.providers.common.sql.hooks.sql import DbApiHook

    hook = BaseHook.get_connection(conn_id).get_hook()
    if not isinstance(hook, DbApiHook):
        raise OnTrackConfigError(
            "sql_conn_id", f"connection {conn_id!r} has a {type(hook).__name__}, not a common-sql DbApiHook"
        )
    return hook

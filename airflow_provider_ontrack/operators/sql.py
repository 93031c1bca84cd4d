"""Copy ON!Track records into a table of any database that has a common-sql hook."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import closing
from functools import cached_property
from itertools import islice
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseHook, BaseOperator

from airflow_provider_ontrack.client.errors import OnTrackConfigError
from airflow_provider_ontrack.client.settings import DEFAULT_CONN_ID

if TYPE_CHECKING:
    from airflow.providers.common.sql.hooks.sql import DbApiHook
    from airflow.sdk import Context

    from airflow_provider_ontrack.hooks.ontrack import OnTrackHook

SYNCABLE_RESOURCES = ("workers", "locations", "assets")
_TABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")


class OnTrackToSqlOperator(BaseOperator):
    """Copy ON!Track workers, locations or assets into a SQL table, upserting by ON!Track id.

    Records are read page by page at the largest page size the API serves and written in batches,
    so memory stays flat however large the tenant. The table is created when missing, with one
    ``TEXT`` column per record field (camelCase names become snake_case: ``lastModifiedDate`` is
    ``last_modified_date``) and ``id`` as primary key; a field that appears later gets its own new
    column. Lists and objects are stored as JSON text, numbers and booleans as their JSON text.
    Running the task again updates the rows in place.

    .. note::
        Rows are never deleted: a record that disappears from ON!Track stays in the table.

    :param resource: ``workers``, ``locations`` or ``assets``. (templated)
    :param sql_conn_id: any Airflow connection whose hook is a common-sql ``DbApiHook``. (templated)
    :param table: the target table, optionally with a schema; ``ontrack_<resource>`` by default.
        (templated)
    :param filters: query parameters of the list call, such as ``startDate`` and ``endDate``.
        (templated)
    :param ontrack_conn_id: the ON!Track connection. (templated)
    :param page_size: records per API page; the connection's ``max_page_size`` by default.
    :param batch_size: rows per database transaction.
    """

    template_fields: Sequence[str] = ("resource", "sql_conn_id", "table", "filters", "ontrack_conn_id")
    template_fields_renderers = {"filters": "json"}
    ui_color = "#d2051e"
    ui_fgcolor = "#ffffff"

    def __init__(
        self,
        *,
        resource: str,
        sql_conn_id: str,
        table: str | None = None,
        filters: dict[str, Any] | None = None,
        ontrack_conn_id: str = DEFAULT_CONN_ID,
        page_size: int | None = None,
        batch_size: int = 500,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if batch_size < 1:
            raise OnTrackConfigError("batch_size", f"must be at least 1, got {batch_size}")
        self.resource = resource
        self.sql_conn_id = sql_conn_id
        self.table = table
        self.filters = filters or {}
        self.ontrack_conn_id = ontrack_conn_id
        self.page_size = page_size
        self.batch_size = batch_size

    @cached_property
    def hook(self) -> OnTrackHook:
        """The hook of the task's ON!Track connection."""
        from airflow_provider_ontrack.hooks.ontrack import OnTrackHook

        return OnTrackHook(ontrack_conn_id=self.ontrack_conn_id)

    def execute(self, context: Context) -> dict[str, Any]:
        if self.resource not in SYNCABLE_RESOURCES:
            raise OnTrackConfigError(
                "resource", f"must be one of {', '.join(SYNCABLE_RESOURCES)}, got {self.resource!r}"
            )
        table = self.table or f"ontrack_{self.resource}"
        if not _TABLE_NAME.match(table):
            raise OnTrackConfigError(
                "table", f"must be a plain table name, optionally schema.table; got {table!r}"
            )

        started = time.monotonic()
        calls_before = self.hook.client.calls_made
        writer = SqlTableWriter(_db_hook(self.sql_conn_id), table, log=self.log)
        records = self.hook.iter_records(
            self.resource, page_size=self.page_size or self.hook.settings.max_page_size, **self.filters
        )
        for batch in _batches(records, self.batch_size):
            writer.write(batch)

        summary = {
            "resource": self.resource,
            "table": table,
            "rows": writer.rows_written,
            "columns": len(writer.columns),
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
        self.table = table
        self.log = log
        self.columns: dict[str, str] = {}
        self.rows_written = 0
        self._known: set[str] = set()
        self._prepared = False

    def write(self, records: list[dict[str, Any]]) -> None:
        """Upsert ``records``; each must carry an ``id``."""
        columns_of_batch: dict[str, str] = {}
        for record in records:
            if not isinstance(record, dict) or not record.get("id"):
                raise OnTrackConfigError(
                    "id", f"every record needs an id to be upserted, got {_brief(record)}"
                )
            for field in record:
                columns_of_batch.setdefault(field, column_name(field))

        self._ensure_columns(columns_of_batch)
        fields = list(self.columns)
        rows = [tuple(_cell(record.get(field)) for field in fields) for record in records]
        self.db_hook.insert_rows(
            self.table,
            rows,
            target_fields=[self.columns[field] for field in fields],
            commit_every=len(rows),
            replace=True,
            replace_index=["id"],
            executemany=True,
        )
        self.rows_written += len(rows)

    def _ensure_columns(self, wanted: dict[str, str]) -> None:
        if not self._prepared:
            existing = self._existing_columns()
            if existing is None:
                self._create_table(wanted)
                existing = set(wanted.values())
            self.columns = {field: name for field, name in wanted.items() if name in existing}
            self._known = existing
            self._prepared = True

        for field, name in wanted.items():
            if field in self.columns:
                continue
            while name in self.columns.values():
                # Two fields that differ only in spelling (costCenter, cost_center) keep separate columns.
                name += "_"
            if name not in self._known:
                self.log.info("Adding column %s to %s for the new field %s", name, self.table, field)
                self._run(f"ALTER TABLE {self.table} ADD COLUMN {self._quote(name)} TEXT")
                self._known.add(name)
            self.columns[field] = name

    def _existing_columns(self) -> set[str] | None:
        with closing(self.db_hook.get_conn()) as conn, closing(conn.cursor()) as cursor:
            try:
                cursor.execute(f"SELECT * FROM {self.table} WHERE 1 = 0")
            except Exception:
                # The table does not exist. Databases differ in how they say so, hence the broad
                # catch; a real problem resurfaces at CREATE TABLE with the database's own message.
                return None
            return {str(description[0]).lower() for description in cursor.description}

    def _create_table(self, wanted: dict[str, str]) -> None:
        others = [name for name in wanted.values() if name != "id"]
        columns = ", ".join(
            [f"{self._quote('id')} VARCHAR(255) NOT NULL PRIMARY KEY"]
            + [f"{self._quote(name)} TEXT" for name in others]
        )
        self.log.info("Creating table %s with %d columns", self.table, len(others) + 1)
        self._run(f"CREATE TABLE IF NOT EXISTS {self.table} ({columns})")

    def _run(self, statement: str) -> None:
        self.db_hook.run(statement, autocommit=True)

    def _quote(self, name: str) -> str:
        return self.db_hook.dialect.escape_word(name)


def column_name(field: str) -> str:
    """Turn an API field name into a lower-case SQL column name (``lastModifiedDate``, for one)."""
    snake = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", field).lower()
    snake = re.sub(r"[^a-z0-9_]+", "_", snake).strip("_") or "field"
    return f"f_{snake}" if snake[0].isdigit() else snake


def _cell(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
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

"""What every operator that copies ON!Track records elsewhere shares: choosing and reading the records."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from airflow_provider_ontrack.client.errors import OnTrackConfigError
from airflow_provider_ontrack.client.settings import DEFAULT_CONN_ID

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_ontrack.hooks.ontrack import OnTrackHook

SYNCABLE_RESOURCES = ("workers", "locations", "assets")
_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off", "", "none"}


class BaseOnTrackSyncOperator(BaseOperator):
    """Reads the records of one resource for a sync: all of them, or only those the run's interval changed.

    With ``incremental=True`` a run reads the changes from the end of the last successful run's
    data interval (or the start of its own, if that is earlier) to the end of its own data interval,
    less an ``overlap`` margin so that a change recorded late is not missed; the target's upsert
    makes records read twice harmless. The first run, and any run whose ``full_read`` renders true,
    reads everything, because some changes never show in the change window (services, labels set
    by multi-select, edits of templates). A common choice is a weekly full read:
    ``full_read="{{ data_interval_end.weekday() == 6 and data_interval_end.hour == 0 }}"``.

    :param resource: ``workers``, ``locations`` or ``assets``. (templated)
    :param filters: further query parameters of the list call. (templated)
    :param ontrack_conn_id: the ON!Track connection. (templated)
    :param page_size: records per API page; the connection's ``max_page_size`` by default.
    :param incremental: read only what changed since the last successful run.
    :param overlap: how far each incremental read reaches back before its start.
    :param full_read: read everything in this run even when incremental. (templated)
    """

    template_fields: Sequence[str] = ("resource", "filters", "ontrack_conn_id", "full_read")
    template_fields_renderers = {"filters": "json"}
    ui_color = "#d2051e"
    ui_fgcolor = "#ffffff"

    def __init__(
        self,
        *,
        resource: str,
        filters: dict[str, Any] | None = None,
        ontrack_conn_id: str = DEFAULT_CONN_ID,
        page_size: int | None = None,
        incremental: bool = False,
        overlap: dt.timedelta = dt.timedelta(hours=1),
        full_read: bool | str = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not dt.timedelta(0) <= overlap <= dt.timedelta(days=90):
            raise OnTrackConfigError("overlap", f"must be between 0 and 90 days, got {overlap}")
        self.resource = resource
        self.filters = filters or {}
        self.ontrack_conn_id = ontrack_conn_id
        self.page_size = page_size
        self.incremental = incremental
        self.overlap = overlap
        self.full_read = full_read

    @cached_property
    def hook(self) -> OnTrackHook:
        """The hook of the task's ON!Track connection."""
        from airflow_provider_ontrack.hooks.ontrack import OnTrackHook

        return OnTrackHook(ontrack_conn_id=self.ontrack_conn_id)

    def read_records(self, context: Context) -> tuple[Iterator[dict[str, Any]], dict[str, Any]]:
        """Return the records to copy, and a small description of the read for the task's summary."""
        if self.resource not in SYNCABLE_RESOURCES:
            raise OnTrackConfigError(
                "resource", f"must be one of {', '.join(SYNCABLE_RESOURCES)}, got {self.resource!r}"
            )
        page_size = self.page_size or self.hook.settings.max_page_size

        span = self._changed_span(context) if self.incremental else None
        if span is None:
            self.log.info("Reading all ON!Track %s", self.resource)
            return self.hook.iter_records(self.resource, page_size=page_size, **self.filters), {
                "mode": "full"
            }

        start, end = span
        self.log.info(
            "Reading ON!Track %s changed from %s to %s", self.resource, start.isoformat(), end.isoformat()
        )
        records = self.hook.iter_changes(self.resource, start, end, page_size=page_size, **self.filters)
        return records, {"mode": "incremental", "since": start.isoformat(), "until": end.isoformat()}

    def _changed_span(self, context: Context) -> tuple[dt.datetime, dt.datetime] | None:
        """The span an incremental run reads, or ``None`` when this run reads everything."""
        if _as_bool("full_read", self.full_read):
            self.log.info("A full read was asked for (full_read)")
            return None

        previous_end = _unwrap(context.get("prev_data_interval_end_success"))
        if previous_end is None:
            self.log.info("No earlier successful run: this first run reads everything")
            return None

        start = _unwrap(context.get("data_interval_start"))
        end = _unwrap(context.get("data_interval_end"))
        if start is None or end is None:
            raise OnTrackConfigError("incremental", "needs a DAG run with a data interval (a schedule)")
        # A failed or skipped run leaves a gap before this interval; reading from the last success
        # closes it.
        return min(start, previous_end) - self.overlap, end


def _unwrap(value: Any) -> Any:
    """Airflow hands some context values as lazy proxies; take the value inside, ``None`` included."""
    return getattr(value, "__wrapped__", value)


def _as_bool(name: str, value: bool | str, *, allow_empty: bool = True) -> bool:
    """Read a flag that may arrive as a rendered template; ``allow_empty=False`` refuses "" and "None"."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE and (allow_empty or text not in ("", "none")):
        return False
    raise OnTrackConfigError(name, f"must be true or false, got {value!r}")

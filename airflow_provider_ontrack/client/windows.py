"""Change windows: the API reads changes in windows of at most 90 days, so longer spans are split."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from airflow_provider_ontrack.client.errors import OnTrackConfigError

MAX_WINDOW = dt.timedelta(days=90)


def change_windows(
    start: dt.datetime, end: dt.datetime, *, longest: dt.timedelta = MAX_WINDOW
) -> list[tuple[dt.datetime, dt.datetime]]:
    """Split ``[start, end)`` into consecutive UTC windows no longer than ``longest``.

    Both ends must carry a time zone: the API reads a time without one as UTC, which silently
    shifts the window when the caller meant local time. Window edges are whole seconds, the start
    rounded down and the end rounded up, so that no change falls between two windows; a record
    read twice at an edge is harmless to an upsert.
    """
    for name, value in (("start", start), ("end", end)):
        if value.tzinfo is None or value.utcoffset() is None:
            raise OnTrackConfigError(name, f"needs a time zone, got {value.isoformat()} without one")

    if end <= start:
        return []
    start = start.astimezone(dt.timezone.utc).replace(microsecond=0)
    end = end.astimezone(dt.timezone.utc)
    if end.microsecond:
        end = end.replace(microsecond=0) + dt.timedelta(seconds=1)

    windows = []
    while start < end:
        stop = min(start + longest, end)
        windows.append((start, stop))
        start = stop
    return windows


def api_time(value: dt.datetime) -> str:
    """Write a time the way the API's change-window parameters read it: UTC, ISO 8601, with a ``Z``."""
    return value.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def api_query(params: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Turn datetimes into the UTC ISO 8601 text the API reads; refuse ones without a time zone."""
    if not params:
        return None

    query: dict[str, Any] = {}
    for name, value in params.items():
        if value is None:
            continue
        if isinstance(value, dt.datetime):
            if value.tzinfo is None or value.utcoffset() is None:
                raise OnTrackConfigError(name, f"needs a time zone, got {value.isoformat()} without one")
            value = api_time(value)
        elif isinstance(value, dt.date):
            value = value.isoformat()
        query[name] = value
    return query

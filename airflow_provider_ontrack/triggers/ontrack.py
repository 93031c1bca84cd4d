"""Triggers that poll ON!Track from Airflow's triggerer until an asset, a change or a transfer arrives."""

from __future__ import annotations

import asyncio
import importlib
import datetime as dt
import math
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_ontrack.client.errors import OnTrackApiError, OnTrackConfigError, OnTrackError
from airflow_provider_ontrack.client.pacing import backoff_delay
from airflow_provider_ontrack.client.records import check_change_resource, record_path_id

# Longest pause after repeated transient failures; the poll interval still applies when longer.
MAX_BACKOFF = 300.0


class _OnTrackPollingTrigger(BaseTrigger):
    """Polls until ``_check`` says done, the end time passes, or a failure proves permanent.

    Arguments are plain values only (ids, numbers, ISO texts): they are stored in Airflow's
    database, and a token would be both a secret there and stale by the time it is read. The
    trigger gets its own token from the connection. ``429``, ``5xx`` and timeouts keep it waiting
    with back-off; a ``Retry-After`` is honoured up to the connection's ``max_retry_delay``. The
    last check comes at the end time, and only after it does the trigger send a timeout event.
    Arguments that could never work, and answers that are not what the API serves, end it with an
    error event. It keeps no state between polls, so a triggerer that restarts it loses nothing.
    """

    def __init__(self, *, ontrack_conn_id: str, poll_interval: float, end_time: float) -> None:
        super().__init__()
        self.ontrack_conn_id = ontrack_conn_id
        self.poll_interval = poll_interval
        self.end_time = end_time

    def _common_kwargs(self) -> dict[str, Any]:
        return {
            "ontrack_conn_id": self.ontrack_conn_id,
            "poll_interval": self.poll_interval,
            "end_time": self.end_time,
        }

    async def run(self) -> AsyncIterator[TriggerEvent]:
        # Imported in a thread: the first import of aiohttp takes a good part of a second, which
        # would stall every other trigger sharing the triggerer's event loop.
        aio = await asyncio.to_thread(importlib.import_module, "airflow_provider_ontrack.client.aio")
        AsyncOnTrackClient = aio.AsyncOnTrackClient  # noqa: N806 - a class, named as one

        try:
            # The arguments may come from a user's own code or the database, not only from a sensor.
            self._check_arguments()
            settings = await _settings(self.ontrack_conn_id)
        except OnTrackError as exc:
            yield TriggerEvent({"status": "error", "message": str(exc)})
            return
        for secret in settings.secrets:
            await _mask(secret)

        failures = 0
        async with AsyncOnTrackClient(settings, on_secret=_mask, log=self.log) as client:
            while True:
                failure: OnTrackError | None = None
                try:
                    done = await self._check(client)
                except OnTrackError as exc:
                    if not getattr(exc, "transient", False):
                        yield TriggerEvent({"status": "error", "message": str(exc)})
                        return
                    failure = exc
                    failures += 1
                    pause = self._failure_wait(exc, failures, settings.max_retry_delay)
                    wait = max(self.poll_interval, pause)
                else:
                    failures = 0
                    if done is not None:
                        yield TriggerEvent({"status": "success", **done})
                        return
                    wait = self.poll_interval

                left = self.end_time - time.time()
                if left <= 0:
                    message = self._timeout_message()
                    if failure is not None:
                        message += f"; the last check failed: {failure}"
                    yield TriggerEvent({"status": "timeout", "message": message})
                    return
                # Never past the end time: the last check comes then, as late as the wait allows.
                wait = min(wait, left)
                if failure is not None:
                    self.log.warning(
                        "ON!Track did not answer usably (%s); polling again in %.0f s", failure, wait
                    )
                await asyncio.sleep(wait)

    def _failure_wait(self, exc: Exception, failures: int, max_retry_delay: float) -> float:
        """Seconds to wait after a transient failure: the server's ``Retry-After``, or a back-off."""
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is None:
            return backoff_delay(failures, 1.0, MAX_BACKOFF)
        if retry_after > max_retry_delay:
            # The sync client gives up on such a wait; a trigger exists to wait, so it asks again
            # after max_retry_delay instead, and the end time still bounds the whole wait.
            self.log.info(
                "ON!Track asked to wait %.0f s, longer than max_retry_delay; waiting %g s",
                retry_after,
                max_retry_delay,
            )
            return max_retry_delay
        return retry_after

    def _check_arguments(self) -> None:
        """Refuse arguments that could never work, naming the argument; no network call is made."""
        if not _is_number(self.poll_interval) or self.poll_interval < 0:
            raise OnTrackConfigError(
                "poll_interval", f"must be a number of seconds, 0 or more, got {self.poll_interval!r}"
            )
        if not _is_number(self.end_time):
            raise OnTrackConfigError(
                "end_time", f"must be a moment in seconds since the epoch, got {self.end_time!r}"
            )

    async def _check(self, client: Any) -> dict[str, Any] | None:
        raise NotImplementedError

    def _timeout_message(self) -> str:
        raise NotImplementedError


class OnTrackAssetTrigger(_OnTrackPollingTrigger):
    """Fires when an ON!Track asset has every field value in ``expected``.

    :param ontrack_conn_id: the ON!Track connection.
    :param asset_id: the asset's ON!Track id.
    :param expected: field names and the values they must have, such as ``{"status": "ACTIVE"}``.
    :param poll_interval: seconds between reads.
    :param end_time: the moment (seconds since the epoch) to give up with a timeout event.
    """

    def __init__(self, *, asset_id: str, expected: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.asset_id = asset_id
        self.expected = expected

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            "airflow_provider_ontrack.triggers.ontrack.OnTrackAssetTrigger",
            {"asset_id": self.asset_id, "expected": self.expected, **self._common_kwargs()},
        )

    def _check_arguments(self) -> None:
        super()._check_arguments()
        record_path_id(self.asset_id, "asset_id")
        if not isinstance(self.expected, dict) or not all(isinstance(key, str) for key in self.expected):
            raise OnTrackConfigError(
                "expected", f"must map asset field names to values, got {self.expected!r}"
            )

    async def _check(self, client: Any) -> dict[str, Any] | None:
        path = f"{client.settings.assets_path}/{record_path_id(self.asset_id, 'asset_id')}"
        asset = _expect_record(await client.request("GET", path), path, "assets_path")
        if all(asset.get(field) == value for field, value in self.expected.items()):
            return {"asset_id": self.asset_id, "matched": dict(self.expected)}
        return None

    def _timeout_message(self) -> str:
        return f"asset {self.asset_id} did not reach {self.expected} in time"


class OnTrackChangesTrigger(_OnTrackPollingTrigger):
    """Fires when at least one record of a resource changed since ``since``.

    :param resource: ``workers``, ``locations`` or ``assets``.
    :param since: ISO 8601 time with a zone; changes from then on count.
    """

    def __init__(self, *, resource: str, since: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.resource = resource
        self.since = since

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            "airflow_provider_ontrack.triggers.ontrack.OnTrackChangesTrigger",
            {"resource": self.resource, "since": self.since, **self._common_kwargs()},
        )

    def _check_arguments(self) -> None:
        super()._check_arguments()
        check_change_resource(self.resource)
        self._since()

    def _since(self) -> dt.datetime:
        if not isinstance(self.since, str):
            raise OnTrackConfigError("since", f"must be ISO 8601 text, got {self.since!r}")
        text = self.since.strip()
        try:
            # Python 3.10's fromisoformat does not read the "Z" the API writes.
            since = dt.datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
        except ValueError:
            raise OnTrackConfigError("since", f"must be ISO 8601 text, got {self.since!r}") from None
        if since.tzinfo is None or since.utcoffset() is None:
            raise OnTrackConfigError("since", f"needs a time zone, got {self.since!r} without one")
        return since

    async def _check(self, client: Any) -> dict[str, Any] | None:
        from airflow_provider_ontrack.client.windows import api_time, change_windows

        since = self._since()
        now = dt.datetime.now(dt.timezone.utc)
        settings = client.settings
        path = settings.path_for(self.resource)
        # Newest window first: a change is likeliest there, and one hit is enough.
        for start, end in reversed(change_windows(since, now)):
            envelope = await client.request(
                "GET",
                path,
                params={
                    "startDate": api_time(start),
                    "endDate": api_time(end),
                    settings.page_param: 1,
                    settings.page_size_param: 1,
                },
            )
            records = envelope.get(settings.result_key) if isinstance(envelope, dict) else None
            if not isinstance(records, list):
                raise OnTrackApiError(
                    f"the list envelope has no {settings.result_key!r} list (set the connection extra "
                    "result_key if your tenant names it differently)",
                    status=200,
                    method="GET",
                    path=path,
                    body=client.redact(_outline(envelope)),
                )
            if records:
                total = envelope.get(settings.total_key)
                # A total that is no count, or fewer than the records at hand, says nothing.
                counted = _is_count(total) and total >= len(records)
                return {
                    "resource": self.resource,
                    "since": self.since,
                    "count": total if counted else len(records),
                }
        return None

    def _timeout_message(self) -> str:
        return f"no {self.resource} changed since {self.since} in time"


class OnTrackTransferTrigger(_OnTrackPollingTrigger):
    """Fires when an ON!Track transfer is ``COMPLETED``.

    :param transfer_id: the transfer's id, as creating it answered.
    """

    def __init__(self, *, transfer_id: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.transfer_id = transfer_id

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            "airflow_provider_ontrack.triggers.ontrack.OnTrackTransferTrigger",
            {"transfer_id": self.transfer_id, **self._common_kwargs()},
        )

    def _check_arguments(self) -> None:
        super()._check_arguments()
        record_path_id(self.transfer_id, "transfer_id")

    async def _check(self, client: Any) -> dict[str, Any] | None:
        from airflow_provider_ontrack.client.records import TransferStatus

        path = f"{client.settings.transfers_path}/{record_path_id(self.transfer_id, 'transfer_id')}"
        transfer = _expect_record(await client.request("GET", path), path, "transfers_path")
        status = transfer.get("status")
        if status == TransferStatus.COMPLETED.value:
            return {"transfer_id": self.transfer_id, "transfer_status": status}
        return None

    def _timeout_message(self) -> str:
        return f"transfer {self.transfer_id} did not complete in time"


def _expect_record(answer: Any, path: str, path_extra: str) -> dict[str, Any]:
    """Return ``answer`` if it is one record; refuse anything else, which waiting will not change."""
    if not isinstance(answer, dict):
        raise OnTrackApiError(
            f"expected a record, got {type(answer).__name__} (set the connection extra {path_extra} "
            "if your tenant serves these records at another path)",
            status=None,
            method="GET",
            path=path,
        )
    return answer


def _outline(envelope: Any) -> Any:
    """An envelope for an error message, with its lists and objects left out: they can be large."""
    if isinstance(envelope, list):
        return "[...]"
    if not isinstance(envelope, dict):
        return envelope
    return {key: "[...]" if isinstance(value, (list, dict)) else value for key, value in envelope.items()}


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


async def _settings(conn_id: str) -> Any:
    """Read the connection without blocking the event loop, and check it like the hook does."""
    from airflow.sdk import BaseHook

    from airflow_provider_ontrack.client.settings import OnTrackSettings

    conn = await BaseHook.aget_connection(conn_id)
    if hasattr(conn, "aextra_dejson"):
        extra = await conn.aextra_dejson()
    else:
        extra = await asyncio.to_thread(lambda: conn.extra_dejson)
    return OnTrackSettings.from_connection_fields(
        host=conn.host,
        login=conn.login,
        password=conn.password,
        extra=extra,
        port=conn.port,
        schema=conn.schema,
    )


async def _mask(secret: str) -> None:
    try:
        from airflow.sdk.log import amask_secret
    except ImportError:
        from airflow.sdk.log import mask_secret

        mask_secret(secret)
        return
    await amask_secret(secret)

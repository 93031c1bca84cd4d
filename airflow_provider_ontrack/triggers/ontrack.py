"""Triggers that poll ON!Track from Airflow's triggerer until an asset, a change or a transfer arrives."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_ontrack.client.pacing import backoff_delay

# Longest pause after repeated transient failures; the poll interval still applies when longer.
MAX_BACKOFF = 300.0


class _OnTrackPollingTrigger(BaseTrigger):
    """Polls until ``_check`` says done, the end time passes, or a failure proves permanent.

    Arguments are plain values only (ids, numbers, ISO texts): they are stored in Airflow's
    database, and a token would be both a secret there and stale by the time it is read. The
    trigger gets its own token from the connection. ``429``, ``5xx`` and timeouts keep it waiting
    with back-off. It keeps no state between polls, so a triggerer that restarts it loses nothing.
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
        from airflow_provider_ontrack.client.aio import AsyncOnTrackClient
        from airflow_provider_ontrack.client.errors import OnTrackError

        try:
            settings = await _settings(self.ontrack_conn_id)
        except OnTrackError as exc:
            yield TriggerEvent({"status": "error", "message": str(exc)})
            return
        for secret in settings.secrets:
            await _mask(secret)

        failures = 0
        async with AsyncOnTrackClient(settings, on_secret=_mask, log=self.log) as client:
            while True:
                try:
                    done = await self._check(client)
                except OnTrackError as exc:
                    if not getattr(exc, "transient", False):
                        yield TriggerEvent({"status": "error", "message": str(exc)})
                        return
                    failures += 1
                    wait = max(
                        self.poll_interval,
                        getattr(exc, "retry_after", None) or backoff_delay(failures, 1.0, MAX_BACKOFF),
                    )
                    self.log.warning(
                        "ON!Track did not answer usably (%s); polling again in %.0f s", exc, wait
                    )
                else:
                    failures = 0
                    if done is not None:
                        yield TriggerEvent({"status": "success", **done})
                        return
                    wait = self.poll_interval

                if time.time() + wait > self.end_time:
                    yield TriggerEvent({"status": "timeout", "message": self._timeout_message()})
                    return
                await asyncio.sleep(wait)

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

    async def _check(self, client: Any) -> dict[str, Any] | None:
        from urllib.parse import quote

        asset = await client.request("GET", f"{client.settings.assets_path}/{quote(self.asset_id, safe='')}")
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

    async def _check(self, client: Any) -> dict[str, Any] | None:
        from airflow_provider_ontrack.client.windows import api_time, change_windows

        since = dt.datetime.fromisoformat(self.since.replace("Z", "+00:00"))
        now = dt.datetime.now(dt.timezone.utc)
        settings = client.settings
        # Newest window first: a change is likeliest there, and one hit is enough.
        for start, end in reversed(change_windows(since, now)):
            envelope = await client.request(
                "GET",
                settings.path_for(self.resource),
                params={
                    "startDate": api_time(start),
                    "endDate": api_time(end),
                    settings.page_param: 1,
                    settings.page_size_param: 1,
                },
            )
            records = envelope.get(settings.result_key) if isinstance(envelope, dict) else None
            if records:
                total = envelope.get(settings.total_key)
                return {
                    "resource": self.resource,
                    "since": self.since,
                    "count": total if isinstance(total, int) else len(records),
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

    async def _check(self, client: Any) -> dict[str, Any] | None:
        from urllib.parse import quote

        from airflow_provider_ontrack.client.records import TransferStatus

        path = f"{client.settings.transfers_path}/{quote(self.transfer_id, safe='')}"
        transfer = await client.request("GET", path)
        status = transfer.get("status") if isinstance(transfer, dict) else None
        if status == TransferStatus.COMPLETED.value:
            return {"transfer_id": self.transfer_id, "transfer_status": status}
        return None

    def _timeout_message(self) -> str:
        return f"transfer {self.transfer_id} did not complete in time"


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

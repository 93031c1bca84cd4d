"""The triggers' run() over real HTTP against the sandbox, and their arguments through Airflow's serde."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from airflow_provider_ontrack.client import aio
from airflow_provider_ontrack.hooks.ontrack import OnTrackHook
from airflow_provider_ontrack.sandbox import SANDBOX_CLIENT_SECRET, SANDBOX_PASSWORD
from airflow_provider_ontrack.triggers.ontrack import (
    OnTrackAssetTrigger,
    OnTrackChangesTrigger,
    OnTrackTransferTrigger,
)

PLAIN = (str, int, float, bool, type(None))


@pytest.fixture(autouse=True)
def _fresh_async_state():
    aio.forget_async_state()
    yield
    aio.forget_async_state()


def first_event(trigger) -> dict[str, Any]:
    async def run() -> dict[str, Any]:
        events = trigger.run()
        try:
            event = await events.__anext__()
        finally:
            await events.aclose()
        return event.payload

    return asyncio.run(run())


def deadline(seconds: float) -> float:
    return time.time() + seconds


def assert_plain(value: Any) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            assert isinstance(key, str)
            assert_plain(item)
    elif isinstance(value, list):
        for item in value:
            assert_plain(item)
    else:
        assert isinstance(value, PLAIN), value


class TestAssetTrigger:
    def test_fires_when_the_asset_matches(self, fresh_sandbox, ontrack_connection):
        ontrack_connection(fresh_sandbox)
        asset = fresh_sandbox.tenant.all("assets")[0]
        trigger = OnTrackAssetTrigger(
            ontrack_conn_id="ontrack_default",
            asset_id=asset["id"],
            expected={"status": asset["status"]},
            poll_interval=0.1,
            end_time=deadline(10),
        )

        event = first_event(trigger)

        assert event == {"status": "success", "asset_id": asset["id"], "matched": {"status": asset["status"]}}
        assert fresh_sandbox.stats()["calls"] == {"GET /assets/{id}": 1}

    def test_waits_until_the_asset_changes(self, fresh_sandbox, ontrack_connection):
        ontrack_connection(fresh_sandbox)
        asset = next(a for a in fresh_sandbox.tenant.all("assets") if a["status"] == "ACTIVE")
        trigger = OnTrackAssetTrigger(
            ontrack_conn_id="ontrack_default",
            asset_id=asset["id"],
            expected={"status": "IN_REPAIR"},
            poll_interval=0.2,
            end_time=deadline(10),
        )

        async def change_later() -> None:
            await asyncio.sleep(0.7)
            await asyncio.to_thread(
                fresh_sandbox.tenant.update, "assets", asset["id"], {"status": "IN_REPAIR"}
            )

        async def both() -> dict[str, Any]:
            events = trigger.run()
            _, event = await asyncio.gather(change_later(), events.__anext__())
            await events.aclose()
            return event.payload

        event = asyncio.run(both())

        assert event["status"] == "success"
        assert fresh_sandbox.stats()["calls"]["GET /assets/{id}"] >= 3

    def test_times_out_with_a_clear_event(self, sandbox, ontrack_connection):
        ontrack_connection(sandbox)
        asset = sandbox.tenant.all("assets")[0]
        trigger = OnTrackAssetTrigger(
            ontrack_conn_id="ontrack_default",
            asset_id=asset["id"],
            expected={"status": "NEVER"},
            poll_interval=0.2,
            end_time=deadline(0.8),
        )

        event = first_event(trigger)

        assert event["status"] == "timeout"
        assert asset["id"] in event["message"]

    def test_a_missing_asset_is_an_error_event(self, sandbox, ontrack_connection):
        ontrack_connection(sandbox)
        trigger = OnTrackAssetTrigger(
            ontrack_conn_id="ontrack_default",
            asset_id="no-such-asset",
            expected={"status": "ACTIVE"},
            poll_interval=0.1,
            end_time=deadline(5),
        )

        event = first_event(trigger)

        assert event["status"] == "error"
        assert "404" in event["message"]

    def test_html_503_and_429_keep_it_waiting(self, fresh_sandbox, ontrack_connection):
        ontrack_connection(fresh_sandbox)
        asset = fresh_sandbox.tenant.all("assets")[0]
        fresh_sandbox.add_fault(
            method="GET",
            path="/assets/{id}",
            status=503,
            count=1,
            body="<html><title>503</title></html>",
            content_type="text/html",
        )
        fresh_sandbox.add_fault(
            method="GET",
            path="/assets/{id}",
            status=429,
            count=1,
            body="{}",
            content_type="application/json",
            headers={"Retry-After": "1"},
        )
        trigger = OnTrackAssetTrigger(
            ontrack_conn_id="ontrack_default",
            asset_id=asset["id"],
            expected={"status": asset["status"]},
            poll_interval=0.1,
            end_time=deadline(20),
        )

        started = time.monotonic()
        event = first_event(trigger)

        assert event["status"] == "success"
        assert fresh_sandbox.stats()["calls"]["GET /assets/{id}"] == 3
        assert time.monotonic() - started >= 1.0  # Retry-After was honoured

    def test_refused_credentials_are_an_error_event_without_secrets(self, sandbox, ontrack_connection):
        ontrack_connection(sandbox, client_secret="wrong-client-secret")
        trigger = OnTrackAssetTrigger(
            ontrack_conn_id="ontrack_default",
            asset_id="x",
            expected={"status": "ACTIVE"},
            poll_interval=0.1,
            end_time=deadline(5),
        )

        event = first_event(trigger)

        assert event["status"] == "error"
        assert "client_secret" in event["message"]
        assert "wrong-client-secret" not in event["message"]

    def test_a_token_expiring_between_polls_is_renewed(self, fresh_sandbox, ontrack_connection):
        fresh_sandbox.set_config(token_lifetime=1)
        ontrack_connection(fresh_sandbox)
        asset = fresh_sandbox.tenant.all("assets")[0]
        trigger = OnTrackAssetTrigger(
            ontrack_conn_id="ontrack_default",
            asset_id=asset["id"],
            expected={"status": "NEVER"},
            poll_interval=0.5,
            end_time=deadline(3),
        )

        event = first_event(trigger)

        assert event["status"] == "timeout"
        assert fresh_sandbox.stats()["token_requests"] >= 2


class TestOtherTriggers:
    def test_changes_trigger_fires_on_a_change(self, fresh_sandbox, ontrack_connection):
        ontrack_connection(fresh_sandbox)
        since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 5))
        asset = fresh_sandbox.tenant.all("assets")[0]
        fresh_sandbox.tenant.update("assets", asset["id"], {"description": "moved to the yard"})
        trigger = OnTrackChangesTrigger(
            ontrack_conn_id="ontrack_default",
            resource="assets",
            since=since,
            poll_interval=0.1,
            end_time=deadline(5),
        )

        event = first_event(trigger)

        assert event == {"status": "success", "resource": "assets", "since": since, "count": 1}

    def test_transfer_trigger_waits_for_completion(self, fresh_sandbox, ontrack_connection):
        ontrack_connection(fresh_sandbox)
        fresh_sandbox.set_config(transfer_completion_delay=1)
        asset = fresh_sandbox.tenant.all("assets")[0]
        target = next(
            loc["id"]
            for loc in fresh_sandbox.tenant.all("locations")
            if loc["id"] != asset["currentLocationId"]
        )
        transfer = OnTrackHook().create_transfer([asset["id"]], to_location_id=target)
        trigger = OnTrackTransferTrigger(
            ontrack_conn_id="ontrack_default",
            transfer_id=transfer["transferId"],
            poll_interval=0.3,
            end_time=deadline(10),
        )

        event = first_event(trigger)

        assert transfer["status"] == "IN_TRANSIT"
        assert event == {
            "status": "success",
            "transfer_id": transfer["transferId"],
            "transfer_status": "COMPLETED",
        }


class TestSerialization:
    @pytest.mark.parametrize(
        "trigger",
        [
            OnTrackAssetTrigger(
                ontrack_conn_id="ontrack_default",
                asset_id="a-1",
                expected={"status": "ACTIVE", "currentLocationId": "l-1"},
                poll_interval=60,
                end_time=1_900_000_000.5,
            ),
            OnTrackChangesTrigger(
                ontrack_conn_id="ontrack_default",
                resource="assets",
                since="2026-12-01T00:00:00Z",
                poll_interval=600,
                end_time=1_900_000_000.0,
            ),
            OnTrackTransferTrigger(ontrack_conn_id="c", transfer_id="t-1", poll_interval=30, end_time=1.0),
        ],
    )
    def test_round_trip_through_airflow_serde_with_plain_values(self, trigger):
        import importlib

        from airflow.sdk import serde

        classpath, kwargs = trigger.serialize()
        restored_kwargs = serde.deserialize(json.loads(json.dumps(serde.serialize(kwargs))))
        module, _, name = classpath.rpartition(".")
        restored = getattr(importlib.import_module(module), name)(**restored_kwargs)

        assert restored.serialize() == (classpath, kwargs)
        assert_plain(kwargs)
        text = json.dumps(kwargs)
        assert SANDBOX_CLIENT_SECRET not in text and SANDBOX_PASSWORD not in text

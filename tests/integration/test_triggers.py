"""The triggers' run() over real HTTP against the sandbox, and their arguments through Airflow's serde."""

from __future__ import annotations

import asyncio
import gzip
import json
import time
import tracemalloc
from types import SimpleNamespace
from typing import Any

import pytest

from airflow_provider_ontrack.client import aio, core
from airflow_provider_ontrack.hooks.ontrack import OnTrackHook
from airflow_provider_ontrack.sandbox import SANDBOX_CLIENT_SECRET, SANDBOX_PASSWORD
from airflow_provider_ontrack.triggers.ontrack import (
    OnTrackAssetTrigger,
    OnTrackChangesTrigger,
    OnTrackTransferTrigger,
)
from tests.unit.test_hardening import RawServer, http_answer, trickle_chunked

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


# -- hostile answers, arguments and connections --------------------------------------------------------


def asset_trigger(asset_id: Any = "a-1", **overrides: Any) -> OnTrackAssetTrigger:
    values: dict[str, Any] = {
        "ontrack_conn_id": "ontrack_default",
        "asset_id": asset_id,
        "expected": {"status": "ACTIVE"},
        "poll_interval": 0.1,
        "end_time": deadline(3),
    }
    values.update(overrides)
    return OnTrackAssetTrigger(**values)


def raw_connection(ontrack_connection, server, **extra: Any) -> str:
    """Register a connection of a bare loopback server; its token endpoint is ``/token``."""
    where = SimpleNamespace(base_url=server.url + "/v1", token_url=server.url + "/token")
    return ontrack_connection(where, **extra)


class TestHostileAnswers:
    @pytest.mark.parametrize(
        ("body", "kind"), [("[1, 2]", "list"), ("null", "NoneType"), ("42", "int"), ("", "NoneType")]
    )
    def test_an_asset_answer_that_is_no_record_is_an_error_event(
        self, fresh_sandbox, ontrack_connection, body, kind
    ):
        ontrack_connection(fresh_sandbox)
        asset = fresh_sandbox.tenant.all("assets")[0]
        fresh_sandbox.add_fault(
            method="GET", path="/assets/{id}", status=200, body=body, content_type="application/json"
        )

        event = first_event(asset_trigger(asset["id"]))

        assert event["status"] == "error"
        assert f"expected a record, got {kind}" in event["message"]
        assert "assets_path" in event["message"]
        assert fresh_sandbox.stats()["calls"] == {"GET /assets/{id}": 1}

    def test_a_transfer_answer_that_is_no_record_is_an_error_event(self, fresh_sandbox, ontrack_connection):
        ontrack_connection(fresh_sandbox)
        fresh_sandbox.add_fault(
            method="GET", path="/transfers/{id}", status=200, body="[]", content_type="application/json"
        )
        trigger = OnTrackTransferTrigger(
            ontrack_conn_id="ontrack_default", transfer_id="t-1", poll_interval=0.1, end_time=deadline(3)
        )

        event = first_event(trigger)

        assert event["status"] == "error"
        assert "expected a record, got list" in event["message"]
        assert "transfers_path" in event["message"]
        assert fresh_sandbox.stats()["calls"] == {"GET /transfers/{id}": 1}

    @pytest.mark.parametrize("result", [{"a": 1}, "text", 7, None])
    def test_changes_envelope_without_a_result_list_is_an_error_event(
        self, fresh_sandbox, ontrack_connection, result
    ):
        ontrack_connection(fresh_sandbox)
        fresh_sandbox.add_fault(method="GET", path="/assets", status=200, body={"result": result})
        trigger = OnTrackChangesTrigger(
            ontrack_conn_id="ontrack_default",
            resource="assets",
            since="2026-01-01T00:00:00Z",
            poll_interval=0.1,
            end_time=deadline(3),
        )

        event = first_event(trigger)

        assert event["status"] == "error"
        assert "no 'result' list" in event["message"]
        assert "result_key" in event["message"]
        assert fresh_sandbox.stats()["calls"] == {"GET /assets": 1}

    def test_a_result_key_the_server_does_not_use_is_an_error_event(self, fresh_sandbox, ontrack_connection):
        ontrack_connection(fresh_sandbox, result_key="records")
        trigger = OnTrackChangesTrigger(
            ontrack_conn_id="ontrack_default",
            resource="workers",
            since="2020-01-01T00:00:00Z",
            poll_interval=0.1,
            end_time=deadline(3),
        )

        event = first_event(trigger)

        assert event["status"] == "error"
        assert "no 'records' list" in event["message"]
        assert "set the connection extra result_key" in event["message"]
        assert fresh_sandbox.stats()["total_calls"] == 1

    @pytest.mark.parametrize("total", [True, "12", -3, 0])
    def test_a_total_that_is_no_count_is_not_reported(self, fresh_sandbox, ontrack_connection, total):
        ontrack_connection(fresh_sandbox)
        record = fresh_sandbox.tenant.all("assets")[0]
        fresh_sandbox.add_fault(
            method="GET", path="/assets", status=200, body={"result": [record], "totalRecords": total}
        )
        trigger = OnTrackChangesTrigger(
            ontrack_conn_id="ontrack_default",
            resource="assets",
            since="2026-01-01T00:00:00Z",
            poll_interval=0.1,
            end_time=deadline(3),
        )

        event = first_event(trigger)

        assert event["status"] == "success"
        assert type(event["count"]) is int and event["count"] == 1


class TestArgumentChecks:
    @pytest.mark.parametrize("asset_id", ["..", ".", "", "  ", 12345, None])
    def test_an_unusable_asset_id_is_an_error_event_before_any_call(
        self, fresh_sandbox, ontrack_connection, asset_id
    ):
        ontrack_connection(fresh_sandbox)

        event = first_event(asset_trigger(asset_id))

        assert event["status"] == "error"
        assert event["message"].startswith("asset_id: must be a non-empty ON!Track id")
        assert fresh_sandbox.stats()["total_calls"] == 0
        assert fresh_sandbox.stats()["token_requests"] == 0

    @pytest.mark.parametrize("transfer_id", ["..", "", None, 7])
    def test_an_unusable_transfer_id_is_an_error_event(self, fresh_sandbox, ontrack_connection, transfer_id):
        ontrack_connection(fresh_sandbox)
        trigger = OnTrackTransferTrigger(
            ontrack_conn_id="ontrack_default",
            transfer_id=transfer_id,
            poll_interval=0.1,
            end_time=deadline(3),
        )

        event = first_event(trigger)

        assert event["status"] == "error"
        assert event["message"].startswith("transfer_id: ")
        assert fresh_sandbox.stats()["total_calls"] == 0

    @pytest.mark.parametrize(
        ("arguments", "field"),
        [
            ({"resource": "transfers"}, "resource"),
            ({"resource": "bogus"}, "resource"),
            ({"since": "yesterday"}, "since"),
            ({"since": "2026-01-01T00:00:00"}, "since"),
            ({"since": None}, "since"),
            ({"poll_interval": "10"}, "poll_interval"),
            ({"end_time": None}, "end_time"),
        ],
    )
    def test_unusable_changes_arguments_are_an_error_event(
        self, fresh_sandbox, ontrack_connection, arguments, field
    ):
        ontrack_connection(fresh_sandbox)
        values: dict[str, Any] = {
            "ontrack_conn_id": "ontrack_default",
            "resource": "assets",
            "since": "2026-01-01T00:00:00Z",
            "poll_interval": 0.1,
            "end_time": deadline(3),
        }
        values.update(arguments)

        event = first_event(OnTrackChangesTrigger(**values))

        assert event["status"] == "error"
        assert event["message"].startswith(f"{field}: ")
        assert fresh_sandbox.stats()["total_calls"] == 0

    @pytest.mark.parametrize("extra", [["client_id", "x"], "client_id=x", 42])
    def test_an_extra_that_is_no_object_is_an_error_event(self, monkeypatch, extra):
        # The extra as the text Airflow stores, which decodes to something other than an object.
        connection = {"conn_type": "ontrack", "host": "http://127.0.0.1:9/v1", "login": "u", "password": "p"}
        monkeypatch.setenv(
            "AIRFLOW_CONN_ONTRACK_DEFAULT", json.dumps({**connection, "extra": json.dumps(extra)})
        )

        event = first_event(asset_trigger())

        assert event["status"] == "error"
        assert event["message"].startswith("extra: must be a JSON object")
        assert repr(extra) not in event["message"]


class TestRetryAfterAndEndTime:
    @pytest.mark.parametrize("retry_after", ["1000000000", "inf"])
    def test_a_retry_after_beyond_max_retry_delay_is_cut_to_it(
        self, fresh_sandbox, ontrack_connection, retry_after
    ):
        ontrack_connection(fresh_sandbox, max_retry_delay=1)
        asset = fresh_sandbox.tenant.all("assets")[0]
        fresh_sandbox.add_fault(
            method="GET", path="/assets/{id}", status=429, body="{}", headers={"Retry-After": retry_after}
        )
        trigger = asset_trigger(asset["id"], expected={"status": asset["status"]}, end_time=deadline(20))

        started = time.monotonic()
        event = first_event(trigger)

        assert event["status"] == "success"
        assert 1.0 <= time.monotonic() - started < 5
        assert fresh_sandbox.stats()["calls"] == {"GET /assets/{id}": 2}

    def test_a_long_poll_interval_still_checks_at_the_end_time(self, sandbox, ontrack_connection):
        ontrack_connection(sandbox)
        asset = sandbox.tenant.all("assets")[0]
        sandbox.reset_stats()
        end_time = deadline(1.0)
        trigger = asset_trigger(
            asset["id"], expected={"status": "NEVER"}, poll_interval=30, end_time=end_time
        )

        event = first_event(trigger)

        assert event["status"] == "timeout"
        assert time.time() >= end_time
        assert time.time() < end_time + 5
        assert sandbox.stats()["calls"] == {"GET /assets/{id}": 2}

    def test_a_change_before_the_end_time_is_seen_by_the_last_check(self, fresh_sandbox, ontrack_connection):
        ontrack_connection(fresh_sandbox)
        asset = next(a for a in fresh_sandbox.tenant.all("assets") if a["status"] == "ACTIVE")
        trigger = asset_trigger(
            asset["id"], expected={"status": "LOST"}, poll_interval=30, end_time=deadline(1.5)
        )

        async def change_soon() -> None:
            await asyncio.sleep(0.5)
            await asyncio.to_thread(fresh_sandbox.tenant.update, "assets", asset["id"], {"status": "LOST"})

        async def both() -> dict[str, Any]:
            events = trigger.run()
            _, event = await asyncio.gather(change_soon(), events.__anext__())
            await events.aclose()
            return event.payload

        assert asyncio.run(both())["status"] == "success"
        assert fresh_sandbox.stats()["calls"] == {"GET /assets/{id}": 2}

    def test_the_timeout_event_names_the_last_failure(self, fresh_sandbox, ontrack_connection):
        ontrack_connection(fresh_sandbox)
        fresh_sandbox.add_fault(method="GET", path="/assets/{id}", status=503, count=100)

        event = first_event(asset_trigger("a-1", poll_interval=0.2, end_time=deadline(0.8)))

        assert event["status"] == "timeout"
        assert "the last check failed" in event["message"] and "503" in event["message"]


class TestRedactionBeforeCutting:
    def test_a_long_error_message_never_shows_the_start_of_a_secret(self, fresh_sandbox, ontrack_connection):
        ontrack_connection(fresh_sandbox)
        message = "m" * 490 + SANDBOX_PASSWORD
        fresh_sandbox.add_fault(method="GET", path="/assets/{id}", status=400, body={"message": message})

        event = first_event(asset_trigger("a-1"))

        assert event["status"] == "error"
        assert "m" * 490 in event["message"]
        assert SANDBOX_PASSWORD[:10] not in event["message"]

    def test_a_long_raw_body_never_keeps_the_start_of_a_secret(self, fresh_sandbox, ontrack_connection):
        from airflow_provider_ontrack.client.errors import OnTrackApiError
        from airflow_provider_ontrack.triggers.ontrack import _settings

        ontrack_connection(fresh_sandbox)
        body = "<html>" + "x" * (2000 - 6 - 10) + SANDBOX_CLIENT_SECRET + "</html>"
        fresh_sandbox.add_fault(
            method="GET", path="/assets/{id}", status=400, body=body, content_type="text/html"
        )

        async def call() -> OnTrackApiError:
            async with aio.AsyncOnTrackClient(await _settings("ontrack_default")) as client:
                with pytest.raises(OnTrackApiError) as caught:
                    await client.request("GET", "/assets/a-1")
            return caught.value

        error = asyncio.run(call())

        assert error.status == 400
        assert error.body.startswith("<html>xxx")
        assert SANDBOX_CLIENT_SECRET[:10] not in error.body


# -- answers too large, and the overall timeout, from a bare server on loopback ---------------------------


def sized_json(size: int) -> bytes:
    """A JSON record of ``size`` bytes."""
    opening, closing = b'{"status": "', b'"}'
    return opening + b"x" * (size - len(opening) - len(closing)) + closing


class TestAnswerLimits:
    def test_an_answer_above_the_limit_is_an_error_event(self, ontrack_connection, monkeypatch):
        monkeypatch.setattr(core, "MAX_BODY_BYTES", 2**20)

        def serve(server: RawServer, conn) -> None:
            conn.sendall(http_answer(200, sized_json(8 * 2**20)))

        with RawServer(serve) as server:
            raw_connection(ontrack_connection, server)
            event = first_event(asset_trigger("a-1"))

        assert event["status"] == "error"
        assert "larger than 1 MiB" in event["message"]
        assert server.calls == ["GET /v1/assets/a-1"]

    def test_an_answer_at_the_limit_is_read(self, ontrack_connection, monkeypatch):
        monkeypatch.setattr(core, "MAX_BODY_BYTES", 2**20)

        def serve(server: RawServer, conn) -> None:
            conn.sendall(http_answer(200, sized_json(2**20)))

        with RawServer(serve) as server:
            raw_connection(ontrack_connection, server)
            event = first_event(asset_trigger("a-1", end_time=deadline(0.5)))

        assert event["status"] == "timeout"  # read and compared: the status is all x
        assert len(server.calls) >= 2

    def test_a_gzip_bomb_is_refused_in_little_memory(self, ontrack_connection, monkeypatch):
        monkeypatch.setattr(core, "MAX_BODY_BYTES", 5 * 2**20)
        bomb = gzip.compress(bytes(2**20)) * 110  # 110 MiB once inflated, about 110 KiB on the wire

        def serve(server: RawServer, conn) -> None:
            conn.sendall(http_answer(200, bomb, Content_Encoding="gzip"))

        with RawServer(serve) as server:
            raw_connection(ontrack_connection, server)
            tracemalloc.start()
            try:
                event = first_event(asset_trigger("a-1"))
                peak = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()

        assert len(bomb) < 200 * 1024
        assert peak < 30 * 2**20
        assert event["status"] == "error"
        assert "larger than 5 MiB" in event["message"]
        assert server.calls == ["GET /v1/assets/a-1"]

    def test_only_the_start_of_an_error_answer_is_read(self, ontrack_connection):
        # Built before memory is traced: only what the trigger takes counts.
        answer = http_answer(400, b'{"message": "bad", "pad": "' + b"p" * 40 * 2**20 + b'"}')

        def serve(server: RawServer, conn) -> None:
            conn.sendall(answer)

        with RawServer(serve) as server:
            raw_connection(ontrack_connection, server)
            tracemalloc.start()
            try:
                event = first_event(asset_trigger("a-1"))
                peak = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()

        assert event["status"] == "error"
        assert "answered 400" in event["message"]
        assert peak < 10 * 2**20

    def test_a_token_answer_above_its_limit_is_an_error_event(self, ontrack_connection, monkeypatch):
        def serve(server: RawServer, conn) -> None:
            # Token requests go to /sso here, which RawServer leaves to this function.
            conn.sendall(http_answer(200, b'{"access_token": "' + b"t" * 2 * 2**20 + b'"}'))

        with RawServer(serve) as server:
            raw_connection(ontrack_connection, server, auth_url=server.url + "/sso")
            event = first_event(asset_trigger("a-1"))

        assert event["status"] == "error"
        assert "answered more than 1 MiB" in event["message"]
        assert server.calls == ["POST /sso"]

    def test_a_trickled_answer_still_times_out(self, ontrack_connection):
        with RawServer(trickle_chunked) as server:
            raw_connection(ontrack_connection, server, timeout=0.5)
            started = time.monotonic()
            event = first_event(asset_trigger("a-1", poll_interval=0.1, end_time=deadline(1.2)))
            elapsed = time.monotonic() - started

        assert event["status"] == "timeout"
        assert "no usable answer" in event["message"]
        assert elapsed < 3

"""The hook over real HTTP against the local sandbox: tokens, retries, paging and records."""

from __future__ import annotations

import threading
import time

import pytest

from airflow_provider_ontrack.client import (
    OnTrackApiError,
    OnTrackAuthError,
    OnTrackConfigError,
    OnTrackUnauthorizedError,
)
from airflow_provider_ontrack.hooks.ontrack import OnTrackHook

HTML_503 = (
    "<html><head><title>503 Service Temporarily Unavailable</title></head>"
    "<body><center><h1>503 Service Temporarily Unavailable</h1></center></body></html>"
)


class TestTokens:
    def test_full_asset_read_uses_one_token(self, sandbox, ontrack_connection):
        ontrack_connection(sandbox)
        sandbox.reset_stats()

        ids = [asset["id"] for asset in OnTrackHook().iter_assets(page_size=500)]

        stats = sandbox.stats()
        assert len(ids) == len(set(ids)) == 1500
        assert stats["token_requests"] == 1
        assert stats["calls"] == {"GET /assets": 3}

    def test_hooks_of_one_connection_share_the_token(self, sandbox, ontrack_connection):
        ontrack_connection(sandbox)
        sandbox.reset_stats()

        tokens = {OnTrackHook().get_token() for _ in range(5)}

        assert len(tokens) == 1
        assert sandbox.stats()["token_requests"] == 1

    def test_many_threads_wanting_a_token_cause_one_request(self, sandbox, ontrack_connection):
        ontrack_connection(sandbox)
        sandbox.reset_stats()
        hooks = [OnTrackHook() for _ in range(16)]
        for hook in hooks:
            assert hook.settings  # read the connection first, so that the threads race only for the token
        start = threading.Barrier(len(hooks))
        seen: list[str] = []

        def want_token(hook: OnTrackHook) -> None:
            start.wait()
            seen.append(hook.get_token())

        threads = [threading.Thread(target=want_token, args=(hook,)) for hook in hooks]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

        assert len(seen) == 16 and len(set(seen)) == 1
        assert sandbox.stats()["token_requests"] == 1

    def test_token_expiring_mid_read_is_renewed_without_a_401(self, fresh_sandbox, ontrack_connection):
        fresh_sandbox.set_config(token_lifetime=1.5)
        ontrack_connection(fresh_sandbox)
        hook = OnTrackHook()

        ids = []
        for index, asset in enumerate(hook.iter_assets(page_size=100)):
            ids.append(asset["id"])
            if index % 100 == 99 and index < 500:
                time.sleep(0.5)  # a slow consumer: the token runs out while the read goes on

        stats = fresh_sandbox.stats()
        assert len(set(ids)) == 1500
        assert stats["token_requests"] >= 2
        assert stats["calls"]["GET /assets"] == 15  # renewed ahead of expiry: no call was refused

    def test_revoked_token_is_renewed_once_and_the_call_repeated(self, fresh_sandbox, ontrack_connection):
        ontrack_connection(fresh_sandbox)
        hook = OnTrackHook()
        first = hook.get_token()
        fresh_sandbox.revoke_tokens()
        fresh_sandbox.reset_stats()

        workers = list(hook.iter_workers())

        assert len(workers) == 25
        assert hook.get_token() != first
        stats = fresh_sandbox.stats()
        assert stats["token_requests"] == 1
        assert stats["calls"] == {"GET /workers": 2}

    def test_second_401_in_a_row_is_a_clear_error(self, fresh_sandbox, ontrack_connection):
        ontrack_connection(fresh_sandbox)
        fresh_sandbox.add_fault(
            method="GET", path="/workers/{id}", status=401, count=2,
            body='{"status": 401, "error": "Unauthorized", "message": "Token is not valid"}',
            content_type="application/json",
        )

        with pytest.raises(OnTrackUnauthorizedError) as raised:
            OnTrackHook().get_worker("no-such-worker")

        assert raised.value.status == 401
        assert "GET /workers/no-such-worker answered 401" in str(raised.value)
        assert fresh_sandbox.stats()["token_requests"] == 2

    @pytest.mark.parametrize(
        ("setting", "wanted"),
        [("client_secret", "client_id and client_secret"), ("password", "login and password")],
    )
    def test_refused_credentials_name_what_to_check(self, sandbox, ontrack_connection, monkeypatch, setting,
                                                    wanted):
        conn_id = ontrack_connection(sandbox)
        if setting == "password":
            import json
            import os

            conn = json.loads(os.environ[f"AIRFLOW_CONN_{conn_id.upper()}"])
            conn["password"] = "not-the-password"
            monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(conn))
        else:
            ontrack_connection(sandbox, client_secret="not-the-secret")

        with pytest.raises(OnTrackAuthError) as raised:
            OnTrackHook().get_token()

        assert wanted in str(raised.value)
        assert "not-the" not in str(raised.value)

    @pytest.mark.parametrize("style", ["string_expiry", "no_expiry", "lowercase_type"])
    def test_sloppy_token_responses_are_accepted(self, fresh_sandbox, ontrack_connection, style):
        fresh_sandbox.set_config(token_style=style)
        ontrack_connection(fresh_sandbox)

        assert len(list(OnTrackHook().iter_locations())) == 12


class TestRetries:
    def test_retry_after_is_honoured(self, fresh_sandbox, ontrack_connection):
        ontrack_connection(fresh_sandbox)
        hook = OnTrackHook()
        hook.get_token()
        fresh_sandbox.add_fault(method="GET", path="/locations", status=429, count=1,
                                body='{"status": 429}', content_type="application/json",
                                headers={"Retry-After": "1"})

        started = time.monotonic()
        locations = list(hook.iter_locations())
        waited = time.monotonic() - started

        assert len(locations) == 12
        assert waited >= 1.0
        assert fresh_sandbox.stats()["calls"]["GET /locations"] == 2

    def test_server_rate_limit_is_ridden_out(self, fresh_sandbox, ontrack_connection):
        # The client is set to go faster than the server allows: every 429 must be waited out.
        fresh_sandbox.set_config(rate_limit=2, retry_after_format="http-date")
        ontrack_connection(fresh_sandbox, calls_per_second=50, max_retries=10)

        assets = list(OnTrackHook().iter_assets(page_size=250))

        assert len({asset["id"] for asset in assets}) == 1500
        assert fresh_sandbox.stats()["rejected_429"] >= 1

    def test_html_503_is_retried(self, fresh_sandbox, ontrack_connection):
        ontrack_connection(fresh_sandbox)
        fresh_sandbox.add_fault(method="GET", path="/workers", status=503, count=2, body=HTML_503,
                                content_type="text/html")

        assert len(list(OnTrackHook().iter_workers())) == 25
        assert fresh_sandbox.stats()["calls"]["GET /workers"] == 3

    def test_html_503_that_persists_is_reported_readably(self, fresh_sandbox, ontrack_connection):
        ontrack_connection(fresh_sandbox, max_retries=2)
        fresh_sandbox.add_fault(method="GET", path="/workers", status=503, count=10, body=HTML_503,
                                content_type="text/html")

        with pytest.raises(OnTrackApiError) as raised:
            list(OnTrackHook().iter_workers())

        message = str(raised.value)
        assert raised.value.status == 503
        assert "GET /workers answered 503" in message
        assert "<title>503 Service Temporarily Unavailable</title>" in message
        assert fresh_sandbox.stats()["calls"]["GET /workers"] == 3

    def test_create_is_not_repeated_after_a_gateway_timeout(self, fresh_sandbox, ontrack_connection):
        ontrack_connection(fresh_sandbox)
        fresh_sandbox.add_fault(
            method="POST", path="/workers", status=504, count=1, after_effect=True,
            body="<html><title>504 Gateway Time-out</title></html>", content_type="text/html",
        )

        with pytest.raises(OnTrackApiError) as raised:
            OnTrackHook().create_worker({"firstName": "Ada", "lastName": "Lovelace", "externalId": "HR-1"})

        assert raised.value.status == 504
        assert fresh_sandbox.stats()["calls"]["POST /workers"] == 1
        assert fresh_sandbox.tenant.count("workers") == 26  # stored once, not twice

    def test_timeout_is_retried_for_reads(self, fresh_sandbox, ontrack_connection):
        ontrack_connection(fresh_sandbox, timeout=0.5)
        fresh_sandbox.add_fault(method="GET", path="/locations", status=200, count=1, delay=2, body="{}",
                                content_type="application/json")

        assert len(list(OnTrackHook().iter_locations())) == 12
        assert fresh_sandbox.stats()["calls"]["GET /locations"] == 2


class TestPaging:
    def test_page_size_above_the_cap_reads_everything(self, sandbox, ontrack_connection):
        ontrack_connection(sandbox, page_size=1000, max_page_size=1000)
        sandbox.reset_stats()

        ids = [asset["id"] for asset in OnTrackHook().iter_assets()]

        assert len(ids) == len(set(ids)) == 1500
        assert sandbox.stats()["calls"] == {"GET /assets": 3}

    def test_records_created_during_a_read_shift_nothing_out(self, fresh_sandbox, ontrack_connection):
        ontrack_connection(fresh_sandbox)
        before = {asset["id"] for asset in OnTrackHook().iter_assets(page_size=500)}
        location = next(iter(OnTrackHook().iter_locations()))["id"]

        seen: list[str] = []
        for index, asset in enumerate(OnTrackHook().iter_assets(page_size=100)):
            seen.append(asset["id"])
            if index % 100 == 50:
                for n in range(5):  # new ids land anywhere in the id order, shifting later pages
                    fresh_sandbox.tenant.create("assets", {"name": f"New {index}-{n}",
                                                           "currentLocationId": location})

        assert len(seen) == len(set(seen))
        assert before <= set(seen)

    def test_progress_is_logged(self, sandbox, ontrack_connection, capfd):
        ontrack_connection(sandbox)

        list(OnTrackHook().iter_assets(page_size=500))

        # Airflow's task logging writes to the process's output, not to the logging module's handlers.
        assert "page 2 of 3, 1,000 of 1,500 assets" in capfd.readouterr().out


class TestRecords:
    def test_non_latin_text_round_trips(self, fresh_sandbox, ontrack_connection):
        ontrack_connection(fresh_sandbox)
        hook = OnTrackHook()
        record = {
            "firstName": "佐藤 Łukasz",
            "lastName": "Müller-Øster 🚧",
            "designation": "Прораб / 現場監督",
        }

        created = hook.create_worker(record)
        read = hook.get_worker(created["id"])

        assert {key: read[key] for key in record} == record

    def test_asset_create_read_update(self, fresh_sandbox, ontrack_connection):
        ontrack_connection(fresh_sandbox)
        hook = OnTrackHook()
        location = next(iter(hook.iter_locations()))["id"]

        created = hook.create_asset({"name": "TE 30-A36", "currentLocationId": location, "externalId": "X-1"})
        updated = hook.update_asset(created["id"], {"status": "IN_REPAIR"})

        assert hook.get_asset(created["id"])["status"] == "IN_REPAIR" == updated["status"]
        assert updated["externalId"] == "X-1"

    def test_validation_errors_name_the_field(self, fresh_sandbox, ontrack_connection):
        ontrack_connection(fresh_sandbox)

        with pytest.raises(OnTrackApiError) as raised:
            OnTrackHook().create_asset({"name": "No location"})

        assert raised.value.status == 400
        assert "currentLocationId" in raised.value.field_errors


class TestSettings:
    def test_bad_setting_fails_before_any_call(self, sandbox, ontrack_connection):
        ontrack_connection(sandbox, calls_per_second="two")
        sandbox.reset_stats()

        with pytest.raises(OnTrackConfigError) as raised:
            OnTrackHook().get_token()

        assert raised.value.field == "calls_per_second"
        assert "ontrack_default" in str(raised.value)
        assert sandbox.stats()["token_requests"] == 0

    def test_plain_http_to_another_host_is_refused(self, sandbox, ontrack_connection):
        ontrack_connection(sandbox, auth_url="http://sso.example.com/hc/token")

        with pytest.raises(OnTrackConfigError, match="auth_url"):
            OnTrackHook().get_token()

    def test_connection_test_reports_each_step(self, sandbox, ontrack_connection):
        ontrack_connection(sandbox)
        assert OnTrackHook().test_connection()[0] is True

        ontrack_connection(sandbox, client_secret="wrong-secret")
        ok, message = OnTrackHook().test_connection()
        assert not ok and message.startswith("Getting a token failed")

        ontrack_connection(sandbox, locations_path="/nowhere")
        ok, message = OnTrackHook().test_connection()
        assert not ok and "the API" in message and "404" in message

"""Tests of the client's calls (tokens, retries, errors) and of reading paged lists."""

from __future__ import annotations

import logging
import time
from email.utils import formatdate
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from urllib3.exceptions import MaxRetryError, NewConnectionError

from airflow_provider_ontrack.client.core import OnTrackClient
from airflow_provider_ontrack.client.errors import (
    OnTrackAmbiguousWriteError,
    OnTrackApiError,
    OnTrackNotFoundError,
    OnTrackRateLimitError,
    OnTrackTransportError,
    OnTrackUnauthorizedError,
)
from airflow_provider_ontrack.client.pacing import SPACING_MARGIN
from airflow_provider_ontrack.client.tokens import TokenManager
from tests.unit.conftest import AUTH_URL, BASE_URL, token

ASSETS = BASE_URL + "/assets"
HTML_503 = (
    "<!DOCTYPE html><html><head><title>Service Unavailable</title></head>"
    "<body><h1>The gateway is down for maintenance</h1>" + "x" * 3000 + "</body></html>"
)


def bearer(request: Any) -> str:
    return request.headers["Authorization"]


def query_of(request: Any) -> dict[str, str]:
    return {key: values[0] for key, values in parse_qs(urlsplit(request.url).query).items()}


class TestRequest:
    def test_sends_bearer_token_and_accepts_json(self, requests_mock, token_route, client) -> None:
        route = requests_mock.get(ASSETS + "/7", json={"id": 7})
        assert client().request("get", "assets/7") == {"id": 7}
        sent = route.last_request
        assert sent.method == "GET"
        assert sent.headers["Authorization"] == "Bearer tok-1"
        assert sent.headers["Accept"] == "application/json"
        assert sent.headers["User-Agent"].startswith("airflow-provider-ontrack/")
        assert token_route.call_count == 1

    def test_params_and_json_body_are_sent(self, requests_mock, token_route, client) -> None:
        route = requests_mock.post(ASSETS, status_code=201, json={"id": 9})
        result = client().request("POST", "/assets", params={"dryRun": "true"}, json={"name": "Drill"})
        assert result == {"id": 9}
        assert route.last_request.json() == {"name": "Drill"}
        assert query_of(route.last_request) == {"dryRun": "true"}

    @pytest.mark.parametrize("kwargs", [{"status_code": 204}, {"status_code": 200, "text": ""}])
    def test_empty_body_is_none(self, requests_mock, token_route, client, kwargs) -> None:
        requests_mock.delete(ASSETS + "/7", **kwargs)
        assert client().request("DELETE", "/assets/7") is None

    def test_one_token_for_many_calls(self, requests_mock, token_route, client) -> None:
        route = requests_mock.get(ASSETS, json={"result": []})
        api = client()
        for _ in range(5):
            api.request("GET", "/assets")
        assert route.call_count == 5
        assert token_route.call_count == 1
        assert api.calls_made == 5


class TestUnauthorized:
    def test_401_renews_the_token_once_and_repeats(self, requests_mock, token_route, client) -> None:
        route = requests_mock.get(ASSETS, [{"status_code": 401}, {"json": {"result": []}}])
        assert client().request("GET", "/assets") == {"result": []}
        assert token_route.call_count == 2
        assert [bearer(r) for r in route.request_history] == ["Bearer tok-1", "Bearer tok-2"]

    def test_401_twice_fails(self, requests_mock, token_route, client, sleeps) -> None:
        route = requests_mock.get(ASSETS, status_code=401, json={"message": "token not accepted"})
        with pytest.raises(OnTrackUnauthorizedError) as info:
            client().request("GET", "/assets")
        assert info.value.status == 401
        assert info.value.method == "GET" and info.value.path == "/assets"
        assert token_route.call_count == 2
        assert route.call_count == 2
        assert sleeps.calls == []

    def test_401_on_post_is_repeated(self, requests_mock, token_route, client) -> None:
        route = requests_mock.post(ASSETS, [{"status_code": 401}, {"status_code": 201, "json": {"id": 1}}])
        assert client().request("POST", "/assets", json={"name": "x"}) == {"id": 1}
        assert route.call_count == 2


class TestRetries:
    def test_429_retry_after_seconds(self, requests_mock, token_route, client, sleeps) -> None:
        route = requests_mock.get(
            ASSETS, [{"status_code": 429, "headers": {"Retry-After": "2"}}, {"json": {"ok": True}}]
        )
        assert client().request("GET", "/assets") == {"ok": True}
        assert route.call_count == 2
        assert sleeps.calls == [2.0]
        assert token_route.call_count == 1

    def test_429_retry_after_http_date(self, requests_mock, token_route, client, sleeps) -> None:
        when = formatdate(time.time() + 30, usegmt=True)
        route = requests_mock.get(
            ASSETS, [{"status_code": 429, "headers": {"Retry-After": when}}, {"json": {"ok": True}}]
        )
        assert client().request("GET", "/assets") == {"ok": True}
        assert route.call_count == 2
        assert len(sleeps.calls) == 1
        assert 27.0 <= sleeps.calls[0] <= 30.0

    def test_retry_after_longer_than_allowed_fails_at_once(
        self, requests_mock, token_route, client, sleeps
    ) -> None:
        route = requests_mock.get(ASSETS, status_code=429, headers={"Retry-After": "120"})
        with pytest.raises(OnTrackRateLimitError) as info:
            client(max_retry_delay=60).request("GET", "/assets")
        assert info.value.status == 429
        assert "max_retry_delay" in str(info.value)
        assert route.call_count == 1
        assert sleeps.calls == []

    def test_429_every_time(self, requests_mock, token_route, client, sleeps) -> None:
        route = requests_mock.get(ASSETS, status_code=429)
        with pytest.raises(OnTrackRateLimitError) as info:
            client(max_retries=3, retry_delay=0.001).request("GET", "/assets")
        assert route.call_count == 4
        assert len(sleeps.calls) == 3
        assert "4 tries" in str(info.value)

    def test_backoff_without_retry_after(self, requests_mock, token_route, client, sleeps) -> None:
        requests_mock.get(ASSETS, [{"status_code": 502}, {"status_code": 504}, {"json": {}}])
        client(retry_delay=1.0, max_retry_delay=60).request("GET", "/assets")
        assert len(sleeps.calls) == 2
        assert 0.5 <= sleeps.calls[0] <= 1.0
        assert 1.0 <= sleeps.calls[1] <= 2.0

    def test_503_html_retried_then_success(self, requests_mock, token_route, client, sleeps) -> None:
        route = requests_mock.get(
            ASSETS,
            [
                {"status_code": 503, "text": HTML_503, "headers": {"Content-Type": "text/html"}},
                {"status_code": 503, "text": HTML_503, "headers": {"Content-Type": "text/html"}},
                {"json": {"result": [1]}},
            ],
        )
        assert client().request("GET", "/assets") == {"result": [1]}
        assert route.call_count == 3
        assert len(sleeps.calls) == 2

    def test_503_html_every_time(self, requests_mock, token_route, client, sleeps) -> None:
        route = requests_mock.get(
            ASSETS, status_code=503, text=HTML_503, headers={"Content-Type": "text/html"}
        )
        with pytest.raises(OnTrackApiError) as info:
            client(max_retries=2).request("GET", "/assets")
        error = info.value
        assert type(error) is OnTrackApiError
        assert route.call_count == 3
        assert len(sleeps.calls) == 2
        assert error.status == 503
        message = str(error)
        assert "GET /assets" in message
        assert "503" in message
        assert "<title>Service Unavailable</title>" in message
        assert len(message) < 1000  # the page is shortened, not pasted whole

    def test_post_503_is_not_repeated(self, requests_mock, token_route, client, sleeps) -> None:
        route = requests_mock.post(ASSETS, status_code=503, text=HTML_503)
        with pytest.raises(OnTrackApiError) as info:
            client().request("POST", "/assets", json={"name": "x"})
        assert info.value.status == 503
        assert info.value.method == "POST"
        assert route.call_count == 1
        assert sleeps.calls == []

    def test_post_429_is_repeated(self, requests_mock, token_route, client, sleeps) -> None:
        route = requests_mock.post(
            ASSETS,
            [{"status_code": 429, "headers": {"Retry-After": "1"}}, {"status_code": 201, "json": {"id": 3}}],
        )
        assert client().request("POST", "/assets", json={"name": "x"}) == {"id": 3}
        assert route.call_count == 2
        assert sleeps.calls == [1.0]

    @pytest.mark.parametrize("method", ["PUT", "DELETE"])
    def test_repeatable_write_503_is_repeated(self, requests_mock, token_route, client, method) -> None:
        route = requests_mock.register_uri(method, ASSETS + "/1", [{"status_code": 503}, {"json": {}}])
        client().request(method, "/assets/1", json={})
        assert route.call_count == 2

    def test_post_read_timeout_is_ambiguous(self, requests_mock, token_route, client, sleeps) -> None:
        route = requests_mock.post(ASSETS, exc=requests.exceptions.ReadTimeout)
        with pytest.raises(OnTrackAmbiguousWriteError) as info:
            client().request("POST", "/assets", json={"name": "x"})
        assert isinstance(info.value, OnTrackTransportError)
        assert info.value.status is None
        assert "POST /assets" in str(info.value)
        assert route.call_count == 1
        assert sleeps.calls == []

    def test_post_dropped_connection_is_ambiguous(self, requests_mock, token_route, client) -> None:
        reset = requests.exceptions.ConnectionError("Connection reset by peer")
        route = requests_mock.post(ASSETS, exc=reset)
        with pytest.raises(OnTrackAmbiguousWriteError):
            client().request("POST", "/assets", json={"name": "x"})
        assert route.call_count == 1

    def test_post_connect_timeout_is_repeated(self, requests_mock, token_route, client, sleeps) -> None:
        route = requests_mock.post(
            ASSETS, [{"exc": requests.exceptions.ConnectTimeout}, {"status_code": 201, "json": {"id": 4}}]
        )
        assert client().request("POST", "/assets", json={"name": "x"}) == {"id": 4}
        assert route.call_count == 2
        assert len(sleeps.calls) == 1

    def test_post_refused_connection_is_repeated(self, requests_mock, token_route, client) -> None:
        refused = requests.exceptions.ConnectionError(
            MaxRetryError(None, ASSETS, reason=NewConnectionError(None, "Connection refused"))
        )
        route = requests_mock.post(ASSETS, [{"exc": refused}, {"status_code": 201, "json": {"id": 5}}])
        assert client().request("POST", "/assets", json={"name": "x"}) == {"id": 5}
        assert route.call_count == 2

    def test_get_read_timeout_is_repeated(self, requests_mock, token_route, client) -> None:
        route = requests_mock.get(ASSETS, [{"exc": requests.exceptions.ReadTimeout}, {"json": {"ok": 1}}])
        assert client().request("GET", "/assets") == {"ok": 1}
        assert route.call_count == 2

    def test_get_connection_error_until_retries_run_out(
        self, requests_mock, token_route, client, sleeps
    ) -> None:
        route = requests_mock.get(ASSETS, exc=requests.exceptions.ConnectionError)
        with pytest.raises(OnTrackTransportError) as info:
            client(max_retries=3).request("GET", "/assets")
        assert type(info.value) is OnTrackTransportError
        assert info.value.status is None
        assert route.call_count == 4
        assert len(sleeps.calls) == 3
        assert "4 tries" in str(info.value)

    def test_token_expiring_during_retries_is_renewed(self, requests_mock, settings, clock, sleeps) -> None:
        sleeps.clock = clock  # every retry delay moves the token manager's clock on
        token_route = requests_mock.post(AUTH_URL, [token("tok-1", 100), token("tok-2", 100)])
        route = requests_mock.get(
            ASSETS,
            [{"status_code": 429, "headers": {"Retry-After": "50"}}] * 3 + [{"json": {"ok": True}}],
        )
        config = settings(max_retry_delay=60)
        api = OnTrackClient(config, sleep=sleeps)
        api.tokens = TokenManager(config, session=api.session, clock=clock, sleep=sleeps)
        try:
            assert api.request("GET", "/assets") == {"ok": True}
        finally:
            api.close()

        assert sleeps.calls == [50.0, 50.0, 50.0]
        # tok-1 lives 100 s and is renewed from 90 s on: the call at 100 s carries tok-2.
        assert [bearer(r) for r in route.request_history] == [
            "Bearer tok-1",
            "Bearer tok-1",
            "Bearer tok-2",
            "Bearer tok-2",
        ]
        assert token_route.call_count == 2

    def test_pacer_is_shared_by_clients_of_the_same_tenant(self, token_route, client) -> None:
        first, second = client(calls_per_second=5.0), client(calls_per_second=2.0)
        assert first.pacer is second.pacer
        assert first.pacer.interval == pytest.approx(0.5 * SPACING_MARGIN)


class TestErrors:
    def test_404(self, requests_mock, token_route, client) -> None:
        requests_mock.get(ASSETS + "/99", status_code=404, json={"message": "Asset 99 not found"})
        with pytest.raises(OnTrackNotFoundError) as info:
            client().request("GET", "/assets/99")
        assert info.value.status == 404
        assert "Asset 99 not found" in str(info.value)

    def test_400_field_errors(self, requests_mock, token_route, client, sleeps) -> None:
        body = {
            "message": "Validation failed",
            "details": [
                {"field": "name", "message": "must not be empty"},
                {"field": "externalId", "message": "is already used"},
                {"message": "no field"},
            ],
        }
        route = requests_mock.post(ASSETS, status_code=400, json=body)
        with pytest.raises(OnTrackApiError) as info:
            client().request("POST", "/assets", json={})
        assert info.value.status == 400
        assert info.value.body == body
        assert info.value.field_errors == {"name": "must not be empty", "externalId": "is already used"}
        assert "Validation failed" in str(info.value)
        assert route.call_count == 1
        assert sleeps.calls == []

    def test_field_errors_empty_without_details(self, requests_mock, token_route, client) -> None:
        requests_mock.get(ASSETS, status_code=400, text="bad request")
        with pytest.raises(OnTrackApiError) as info:
            client().request("GET", "/assets")
        assert info.value.field_errors == {}

    def test_200_with_html_body(self, requests_mock, token_route, client) -> None:
        requests_mock.get(
            ASSETS, text="<html><title>Login</title></html>", headers={"Content-Type": "text/html"}
        )
        with pytest.raises(OnTrackApiError) as info:
            client().request("GET", "/assets")
        assert info.value.status == 200
        assert "expected JSON" in str(info.value)
        assert "text/html" in str(info.value)
        assert "<title>Login</title>" in str(info.value)

    def test_echoed_secret_in_html_body_is_masked(self, requests_mock, token_route, client) -> None:
        api = client()
        secret = api.settings.client_secret
        requests_mock.get(ASSETS, status_code=500, text=f"<html>bad client secret {secret}</html>")
        with pytest.raises(OnTrackApiError) as info:
            api.request("GET", "/assets")
        assert secret not in str(info.value)
        assert secret not in repr(info.value.body)
        assert "bad client secret ***" in str(info.value)

    def test_echoed_secret_in_message_is_masked(self, requests_mock, token_route, client) -> None:
        api = client()
        secret = api.settings.client_secret
        requests_mock.get(ASSETS, status_code=400, json={"message": f"unexpected value {secret}"})
        with pytest.raises(OnTrackApiError) as info:
            api.request("GET", "/assets")
        assert info.value.message == "unexpected value ***"

    @pytest.mark.parametrize("key", ["message", "detail"])
    def test_echoed_secret_in_json_body_is_masked(self, requests_mock, token_route, client, key) -> None:
        api = client()
        secret, password = api.settings.client_secret, api.settings.password
        requests_mock.get(ASSETS, status_code=400, json={key: f"refused {secret} for {password}"})
        with pytest.raises(OnTrackApiError) as info:
            api.request("GET", "/assets")
        text = str(info.value)
        assert "refused *** for ***" in text
        assert secret not in text
        assert password not in text


    @pytest.mark.parametrize("offset", range(-12, 3))
    def test_secret_across_the_message_cut_is_masked(
        self, requests_mock, token_route, client, offset
    ) -> None:
        api = client()
        secret = api.settings.client_secret
        # The secret starts just before, at or after the 500th character, where messages are cut.
        requests_mock.get(ASSETS, status_code=400, json={"message": "m" * (500 + offset) + secret})

        with pytest.raises(OnTrackApiError) as info:
            api.request("GET", "/assets")

        assert secret[:6] not in str(info.value)

    @pytest.mark.parametrize("offset", range(-12, 3))
    def test_secret_across_the_body_cut_is_masked(self, requests_mock, token_route, client, offset) -> None:
        api = client()
        secret = api.settings.client_secret
        requests_mock.get(ASSETS, status_code=502, text="<p>" + "b" * (1997 + offset) + secret)

        with pytest.raises(OnTrackApiError) as info:
            api.request("GET", "/assets")

        assert secret[:6] not in repr(info.value.body)

    def test_html_escaped_secret_is_masked(self, requests_mock, token_route, client) -> None:
        api = client(password='Pa&ss<wo>rd"1234')
        requests_mock.get(ASSETS, status_code=500, text="<p>bad password Pa&amp;ss&lt;wo&gt;rd&quot;1234</p>")

        with pytest.raises(OnTrackApiError) as info:
            api.request("GET", "/assets")

        assert "Pa&amp;ss" not in repr(info.value.body) and "bad password ***" in repr(info.value.body)


class PagedServer:
    """Serves a list of records page by page, as the list endpoints of the API do."""

    def __init__(
        self,
        records: list[dict[str, Any]],
        *,
        cap: int | None = None,
        report_size: bool = True,
        report_total: bool = True,
        page_param: str = "page",
        size_param: str = "pageSize",
        result_key: str = "result",
        total_key: str = "totalRecords",
        size_key: str = "pageSize",
    ) -> None:
        self.records = records
        self.cap = cap
        self.report_size = report_size
        self.report_total = report_total
        self.page_param, self.size_param = page_param, size_param
        self.result_key, self.total_key, self.size_key = result_key, total_key, size_key
        self.after_page: dict[int, Any] = {}
        self.served: list[list[dict[str, Any]]] = []

    def __call__(self, request: Any, context: Any) -> dict[str, Any]:
        query = query_of(request)
        page, size = int(query[self.page_param]), int(query[self.size_param])
        if self.cap is not None:
            size = min(size, self.cap)
        envelope: dict[str, Any] = {
            self.result_key: self.records[(page - 1) * size : page * size],
            "pageNumber": page,
        }
        self.served.append(envelope[self.result_key])
        if self.report_size:
            envelope[self.size_key] = size
        if self.report_total:
            envelope[self.total_key] = len(self.records)
        if page in self.after_page:
            self.after_page[page]()
        return envelope


def numbered(count: int) -> list[dict[str, Any]]:
    return [{"id": n, "name": f"asset {n}"} for n in range(1, count + 1)]


class TestPaginate:
    def test_all_records_once_in_13_calls(self, requests_mock, token_route, client) -> None:
        route = requests_mock.get(ASSETS, json=PagedServer(numbered(1234)))
        records = list(client(page_size=100).paginate("/assets"))
        assert [r["id"] for r in records] == list(range(1, 1235))
        assert route.call_count == 13
        assert [query_of(r) for r in route.request_history[:2]] == [
            {"page": "1", "pageSize": "100"},
            {"page": "2", "pageSize": "100"},
        ]
        assert token_route.call_count == 1

    def test_exact_multiple_of_page_size_stops_on_total(self, requests_mock, token_route, client) -> None:
        route = requests_mock.get(ASSETS, json=PagedServer(numbered(300)))
        assert len(list(client(page_size=100).paginate("/assets"))) == 300
        assert route.call_count == 3

    def test_filters_are_kept_on_every_page(self, requests_mock, token_route, client) -> None:
        route = requests_mock.get(ASSETS, json=PagedServer(numbered(150)))
        list(client().paginate("/assets", params={"startDate": "2024-01-01"}, page_size=100))
        assert [query_of(r)["startDate"] for r in route.request_history] == ["2024-01-01"] * 2

    def test_server_capping_the_page_size_is_read_to_the_end(
        self, requests_mock, token_route, client
    ) -> None:
        route = requests_mock.get(ASSETS, json=PagedServer(numbered(1500), cap=500))
        records = list(client().paginate("/assets", page_size=1000))
        assert [r["id"] for r in records] == list(range(1, 1501))
        assert route.call_count == 3
        assert [query_of(r)["pageSize"] for r in route.request_history] == ["1000"] * 3

    def test_server_echoing_the_size_it_was_asked_is_read_to_the_total(
        self, requests_mock, token_route, client
    ) -> None:
        server = PagedServer(numbered(1500), cap=500)

        def echo_asked_size(request: Any, context: Any) -> dict[str, Any]:
            envelope = server(request, context)
            envelope["pageSize"] = int(query_of(request)["pageSize"])  # says 1000, serves 500
            return envelope

        route = requests_mock.get(ASSETS, json=echo_asked_size)
        records = list(client().paginate("/assets", page_size=1000))
        assert [r["id"] for r in records] == list(range(1, 1501))
        assert route.call_count == 3

    @pytest.mark.parametrize(("count", "calls"), [(250, 3), (200, 3), (0, 1)])
    def test_envelope_without_size_or_total(self, requests_mock, token_route, client, count, calls) -> None:
        server = PagedServer(numbered(count), report_size=False, report_total=False)
        route = requests_mock.get(ASSETS, json=server)
        records = list(client().paginate("/assets", page_size=100))
        assert [r["id"] for r in records] == list(range(1, count + 1))
        assert route.call_count == calls

    def test_envelope_without_size_and_silent_cap(self, requests_mock, token_route, client) -> None:
        server = PagedServer(numbered(1200), cap=500, report_size=False, report_total=False)
        route = requests_mock.get(ASSETS, json=server)
        records = list(client().paginate("/assets", page_size=1000))
        assert [r["id"] for r in records] == list(range(1, 1201))
        assert route.call_count == 3

    def test_record_shifted_onto_the_next_page_is_yielded_once(
        self, requests_mock, token_route, client
    ) -> None:
        original = numbered(250)
        server = PagedServer(list(original))
        # After page 1, a record is created that sorts first: every record moves one place on, and
        # page 2 starts with the last record of page 1.
        server.after_page[1] = lambda: server.records.insert(0, {"id": 9999, "name": "new"})
        route = requests_mock.get(ASSETS, json=server)

        records = list(client().paginate("/assets", page_size=100))

        ids = [r["id"] for r in records]
        assert route.call_count == 3
        assert server.served[0][-1]["id"] == server.served[1][0]["id"] == 100  # the shift happened
        assert len(ids) == len(set(ids))
        assert ids == [r["id"] for r in original]

    def test_custom_names(self, requests_mock, token_route, client) -> None:
        server = PagedServer(
            numbered(120),
            page_param="pageNumber",
            size_param="limit",
            result_key="items",
            total_key="count",
            size_key="size",
        )
        route = requests_mock.get(ASSETS, json=server)
        api = client(
            page_param="pageNumber",
            page_size_param="limit",
            result_key="items",
            total_key="count",
            page_size_key="size",
            page_size=50,
        )
        assert [r["id"] for r in api.paginate("/assets")] == list(range(1, 121))
        assert route.call_count == 3
        assert query_of(route.request_history[2]) == {"pageNumber": "3", "limit": "50"}

    @pytest.mark.parametrize("envelope", [{"data": []}, {"result": None}, [1, 2]])
    def test_missing_result_key(self, requests_mock, token_route, client, envelope) -> None:
        requests_mock.get(ASSETS, json=envelope)
        with pytest.raises(OnTrackApiError) as info:
            list(client().paginate("/assets"))
        assert "'result'" in str(info.value)
        assert "result_key" in str(info.value)

    def test_progress_log(self, requests_mock, token_route, client, caplog) -> None:
        requests_mock.get(ASSETS, json=PagedServer(numbered(1234)))
        log = logging.getLogger("tests.ontrack.progress")
        caplog.set_level(logging.INFO, logger=log.name)
        api = OnTrackClient(client(page_size=100).settings, log=log, sleep=lambda s: None)
        try:
            list(api.paginate("/assets", label="assets"))
        finally:
            api.close()
        progress = [r.getMessage() for r in caplog.records if r.name == log.name]
        assert "Read /assets page 3 of 13, 300 of 1,234 assets" in progress
        assert "Read /assets page 13 of 13, 1,234 of 1,234 assets" in progress
        assert any(m.startswith("Read 1,234 assets from /assets in ") for m in progress)

    def test_lazy(self, requests_mock, token_route, client) -> None:
        route = requests_mock.get(ASSETS, json=PagedServer(numbered(1234)))
        pages = client(page_size=100).paginate("/assets")
        assert route.call_count == 0
        assert next(pages)["id"] == 1
        assert route.call_count == 1
        for _ in range(99):
            next(pages)
        assert route.call_count == 1
        assert next(pages)["id"] == 101
        assert route.call_count == 2
        pages.close()

"""Tests of the client against hostile answers, tokens and settings: broken or endless bodies, oversized
answers, redirects, odd record ids, repeated pages, malformed tokens, echoed secrets, and pacing."""

from __future__ import annotations

import base64
import gzip
import json
import re
import socket
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from itertools import pairwise
from typing import Any
from urllib.parse import parse_qs, quote, quote_plus, urlsplit

import pytest
import requests

from airflow_provider_ontrack.client import core
from airflow_provider_ontrack.client.core import OnTrackClient
from airflow_provider_ontrack.client.errors import (
    OnTrackAmbiguousWriteError,
    OnTrackApiError,
    OnTrackAuthError,
    OnTrackConfigError,
    OnTrackTransportError,
)
from airflow_provider_ontrack.client.pacing import SPACING_MARGIN, CallPacer, shared_pacer
from airflow_provider_ontrack.client.settings import OnTrackSettings
from airflow_provider_ontrack.client.tokens import TokenManager
from airflow_provider_ontrack.hooks.ontrack import OnTrackHook
from airflow_provider_ontrack.sandbox import (
    SANDBOX_CLIENT_ID,
    SANDBOX_CLIENT_SECRET,
    SANDBOX_PASSWORD,
    SANDBOX_USERNAME,
    OnTrackSandbox,
)

BASE_URL = "https://api.example.test/ts/ontrack/unite/v1"
AUTH_URL = "https://sso.example.test/hc/token"
ASSETS = BASE_URL + "/assets"
ELSEWHERE = "https://elsewhere.example.test/collect"
RAW_TOKEN = {"access_token": "raw-tok-1", "expires_in": 3600, "token_type": "Bearer"}


def token(value: str, expires_in: Any = 3600) -> dict[str, Any]:
    return {"json": {"access_token": value, "expires_in": expires_in, "token_type": "Bearer"}}


def query_of(request: Any) -> dict[str, str]:
    return {key: values[0] for key, values in parse_qs(urlsplit(request.url).query).items()}


def make_jwt(claims: Any) -> str:
    def part(data: Any) -> str:
        text = data if isinstance(data, str) else json.dumps(data)
        return base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'RS256', 'typ': 'JWT'})}.{part(claims)}.c2lnbmF0dXJl"


@pytest.fixture
def manager(settings, clock, sleeps):
    """Build a token manager of the fake tenant with a fake clock and a recorded sleep."""

    def build(**overrides: Any) -> TokenManager:
        return TokenManager(settings(**overrides), session=requests.Session(), clock=clock, sleep=sleeps)

    return build


@pytest.fixture
def hook(monkeypatch) -> Iterator[OnTrackHook]:
    """A hook of the fake tenant, its connection given as an environment variable."""
    connection = {
        "conn_type": "ontrack",
        "host": BASE_URL,
        "login": "techuser@api-user.hilti.cloud",
        "password": "hook-pa55word",
        "extra": {
            "client_id": "hook-client",
            "client_secret": "hook-secret",
            "auth_url": AUTH_URL,
            "calls_per_second": 1000,
            "retry_delay": 0.001,
        },
    }
    monkeypatch.setenv("AIRFLOW_CONN_ONTRACK_DEFAULT", json.dumps(connection))
    made = OnTrackHook()
    yield made
    if "client" in made.__dict__:
        made.client.close()


# -- a bare HTTP server on loopback, for answers that requests_mock cannot fake ------------------------------


def http_head(status: int, headers: dict[str, str]) -> bytes:
    lines = [f"HTTP/1.1 {status} Status"] + [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def http_answer(status: int, body: bytes, **headers: str) -> bytes:
    fields = {"Content-Type": "application/json", "Content-Length": str(len(body)), "Connection": "close"}
    fields.update({name.replace("_", "-"): value for name, value in headers.items()})
    return http_head(status, fields) + body


class RawServer:
    """An HTTP/1.1 server on 127.0.0.1 that issues a token and answers API calls with ``answer``.

    ``answer(server, conn)`` writes whatever bytes it likes, as slowly as it likes; it should stop
    when ``server.stopping`` is set. Each connection serves one request and is then closed.
    """

    def __init__(self, answer: Callable[[RawServer, socket.socket], None]) -> None:
        self.answer = answer
        self.calls: list[str] = []
        self.stopping = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)
        self.port = self._listener.getsockname()[1]
        self._acceptor = threading.Thread(target=self._accept, daemon=True)
        self._handlers: list[threading.Thread] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> RawServer:
        self._acceptor.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stopping.set()
        self._acceptor.join(timeout=5)
        for handler in self._handlers:
            handler.join(timeout=5)
        self._listener.close()

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            handler = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self._handlers.append(handler)
            handler.start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            try:
                method, target = self._read_request(conn)
                if target.startswith("/token"):
                    conn.sendall(http_answer(200, json.dumps(RAW_TOKEN).encode()))
                else:
                    self.calls.append(f"{method} {target}")
                    self.answer(self, conn)
            except OSError:
                pass  # the client gave up and closed its end

    @staticmethod
    def _read_request(conn: socket.socket) -> tuple[str, str]:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                raise ConnectionError("the client closed before sending a request")
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
        while length and len(body) < int(length.group(1)):
            body += conn.recv(65536)
        method, target = head.decode("latin-1").split(" ")[:2]
        return method, target


@pytest.fixture
def raw_client(settings, sleeps, monkeypatch):
    """Build a client of a :class:`RawServer`; its retries do not sleep."""
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    made: list[OnTrackClient] = []

    def build(server: RawServer, **overrides: Any) -> OnTrackClient:
        config = settings(base_url=server.url + "/v1", auth_url=server.url + "/token", **overrides)
        made.append(OnTrackClient(config, sleep=sleeps))
        return made[-1]

    yield build
    for each in made:
        each.close()


def cut_short(server: RawServer, conn: socket.socket) -> None:
    """Announce 50 bytes, send 10, hang up."""
    conn.sendall(http_head(200, {"Content-Type": "application/json", "Content-Length": "50"}))
    conn.sendall(b'{"result": ')


def bad_gzip(server: RawServer, conn: socket.socket) -> None:
    conn.sendall(http_answer(200, b"this is not gzip at all", Content_Encoding="gzip"))


def trickle_chunked(server: RawServer, conn: socket.socket) -> None:
    """One byte every 0.2 s, in chunks, for up to 20 s."""
    conn.sendall(http_head(200, {"Content-Type": "application/json", "Transfer-Encoding": "chunked"}))
    for _ in range(100):
        conn.sendall(b"1\r\n \r\n")
        if server.stopping.wait(0.2):
            return


def trickle_sized(server: RawServer, conn: socket.socket) -> None:
    """Announce 100 bytes and send one every 0.2 s; give up after 2.5 s to keep the test short."""
    conn.sendall(http_head(200, {"Content-Type": "application/json", "Content-Length": "100"}))
    for _ in range(12):
        conn.sendall(b" ")
        if server.stopping.wait(0.2):
            return


# -- broken answers and other transport failures ---------------------------------------------------------


class TestBrokenAnswers:
    @pytest.mark.parametrize(
        "failure", [requests.exceptions.ChunkedEncodingError, requests.exceptions.ContentDecodingError]
    )
    def test_get_is_retried_then_fails_as_transport_error(
        self, requests_mock, token_route, client, sleeps, failure
    ) -> None:
        route = requests_mock.get(ASSETS, exc=failure)

        with pytest.raises(OnTrackTransportError) as info:
            client(max_retries=2).request("GET", "/assets")

        assert type(info.value) is OnTrackTransportError
        assert route.call_count == 3
        assert len(sleeps.calls) == 2
        assert failure.__name__ in str(info.value)
        assert "3 tries" in str(info.value)

    @pytest.mark.parametrize(
        "failure", [requests.exceptions.ChunkedEncodingError, requests.exceptions.ContentDecodingError]
    )
    def test_get_recovers_on_the_next_try(self, requests_mock, token_route, client, failure) -> None:
        route = requests_mock.get(ASSETS, [{"exc": failure}, {"json": {"ok": True}}])

        answer = client().request("GET", "/assets")

        assert answer == {"ok": True}
        assert route.call_count == 2

    @pytest.mark.parametrize(
        "failure", [requests.exceptions.ChunkedEncodingError, requests.exceptions.ContentDecodingError]
    )
    def test_post_is_ambiguous_after_one_call(
        self, requests_mock, token_route, client, sleeps, failure
    ) -> None:
        route = requests_mock.post(ASSETS, exc=failure)

        with pytest.raises(OnTrackAmbiguousWriteError) as info:
            client().request("POST", "/assets", json={"name": "x"})

        assert route.call_count == 1
        assert sleeps.calls == []
        assert failure.__name__ in str(info.value)

    @pytest.mark.parametrize("method", ["GET", "POST"])
    def test_other_request_errors_name_only_their_type(
        self, requests_mock, token_route, client, method
    ) -> None:
        leaky = requests.exceptions.InvalidHeader(
            "Invalid leading whitespace in header value: Authorization: Bearer tok-1 password=hunter2"
        )
        route = requests_mock.register_uri(method, ASSETS, exc=leaky)

        with pytest.raises(OnTrackTransportError) as info:
            client(max_retries=1).request(method, "/assets", json={"name": "x"})

        message = str(info.value)
        assert "InvalidHeader" in message
        for fragment in ("tok-1", "hunter2", "Bearer", "whitespace"):
            assert fragment not in message
        assert info.value.__cause__ is None and info.value.__suppress_context__
        if method == "POST":
            assert type(info.value) is OnTrackAmbiguousWriteError
            assert route.call_count == 1
        else:
            assert type(info.value) is OnTrackTransportError
            assert route.call_count == 2

    def test_token_request_error_names_only_its_type(self, requests_mock, manager) -> None:
        leaky = requests.exceptions.InvalidHeader("bad header: Basic Y2xpZW50OnNlY3JldA==")
        requests_mock.post(AUTH_URL, exc=leaky)

        with pytest.raises(OnTrackAuthError) as info:
            manager(max_retries=0).get()

        assert "InvalidHeader" in str(info.value)
        assert "Y2xpZW50OnNlY3JldA" not in str(info.value)

    @pytest.mark.parametrize("answer", [cut_short, bad_gzip], ids=["cut-short", "bad-gzip"])
    def test_real_broken_body_on_get_is_retried(self, raw_client, answer) -> None:
        with RawServer(answer) as server:
            api = raw_client(server, max_retries=1)

            with pytest.raises(OnTrackTransportError) as info:
                api.request("GET", "/assets")

        assert type(info.value) is OnTrackTransportError
        assert server.calls == ["GET /v1/assets", "GET /v1/assets"]
        assert "broke off or could not be decoded" in str(info.value)

    @pytest.mark.parametrize("answer", [cut_short, bad_gzip], ids=["cut-short", "bad-gzip"])
    def test_real_broken_body_on_post_is_ambiguous(self, raw_client, answer) -> None:
        with RawServer(answer) as server:
            api = raw_client(server, max_retries=3)

            with pytest.raises(OnTrackAmbiguousWriteError):
                api.request("POST", "/assets", json={"name": "x"})

        assert server.calls == ["POST /v1/assets"]


# -- the whole answer within the timeout ----------------------------------------------------------------


class TestWholeAnswerDeadline:
    def test_trickled_chunked_body_times_out(self, raw_client) -> None:
        with RawServer(trickle_chunked) as server:
            api = raw_client(server, timeout=1.0, max_retries=1)
            started = time.monotonic()

            with pytest.raises(OnTrackTransportError) as info:
                api.request("GET", "/assets")

            elapsed = time.monotonic() - started

        assert elapsed < 8
        assert server.calls == ["GET /v1/assets", "GET /v1/assets"]
        assert "2 tries" in str(info.value)

    def test_trickled_body_with_content_length_times_out(self, raw_client) -> None:
        with RawServer(trickle_sized) as server:
            api = raw_client(server, timeout=1.0, max_retries=0)
            started = time.monotonic()

            with pytest.raises(OnTrackTransportError):
                api.request("GET", "/assets")

            elapsed = time.monotonic() - started

        # The server gives up after 2.5 s; an answer cut off by the deadline fails at about 1.2 s.
        assert elapsed < 2.0


# -- size limits -----------------------------------------------------------------------------------------


class TestSizeLimits:
    def test_answer_at_the_limit_is_read(self, requests_mock, token_route, client, monkeypatch) -> None:
        monkeypatch.setattr(core, "MAX_BODY_BYTES", 1000)
        body = json.dumps({"result": "x" * 1000})[: 1000 - 2] + '"}'
        requests_mock.get(ASSETS, text=body)

        answer = client().request("GET", "/assets")

        assert len(body) == 1000
        assert len(answer["result"]) == 1000 - len('{"result": ""}')

    def test_answer_above_the_limit_is_refused(self, requests_mock, token_route, client, monkeypatch) -> None:
        monkeypatch.setattr(core, "MAX_BODY_BYTES", 2 * 2**20)
        route = requests_mock.get(ASSETS, text=json.dumps({"result": ["x" * 1000] * 3000}))

        with pytest.raises(OnTrackApiError) as info:
            client().request("GET", "/assets")

        assert type(info.value) is OnTrackApiError
        assert info.value.status == 200
        assert "larger than 2 MiB" in str(info.value)
        assert "page_size" in str(info.value)
        assert route.call_count == 1

    def test_one_byte_above_the_limit_is_refused(
        self, requests_mock, token_route, client, monkeypatch
    ) -> None:
        monkeypatch.setattr(core, "MAX_BODY_BYTES", 1000)
        requests_mock.get(ASSETS, text=json.dumps({"result": "x" * 1000})[: 1001 - 2] + '"}')

        with pytest.raises(OnTrackApiError) as info:
            client().request("GET", "/assets")

        assert "larger than" in str(info.value)

    @pytest.mark.parametrize("length", [30_000, 3_000_000])
    def test_huge_error_message_is_shortened(self, requests_mock, token_route, client, length) -> None:
        requests_mock.get(ASSETS, status_code=400, json={"message": "m" * length, "code": "BAD"})

        with pytest.raises(OnTrackApiError) as info:
            client().request("GET", "/assets")

        assert info.value.status == 400
        assert len(str(info.value)) < 2000
        assert len(info.value.message) < 1000

    def test_gzip_bomb_is_refused_in_little_memory(self, raw_client, monkeypatch) -> None:
        monkeypatch.setattr(core, "MAX_BODY_BYTES", 5 * 2**20)
        member = gzip.compress(bytes(2**20))
        bomb = member * 110  # 110 MiB once inflated, about 110 KiB on the wire

        def serve_bomb(server: RawServer, conn: socket.socket) -> None:
            conn.sendall(http_answer(200, bomb, Content_Encoding="gzip"))

        with RawServer(serve_bomb) as server:
            api = raw_client(server)
            api.tokens.get()
            tracemalloc.start()
            try:
                with pytest.raises(OnTrackApiError) as info:
                    api.request("GET", "/assets")
                peak = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()

        assert len(bomb) < 200 * 1024
        assert type(info.value) is OnTrackApiError
        assert "larger than 5 MiB" in str(info.value)
        assert peak < 30 * 2**20
        assert server.calls == ["GET /v1/assets"]


# -- redirects -------------------------------------------------------------------------------------------


class TestRedirects:
    @pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
    @pytest.mark.parametrize("method", ["GET", "POST"])
    def test_redirect_is_not_followed(self, requests_mock, token_route, client, status, method) -> None:
        route = requests_mock.register_uri(
            method, ASSETS, status_code=status, headers={"Location": ELSEWHERE}
        )
        target = requests_mock.register_uri(method, ELSEWHERE, json={})
        followed_as_get = requests_mock.get(ELSEWHERE, json={})

        with pytest.raises(OnTrackApiError) as info:
            client().request(method, "/assets", json={"name": "x"})

        assert info.value.status == status
        assert ELSEWHERE in str(info.value)
        assert route.call_count == 1
        assert target.call_count == 0 and followed_as_get.call_count == 0
        assert all(
            urlsplit(sent.url).hostname != "elsewhere.example.test" for sent in requests_mock.request_history
        )


    def test_redirect_body_is_not_read_whole(self, raw_client) -> None:
        # requests reads a redirect's whole body before deciding not to follow it, unless the
        # session says there is no target to follow.
        def huge_redirect(server: RawServer, conn: socket.socket) -> None:
            conn.sendall(http_head(302, {"Location": ELSEWHERE, "Content-Length": str(200 * 2**20)}))
            chunk = b" " * 2**20
            for _ in range(200):
                conn.sendall(chunk)

        with RawServer(huge_redirect) as server:
            api = raw_client(server)
            api.tokens.get()
            tracemalloc.start()
            try:
                with pytest.raises(OnTrackApiError) as info:
                    api.request("GET", "/assets")
                peak = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()

        assert info.value.status == 302
        assert peak < 10 * 2**20

    def test_trickled_redirect_body_keeps_the_deadline(self, raw_client) -> None:
        def trickled_redirect(server: RawServer, conn: socket.socket) -> None:
            conn.sendall(http_head(302, {"Location": ELSEWHERE, "Content-Length": "100"}))
            for _ in range(40):
                conn.sendall(b" ")
                if server.stopping.wait(0.2):
                    return

        with RawServer(trickled_redirect) as server:
            api = raw_client(server, timeout=1.0, max_retries=0)
            api.tokens.get()
            started = time.monotonic()

            with pytest.raises(OnTrackTransportError):
                api.request("GET", "/assets")

            elapsed = time.monotonic() - started

        # The server would trickle for 8 s; the whole-answer deadline ends the call after about 1.2 s.
        assert elapsed < 4


class TestTokenAnswerLimits:
    @staticmethod
    def _manager(settings, server: RawServer, **overrides: Any) -> TokenManager:
        # "/sso" rather than "/token", so that the server's answer function serves the token too.
        config = settings(base_url=server.url + "/v1", auth_url=server.url + "/sso", **overrides)
        return OnTrackClient(config, sleep=lambda seconds: None).tokens

    def test_trickled_token_answer_keeps_the_deadline(self, settings, monkeypatch) -> None:
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")

        with RawServer(trickle_sized) as server:
            tokens = self._manager(settings, server, timeout=1.0, max_retries=0)
            started = time.monotonic()

            with pytest.raises(OnTrackAuthError):
                tokens.get()

            elapsed = time.monotonic() - started

        assert elapsed < 2.0

    def test_huge_token_refusal_is_read_in_little_memory(self, settings, monkeypatch) -> None:
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")

        def huge_refusal(server: RawServer, conn: socket.socket) -> None:
            conn.sendall(http_head(400, {"Content-Type": "text/html", "Content-Length": str(300 * 2**20)}))
            chunk = b"<p>" * 2**18
            for _ in range(400):
                conn.sendall(chunk)

        with RawServer(huge_refusal) as server:
            tokens = self._manager(settings, server, max_retries=0)
            tracemalloc.start()
            try:
                with pytest.raises(OnTrackAuthError) as info:
                    tokens.get()
                peak = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()

        assert info.value.status == 400
        assert peak < 20 * 2**20


class TestEnvironment:
    def test_netrc_credentials_never_replace_the_token(self, requests_mock, token_route, client, tmp_path,
                                                       monkeypatch) -> None:
        netrc = tmp_path / ".netrc"
        netrc.write_text(f"machine {urlsplit(ASSETS).hostname} login someone password netrc-secret\n")
        netrc.chmod(0o600)
        monkeypatch.setenv("NETRC", str(netrc))
        route = requests_mock.get(ASSETS, json={"result": []})

        client().request("GET", "/assets")

        assert route.last_request.headers["Authorization"] == "Bearer tok-1"

    def test_loopback_calls_bypass_proxies_from_the_environment(self, raw_client, monkeypatch) -> None:
        def empty(server: RawServer, conn: socket.socket) -> None:
            conn.sendall(http_answer(200, b'{"result": []}'))

        with RawServer(empty) as proxy, RawServer(empty) as server:
            monkeypatch.delenv("NO_PROXY", raising=False)
            monkeypatch.delenv("no_proxy", raising=False)
            monkeypatch.setenv("HTTP_PROXY", proxy.url)
            monkeypatch.setenv("http_proxy", proxy.url)

            raw_client(server).request("GET", "/assets")

        assert server.calls == ["GET /v1/assets"]
        assert proxy.calls == []


class TestTriggerProxies:
    @pytest.mark.parametrize(
        ("environment", "url", "expected"),
        [
            ({"HTTPS_PROXY": "http://proxy.test:3128"}, "https://api.example.test/v1",
             "http://proxy.test:3128"),
            ({"https_proxy": "http://proxy.test:3128", "NO_PROXY": ".example.test"},
             "https://api.example.test/v1", None),
            ({"HTTP_PROXY": "http://proxy.test:3128"}, "http://127.0.0.1:8090/v1", None),
            ({"ALL_PROXY": "http://proxy.test:1080"}, "https://api.example.test/v1",
             "http://proxy.test:1080"),
            ({}, "https://api.example.test/v1", None),
        ],
    )
    def test_proxy_is_taken_from_the_environment_as_for_tasks(self, monkeypatch, environment, url, expected):
        from airflow_provider_ontrack.client.aio import proxy_for

        for name in ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "NO_PROXY"):
            monkeypatch.delenv(name, raising=False)
            monkeypatch.delenv(name.lower(), raising=False)
        for name, value in environment.items():
            monkeypatch.setenv(name, value)

        assert proxy_for(url) == expected


# -- single-record calls always return a record ---------------------------------------------------------


class TestHookExpectsRecords:
    @pytest.mark.parametrize(
        "answer",
        [{"status_code": 204}, {"status_code": 200, "text": ""}, {"json": [{"id": "1"}]}, {"json": "ok"}],
        ids=["204", "empty-200", "list", "string"],
    )
    @pytest.mark.parametrize(
        ("method", "url", "call"),
        [
            ("GET", ASSETS + "/A1", lambda hook: hook.get_asset("A1")),
            ("POST", ASSETS, lambda hook: hook.create_asset({"name": "Drill", "currentLocationId": "L1"})),
            ("PUT", ASSETS + "/A1", lambda hook: hook.update_asset("A1", {"name": "Drill"})),
        ],
        ids=["get", "create", "update"],
    )
    def test_no_record_is_an_error(self, requests_mock, hook, answer, method, url, call) -> None:
        requests_mock.post(AUTH_URL, **token("hook-tok"))
        requests_mock.register_uri(method, url, **answer)

        with pytest.raises(OnTrackApiError) as info:
            call(hook)

        assert "expected a record" in str(info.value)
        assert info.value.method == method

    def test_a_record_is_returned(self, requests_mock, hook) -> None:
        requests_mock.post(AUTH_URL, **token("hook-tok"))
        requests_mock.get(ASSETS + "/A1", json={"id": "A1"})

        assert hook.get_asset("A1") == {"id": "A1"}


# -- record ids are one escaped path segment ------------------------------------------------------------


class TestRecordIds:
    @pytest.mark.parametrize(
        ("record_id", "path"),
        [
            ("?pageSize=3", "/assets/%3FpageSize%3D3"),
            ("a/b", "/assets/a%2Fb"),
            ("../workers", "/assets/..%2Fworkers"),
            ("#frag", "/assets/%23frag"),
            ("a b", "/assets/a%20b"),
            ("  A1  ", "/assets/A1"),
        ],
    )
    def test_id_is_escaped_as_one_segment(self, requests_mock, hook, record_id, path) -> None:
        requests_mock.post(AUTH_URL, **token("hook-tok"))
        route = requests_mock.get(re.compile(re.escape(BASE_URL) + "/.*"), json={"id": "x"})

        hook.get_asset(record_id)

        sent = urlsplit(route.last_request.url)
        assert sent.path == urlsplit(BASE_URL).path + path
        assert sent.query == "" and sent.fragment == ""

    def test_update_escapes_the_id_too(self, requests_mock, hook) -> None:
        requests_mock.post(AUTH_URL, **token("hook-tok"))
        route = requests_mock.put(re.compile(re.escape(BASE_URL) + "/.*"), json={"id": "a/b"})

        hook.update_asset("a/b", {"name": "x"})

        assert urlsplit(route.last_request.url).path.endswith("/assets/a%2Fb")

    @pytest.mark.parametrize("record_id", ["..", ".", "", "  ", " .. ", None, 5, ["A1"]])
    @pytest.mark.parametrize(
        "call",
        [
            lambda hook, record_id: hook.get_asset(record_id),
            lambda hook, record_id: hook.update_asset(record_id, {"name": "x"}),
            lambda hook, record_id: hook.get_worker(record_id),
        ],
        ids=["get", "update", "get-worker"],
    )
    def test_unusable_id_is_refused_before_any_call(self, requests_mock, hook, record_id, call) -> None:
        with pytest.raises(OnTrackConfigError) as info:
            call(hook, record_id)

        assert info.value.field == "id"
        assert requests_mock.call_count == 0


# -- paging against servers that misbehave --------------------------------------------------------------


def numbered(count: int) -> list[dict[str, Any]]:
    return [{"id": n, "name": f"asset {n}"} for n in range(1, count + 1)]


def paged(records: list[dict[str, Any]], **envelope: Any) -> Callable[[Any, Any], dict[str, Any]]:
    """Serve ``records`` page by page with ``envelope`` keys replacing the usual size and total."""

    def answer(request: Any, context: Any) -> dict[str, Any]:
        query = query_of(request)
        page, size = int(query["page"]), int(query["pageSize"])
        body: dict[str, Any] = {"result": records[(page - 1) * size : page * size]}
        body.update(envelope)
        return body

    return answer


def first_page_always(**envelope: Any) -> Callable[[Any, Any], dict[str, Any]]:
    """Serve page 1 whatever page is asked for; fail the test if paging never stops."""
    calls: list[int] = []

    def answer(request: Any, context: Any) -> dict[str, Any]:
        calls.append(1)
        if len(calls) > 5:
            raise RuntimeError("the client keeps asking for pages")
        return {"result": numbered(3), **envelope}

    return answer


class TestHostilePaging:
    @pytest.mark.parametrize(
        "envelope",
        [{"pageSize": 3}, {"pageSize": 3, "totalRecords": 10}, {"pageSize": 3, "totalRecords": 1000}, {}],
        ids=["size", "size-and-total", "size-and-big-total", "bare"],
    )
    def test_server_ignoring_the_page_parameter(self, requests_mock, token_route, client, envelope) -> None:
        route = requests_mock.get(ASSETS, json=first_page_always(**envelope))
        yielded: list[dict[str, Any]] = []

        with pytest.raises(OnTrackApiError) as info:
            for record in client().paginate("/assets", page_size=3):
                yielded.append(record)

        assert "page_param" in str(info.value)
        assert route.call_count == 2
        assert yielded == numbered(3)

    @pytest.mark.parametrize(
        "record_id", [{"a": 1}, ["a", 1], {"nested": {"deep": [1, 2]}}], ids=["dict", "list", "nested"]
    )
    def test_unhashable_ids_do_not_break_paging(self, requests_mock, token_route, client, record_id) -> None:
        records = [{"id": {"n": n, "key": record_id}, "name": f"r{n}"} for n in range(7)]
        route = requests_mock.get(ASSETS, json=paged(records, pageSize=3, totalRecords=7))

        read = list(client().paginate("/assets", page_size=3))

        assert read == records
        assert route.call_count == 3

    @pytest.mark.parametrize(
        "envelope",
        [
            {"pageSize": True},
            {"totalRecords": True},
            {"totalRecords": "12"},
            {"pageSize": "100", "totalRecords": "12"},
            {"pageSize": -1, "totalRecords": -5},
            {"pageSize": 0},
            {"pageSize": 1.5, "totalRecords": 2.5},
            {"pageSize": None, "totalRecords": None},
            {"pageSize": [100], "totalRecords": {"n": 250}},
        ],
    )
    def test_nonsense_sizes_and_totals_are_ignored(
        self, requests_mock, token_route, client, envelope
    ) -> None:
        route = requests_mock.get(ASSETS, json=paged(numbered(250), **envelope))

        read = list(client().paginate("/assets", page_size=100))

        assert [record["id"] for record in read] == list(range(1, 251))
        assert route.call_count == 3


# -- tokens ---------------------------------------------------------------------------------------------


class TestHostileTokens:
    @pytest.mark.parametrize(
        "value", ["", "tok\r\nX-Injected: 1", "tökén", "a b", "s3cret tok3n", "tok\tx", "tok;x=1"]
    )
    def test_token_that_cannot_be_a_bearer_token_is_refused(self, requests_mock, manager, value) -> None:
        requests_mock.post(AUTH_URL, json={"access_token": value, "expires_in": 3600})

        with pytest.raises(OnTrackAuthError) as info:
            manager().get()

        message = str(info.value)
        if value:
            assert repr(value) not in message
        if len(value) > 3:  # a shorter one could be part of any word
            assert value not in message and repr(value)[1:-1] not in message
        assert "X-Injected" not in message

    def test_token_with_a_trailing_newline_is_refused(self, requests_mock, manager) -> None:
        requests_mock.post(AUTH_URL, json={"access_token": "tok\n", "expires_in": 3600})

        with pytest.raises(OnTrackAuthError):
            manager().get()

    def test_refused_token_is_never_sent(self, requests_mock, client) -> None:
        requests_mock.post(AUTH_URL, json={"access_token": "tok\r\nX-Injected: 1", "expires_in": 3600})
        route = requests_mock.get(ASSETS, json={})

        with pytest.raises(OnTrackAuthError):
            client().request("GET", "/assets")

        assert route.call_count == 0

    @pytest.mark.parametrize("expires_in", [1e-9, "1e-9", 0.001])
    def test_tiny_lifetime_is_taken_as_one_second(self, requests_mock, manager, clock, expires_in) -> None:
        route = requests_mock.post(AUTH_URL, [token("tok-1", expires_in), token("tok-2", expires_in)])
        tokens = manager()
        clock.now = 100.0

        first = tokens.get()
        clock.now = 100.5
        second = tokens.get()

        assert first == second == "tok-1"
        assert route.call_count == 1

        clock.now = 101.0
        assert tokens.get() == "tok-2"

    @pytest.mark.parametrize("expires_in", ['"inf"', '"Infinity"', "1e309", "Infinity", '"nan"', "NaN"])
    def test_endless_lifetime_falls_back_to_five_minutes(
        self, requests_mock, manager, clock, expires_in
    ) -> None:
        body = '{"access_token": "%s", "token_type": "Bearer", "expires_in": %s}'
        route = requests_mock.post(
            AUTH_URL, [{"text": body % ("tok-1", expires_in)}, {"text": body % ("tok-2", expires_in)}]
        )
        tokens = manager()

        tokens.get()
        clock.now = 269.0
        assert tokens.get() == "tok-1"
        clock.now = 271.0
        assert tokens.get() == "tok-2"

        assert route.call_count == 2

    def test_endless_lifetime_falls_back_to_the_jwt(self, requests_mock, manager, clock) -> None:
        jwts = [make_jwt({"iat": 1000, "exp": 1600, "n": n}) for n in (1, 2)]
        body = '{"access_token": "%s", "token_type": "Bearer", "expires_in": 1e309}'
        route = requests_mock.post(AUTH_URL, [{"text": body % jwt} for jwt in jwts])
        tokens = manager()

        tokens.get()
        clock.now = 539.0
        assert tokens.get() == jwts[0]
        clock.now = 541.0
        assert tokens.get() == jwts[1]

        assert route.call_count == 2

    def test_refusal_echoing_the_request_hides_every_form_of_the_secrets(
        self, requests_mock, manager
    ) -> None:
        password = 'pä ss/w+rd&="%~'
        client_secret = "s3c r/t+=&"
        echoed: list[str] = []

        def echo(request: Any, context: Any) -> dict[str, Any]:
            context.status_code = 400
            echoed.append(f"{request.headers['Authorization']} {request.text}")
            return {"error": "invalid_request", "error_description": f"cannot read {echoed[-1]}"}

        requests_mock.post(AUTH_URL, json=echo)
        tokens = manager(password=password, client_secret=client_secret)
        basic = base64.b64encode(f"{tokens.settings.client_id}:{client_secret}".encode()).decode()

        with pytest.raises(OnTrackAuthError) as info:
            tokens.get()

        message = str(info.value)
        sent_password = re.search(r"password=([^&]*)", echoed[0]).group(1)
        assert basic in echoed[0] and sent_password in echoed[0]  # the server did echo them
        for form in (
            password,
            client_secret,
            quote_plus(password),
            quote(password, safe=""),
            quote(password),
            quote_plus(client_secret),
            basic,
            sent_password,
        ):
            assert form not in message
        assert "***" in message
        assert info.value.status == 400

    @pytest.mark.parametrize(
        ("password", "padding"),
        [('pa"ss\\word-1', 0), ("pass  word-number-2", 0), ("cut-in-the-middle-secret-3", 420)],
        ids=["json-escaped", "whitespace", "cut-off"],
    )
    def test_refusal_quoting_the_raw_password_hides_it(
        self, requests_mock, manager, password, padding
    ) -> None:
        description = "x" * padding + f" wrong password {password} for this user"
        requests_mock.post(
            AUTH_URL, status_code=400, json={"error": "invalid_grant", "error_description": description}
        )

        with pytest.raises(OnTrackAuthError) as info:
            manager(password=password).get()

        message = str(info.value)
        for form in (password, json.dumps(password)[1:-1], " ".join(password.split()), password[:12]):
            assert form not in message

    @pytest.mark.parametrize("status", [200, 400])
    @pytest.mark.parametrize("opening", ["[", '{"a":'])
    def test_deeply_nested_token_answer(self, requests_mock, manager, status, opening) -> None:
        closing = "]" if opening == "[" else "}"
        requests_mock.post(AUTH_URL, status_code=status, text=opening * 100_000 + "1" + closing * 100_000)

        with pytest.raises(OnTrackAuthError) as info:
            manager().get()

        assert info.value.status == status
        assert len(str(info.value)) < 3000

    def test_deeply_nested_jwt_claims_fall_back(self, requests_mock, manager, clock) -> None:
        deep = make_jwt("[" * 100_000 + "]" * 100_000)
        route = requests_mock.post(AUTH_URL, [{"json": {"access_token": deep}}, token("tok-2")])
        tokens = manager()

        assert tokens.get() == deep
        clock.now = 271.0
        assert tokens.get() == "tok-2"

        assert route.call_count == 2

    def test_deeply_nested_api_answer(self, requests_mock, token_route, client) -> None:
        requests_mock.get(ASSETS, text="[" * 100_000 + "]" * 100_000)

        with pytest.raises(OnTrackApiError) as info:
            client().request("GET", "/assets")

        assert "expected JSON" in str(info.value)

    def test_secret_forms(self, settings) -> None:
        config = settings(client_id="cid", client_secret="s3c r/t+", password="pä ss/w+rd")

        forms = config.secret_forms

        basic = base64.b64encode(b"cid:s3c r/t+").decode()
        for secret in ("s3c r/t+", "pä ss/w+rd"):
            assert secret in forms
            assert quote_plus(secret) in forms
            assert quote(secret, safe="") in forms
        assert basic in forms
        assert list(forms) == sorted(forms, key=len, reverse=True)


# -- settings --------------------------------------------------------------------------------------------


def from_fields(host: str | None = BASE_URL, **extra: Any) -> OnTrackSettings:
    extras: dict[str, Any] = {"client_id": "the-client", "client_secret": "the-secret"}
    extras.update(extra)
    return OnTrackSettings.from_connection_fields(
        host=host, login="techuser@api-user.hilti.cloud", password="pw", extra=extras
    )


class TestHostileSettings:
    @pytest.mark.parametrize(
        "url",
        [
            "https://api.example.test:99999/v1",
            "https://api.example.test:abc/v1",
            "https://api.example.test:-1/v1",
            "https://api.example.test/v 1",
            "https://api.example .test/v1",
            "https://api.example.test/v1\n/x",
            "https://api.example.test/\tv1",
            "http:/127.0.0.1:8080/v1",
            "https:/api.example.test/v1",
            "https:api.example.test/v1",
            "https://api.example.test/v1?",
            "https://api.example.test/v1#",
            "https://api.example.test/v1?x=1",
            "ftp://api.example.test/v1",
        ],
    )
    @pytest.mark.parametrize("field", ["host", "auth_url"])
    def test_bad_url_is_refused(self, url, field) -> None:
        with pytest.raises(OnTrackConfigError) as info:
            if field == "host":
                from_fields(host=url)
            else:
                from_fields(auth_url=url)

        assert info.value.field == field

    @pytest.mark.parametrize("name", ["page_size", "max_page_size", "max_retries", "timeout"])
    @pytest.mark.parametrize("value", [10**400, -(10**400), "1e400"])
    def test_huge_number_is_refused_by_name(self, name, value) -> None:
        with pytest.raises(OnTrackConfigError) as info:
            from_fields(**{name: value})

        assert info.value.field == name

    @pytest.mark.parametrize("empty", [None, "", "   "])
    @pytest.mark.parametrize("legacy_first", [True, False])
    def test_empty_plain_secret_yields_to_the_legacy_one(self, empty, legacy_first) -> None:
        pairs = [("extra__ontrack__client_secret", "legacy"), ("client_secret", empty)]
        extra = dict(pairs if legacy_first else reversed(pairs))

        config = OnTrackSettings.from_connection_fields(
            host=BASE_URL, login="user", password="pw", extra={"client_id": "cid", **extra}
        )

        assert config.client_secret == "legacy"

    def test_filled_plain_secret_wins_over_the_legacy_one(self) -> None:
        extra = {"client_id": "cid", "client_secret": "plain", "extra__ontrack__client_secret": "legacy"}

        config = OnTrackSettings.from_connection_fields(host=BASE_URL, login="u", password="p", extra=extra)

        assert config.client_secret == "plain"

    @pytest.mark.parametrize(
        ("extra", "field"),
        [
            ({"calls_per_second": "fast"}, "calls_per_second"),
            ({"page_size": 10**400}, "page_size"),
            ({"auth_url": "https://sso.example.test:99999/token"}, "auth_url"),
            ({"client_id": None}, "client_id"),
        ],
    )
    def test_hook_names_the_field_once_and_the_connection(self, monkeypatch, extra, field) -> None:
        extras = {"client_id": "cid", "client_secret": "secret", **extra}
        connection = {
            "conn_type": "ontrack",
            "host": BASE_URL,
            "login": "u",
            "password": "p",
            "extra": extras,
        }
        monkeypatch.setenv("AIRFLOW_CONN_ONTRACK_BROKEN", json.dumps(connection))

        with pytest.raises(OnTrackConfigError) as info:
            OnTrackHook("ontrack_broken").get_asset("A1")

        assert info.value.field == field
        assert str(info.value).count(field) == 1
        assert "'ontrack_broken'" in str(info.value)


# -- pacing ---------------------------------------------------------------------------------------------


def sandbox_settings(server: OnTrackSandbox, **overrides: Any) -> OnTrackSettings:
    values: dict[str, Any] = {
        "base_url": server.base_url,
        "auth_url": server.token_url,
        "client_id": SANDBOX_CLIENT_ID,
        "client_secret": SANDBOX_CLIENT_SECRET,
        "username": SANDBOX_USERNAME,
        "password": SANDBOX_PASSWORD,
        "retry_delay": 0.05,
    }
    values.update(overrides)
    return OnTrackSettings(**values)


class TestPacing:
    @pytest.mark.parametrize("rate", [1.0, 2.0, 4.0, 20.0])
    def test_calls_leave_further_apart_than_the_rate_asks(self, clock, sleeps, rate) -> None:
        sleeps.clock = clock
        pacer = CallPacer(rate, clock=clock, sleep=sleeps)
        starts = []

        for _ in range(5):
            pacer.wait_for_slot()
            starts.append(clock.now)

        gaps = [later - earlier for earlier, later in pairwise(starts)]
        assert SPACING_MARGIN > 1
        assert gaps == pytest.approx([SPACING_MARGIN / rate] * 4)
        assert min(gaps) > 1 / rate

    def test_a_slower_client_of_the_tenant_keeps_the_margin(self) -> None:
        pacer = shared_pacer(("tenant", "client", "user"), 5.0)

        same = shared_pacer(("tenant", "client", "user"), 2.0)

        assert same is pacer
        assert pacer.interval == pytest.approx(SPACING_MARGIN / 2.0)
        assert pacer.interval > 1 / 2.0

    @pytest.mark.timeout(60)
    def test_a_client_at_the_gateway_rate_is_never_refused(self, monkeypatch) -> None:
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        with OnTrackSandbox(rate_limit=2, asset_count=10) as server:
            api = OnTrackClient(sandbox_settings(server, calls_per_second=2))
            try:
                for _ in range(12):
                    api.request("GET", "/locations")
            finally:
                api.close()

            stats = server.stats()

        assert stats["rejected_429"] == 0
        assert stats["calls"]["GET /locations"] == 12

    @pytest.mark.timeout(60)
    def test_threads_sharing_a_hook_never_send_an_expired_token(self, monkeypatch) -> None:
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        with OnTrackSandbox(token_lifetime=3, asset_count=10) as server:
            extras = {
                "client_id": SANDBOX_CLIENT_ID,
                "client_secret": SANDBOX_CLIENT_SECRET,
                "auth_url": server.token_url,
                "calls_per_second": 4,
                "retry_delay": 0.05,
            }
            connection = {
                "conn_type": "ontrack",
                "host": server.base_url,
                "login": SANDBOX_USERNAME,
                "password": SANDBOX_PASSWORD,
                "extra": extras,
            }
            monkeypatch.setenv("AIRFLOW_CONN_ONTRACK_SHARED", json.dumps(connection))
            shared = OnTrackHook("ontrack_shared")
            tokens = shared.client.tokens
            rejected: list[str] = []
            discard = tokens.discard
            monkeypatch.setattr(tokens, "discard", lambda value: (rejected.append(value), discard(value)))
            failures: list[Exception] = []

            def three_calls() -> None:
                try:
                    for _ in range(3):
                        shared.request("GET", "/locations")
                except Exception as exc:  # the assertion below reports it
                    failures.append(exc)

            threads = [threading.Thread(target=three_calls) for _ in range(8)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=50)
            shared.client.close()
            stats = server.stats()

        assert failures == []
        assert stats["calls"]["GET /locations"] == 24 + len(rejected)
        assert rejected == []
        assert stats["token_requests"] >= 2  # the 3 s token was renewed on the way

"""Tests of the access token manager: the grant request, caching, renewal, retries and refusals."""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
from typing import Any
from urllib.parse import parse_qs

import pytest
import requests

from airflow_provider_ontrack.client.core import OnTrackClient
from airflow_provider_ontrack.client.errors import OnTrackAuthError
from airflow_provider_ontrack.client.tokens import TokenManager, forget_cached_tokens

AUTH_URL = "https://sso.example.test/hc/token"


def token_body(value: str = "tok-1", expires_in: Any = 3600, token_type: Any = "Bearer") -> dict[str, Any]:
    body: dict[str, Any] = {"access_token": value}
    if expires_in is not None:
        body["expires_in"] = expires_in
    if token_type is not None:
        body["token_type"] = token_type
    return body


def make_jwt(claims: dict[str, Any]) -> str:
    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'RS256', 'typ': 'JWT'})}.{part(claims)}.c2lnbmF0dXJl"


@pytest.fixture
def manager(settings, clock, sleeps):
    """Build a token manager of the fake tenant with a fake clock and a recorded sleep."""

    def build(**overrides: Any) -> TokenManager:
        return TokenManager(settings(**overrides), session=requests.Session(), clock=clock, sleep=sleeps)

    return build


class TestTokenRequest:
    def test_password_grant_with_basic_client_auth(self, requests_mock, manager) -> None:
        route = requests_mock.post(AUTH_URL, json=token_body("tok-abc"))
        tokens = manager()

        assert tokens.get() == "tok-abc"

        assert route.call_count == 1
        sent = route.last_request
        assert sent.method == "POST"
        assert sent.url == AUTH_URL
        expected = base64.b64encode(f"{tokens.settings.client_id}:{tokens.settings.client_secret}".encode())
        assert sent.headers["Authorization"] == "Basic " + expected.decode()
        assert sent.headers["Content-Type"] == "application/x-www-form-urlencoded"
        form = parse_qs(sent.text, strict_parsing=True)
        assert form == {
            "grant_type": ["password"],
            "username": [tokens.settings.username],
            "password": [tokens.settings.password],
            "scope": ["HC.Request.AllScopes"],
        }
        assert "client_id" not in form and "client_secret" not in form
        assert tokens.settings.client_secret not in sent.text
        assert tokens.settings.client_id not in sent.text

    def test_special_characters_in_password_are_form_encoded(self, requests_mock, manager) -> None:
        route = requests_mock.post(AUTH_URL, json=token_body())
        manager(password="p&w=d +%x", scope="A B").get()
        form = parse_qs(route.last_request.text)
        assert form["password"] == ["p&w=d +%x"]
        assert form["scope"] == ["A B"]

    def test_on_secret_gets_the_token(self, requests_mock, settings, clock, sleeps) -> None:
        requests_mock.post(AUTH_URL, json=token_body("tok-for-masker"))
        seen: list[str] = []
        tokens = TokenManager(
            settings(), session=requests.Session(), on_secret=seen.append, clock=clock, sleep=sleeps
        )
        tokens.get()
        tokens.get()
        assert seen == ["tok-for-masker"]

    def test_on_secret_gets_a_refused_token_type_too(self, requests_mock, settings, clock, sleeps) -> None:
        requests_mock.post(AUTH_URL, json=token_body("tok-mac", token_type="mac"))
        seen: list[str] = []
        tokens = TokenManager(
            settings(), session=requests.Session(), on_secret=seen.append, clock=clock, sleep=sleeps
        )
        with pytest.raises(OnTrackAuthError):
            tokens.get()
        assert seen == ["tok-mac"]


class TestTokenCache:
    def test_cached_across_calls(self, requests_mock, manager, clock) -> None:
        route = requests_mock.post(AUTH_URL, json=token_body("tok-1"))
        tokens = manager()
        assert [tokens.get() for _ in range(5)] == ["tok-1"] * 5
        clock.now = 1000.0
        assert tokens.get() == "tok-1"
        assert route.call_count == 1
        assert tokens.requests_made == 1

    def test_shared_by_two_managers_with_same_settings(self, requests_mock, manager) -> None:
        route = requests_mock.post(AUTH_URL, json=token_body("tok-shared"))
        assert manager().get() == "tok-shared"
        assert manager().get() == "tok-shared"
        assert route.call_count == 1

    def test_shared_by_two_clients_with_same_settings(self, requests_mock, settings) -> None:
        route = requests_mock.post(AUTH_URL, json=token_body("tok-shared"))
        first = OnTrackClient(settings(), sleep=lambda s: None)
        second = OnTrackClient(settings(), sleep=lambda s: None)
        try:
            assert first.tokens.get() == second.tokens.get() == "tok-shared"
        finally:
            first.close()
            second.close()
        assert route.call_count == 1

    @pytest.mark.parametrize(
        "change",
        [{"password": "another-password"}, {"username": "other@api-user"}, {"client_secret": "other-secret"}],
    )
    def test_other_identity_gets_its_own_token(self, requests_mock, manager, change) -> None:
        route = requests_mock.post(AUTH_URL, [{"json": token_body("tok-a")}, {"json": token_body("tok-b")}])
        assert manager().get() == "tok-a"
        assert manager(**change).get() == "tok-b"
        assert manager().get() == "tok-a"
        assert route.call_count == 2

    def test_forget_cached_tokens(self, requests_mock, manager) -> None:
        route = requests_mock.post(AUTH_URL, [{"json": token_body("tok-a")}, {"json": token_body("tok-b")}])
        assert manager().get() == "tok-a"
        forget_cached_tokens()
        assert manager().get() == "tok-b"
        assert route.call_count == 2

    def test_discard_forgets_the_rejected_token_only(self, requests_mock, manager) -> None:
        route = requests_mock.post(AUTH_URL, [{"json": token_body("tok-a")}, {"json": token_body("tok-b")}])
        tokens = manager()
        assert tokens.get() == "tok-a"
        tokens.discard("some-older-token")
        assert tokens.get() == "tok-a"
        tokens.discard("tok-a")
        assert tokens.get() == "tok-b"
        assert route.call_count == 2

    def test_one_request_for_ten_threads_on_an_empty_cache(self, requests_mock, settings) -> None:
        def slow_token(request, context) -> dict[str, Any]:
            time.sleep(0.2)
            return token_body("tok-single")

        route = requests_mock.post(AUTH_URL, json=slow_token)
        config = settings()
        barrier = threading.Barrier(10)
        results: list[str] = []
        errors: list[BaseException] = []

        def worker() -> None:
            tokens = TokenManager(config, session=requests.Session())
            barrier.wait()
            try:
                results.append(tokens.get())
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=worker) for _ in range(10)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=10)

        assert errors == []
        assert results == ["tok-single"] * 10
        assert route.call_count == 1


class TestTokenLifetime:
    @staticmethod
    def requests_at(tokens: TokenManager, clock, moments: list[float]) -> list[int]:
        made = []
        for moment in moments:
            clock.now = moment
            tokens.get()
            made.append(tokens.requests_made)
        return made

    def test_renewed_ten_percent_before_expiry(self, requests_mock, manager, clock) -> None:
        requests_mock.post(AUTH_URL, [{"json": token_body("tok-1", 100)}, {"json": token_body("tok-2", 100)}])
        tokens = manager()
        assert tokens.get() == "tok-1"
        clock.now = 89.0
        assert tokens.get() == "tok-1"
        assert tokens.requests_made == 1
        clock.now = 90.0
        assert tokens.get() == "tok-2"
        assert tokens.requests_made == 2

    def test_margin_is_at_most_two_minutes(self, requests_mock, manager, clock) -> None:
        requests_mock.post(AUTH_URL, json=token_body(expires_in=7200))
        assert self.requests_at(manager(), clock, [0, 7079, 7080]) == [1, 1, 2]

    def test_expires_in_as_text(self, requests_mock, manager, clock) -> None:
        requests_mock.post(AUTH_URL, json=token_body(expires_in="3600"))
        assert self.requests_at(manager(), clock, [0, 3479, 3480]) == [1, 1, 2]

    @pytest.mark.parametrize("expires_in", [None, "soon", 0, -5, True, ""])
    def test_unusable_expires_in_falls_back_to_five_minutes(
        self, requests_mock, manager, clock, expires_in
    ) -> None:
        requests_mock.post(AUTH_URL, json=token_body("opaque-token", expires_in=expires_in))
        assert self.requests_at(manager(), clock, [0, 269, 270]) == [1, 1, 2]

    def test_jwt_lifetime_from_exp_minus_iat(self, requests_mock, manager, clock) -> None:
        # Issued long ago by this machine's clock: only exp - iat may count, not exp - now.
        jwt = make_jwt({"sub": "u", "iat": 1_000_000, "exp": 1_001_000})
        requests_mock.post(AUTH_URL, json=token_body(jwt, expires_in=None))
        assert self.requests_at(manager(), clock, [0, 899, 900]) == [1, 1, 2]

    def test_jwt_without_iat_uses_exp_against_now(self, requests_mock, manager, clock) -> None:
        jwt = make_jwt({"sub": "u", "exp": int(time.time()) + 500})
        requests_mock.post(AUTH_URL, json=token_body(jwt, expires_in=None))
        assert self.requests_at(manager(), clock, [0, 440, 460]) == [1, 1, 2]

    def test_expires_in_wins_over_jwt(self, requests_mock, manager, clock) -> None:
        jwt = make_jwt({"iat": 0, "exp": 100_000})
        requests_mock.post(AUTH_URL, json=token_body(jwt, expires_in=100))
        assert self.requests_at(manager(), clock, [0, 89, 90]) == [1, 1, 2]

    @pytest.mark.parametrize("token_type", ["bearer", "BEARER", "Bearer", None])
    def test_bearer_in_any_case_accepted(self, requests_mock, manager, token_type) -> None:
        requests_mock.post(AUTH_URL, json=token_body("tok-ok", token_type=token_type))
        assert manager().get() == "tok-ok"

    def test_other_token_type_refused(self, requests_mock, manager) -> None:
        requests_mock.post(AUTH_URL, json=token_body("tok-mac-value", token_type="mac"))
        with pytest.raises(OnTrackAuthError) as info:
            manager().get()
        assert "'mac'" in str(info.value)
        assert "tok-mac-value" not in str(info.value)

    @pytest.mark.parametrize(
        "kwargs",
        [
            {"json": {"token": "x"}},
            {"json": {"access_token": 42}},
            {"json": ["tok"]},
            {"text": "<html>ok</html>", "headers": {"Content-Type": "text/html"}},
        ],
    )
    def test_200_without_access_token_refused(self, requests_mock, manager, kwargs) -> None:
        requests_mock.post(AUTH_URL, **kwargs)
        with pytest.raises(OnTrackAuthError) as info:
            manager().get()
        assert info.value.status == 200
        assert "access_token" in str(info.value)


class TestTokenRefusalsAndRetries:
    def test_invalid_client(self, requests_mock, manager) -> None:
        requests_mock.post(AUTH_URL, status_code=401, json={"error": "invalid_client"})
        with pytest.raises(OnTrackAuthError) as info:
            manager().get()
        assert info.value.status == 401
        assert info.value.error == "invalid_client"
        assert "client_id" in str(info.value) and "client_secret" in str(info.value)
        assert requests_mock.call_count == 1

    def test_401_without_error_code_blames_the_client(self, requests_mock, manager) -> None:
        requests_mock.post(AUTH_URL, status_code=401, text="Unauthorized")
        with pytest.raises(OnTrackAuthError) as info:
            manager().get()
        assert "client_secret" in str(info.value)

    def test_invalid_grant(self, requests_mock, manager) -> None:
        requests_mock.post(
            AUTH_URL, status_code=403, json={"error": "invalid_grant", "error_description": "Bad credentials"}
        )
        with pytest.raises(OnTrackAuthError) as info:
            manager().get()
        assert info.value.status == 403
        assert info.value.error == "invalid_grant"
        message = str(info.value)
        assert "login" in message and "password" in message
        assert "Bad credentials" in message
        assert requests_mock.call_count == 1

    def test_invalid_grant_as_400(self, requests_mock, manager) -> None:
        requests_mock.post(AUTH_URL, status_code=400, json={"error": "invalid_grant"})
        with pytest.raises(OnTrackAuthError) as info:
            manager().get()
        assert "login and password" in str(info.value)

    def test_429_with_retry_after_is_retried_once(self, requests_mock, manager, sleeps) -> None:
        route = requests_mock.post(
            AUTH_URL,
            [{"status_code": 429, "headers": {"Retry-After": "7"}}, {"json": token_body("tok-late")}],
        )
        assert manager().get() == "tok-late"
        assert route.call_count == 2
        assert sleeps.calls == [7.0]

    def test_retry_after_above_max_retry_delay_fails_at_once(self, requests_mock, manager, sleeps) -> None:
        route = requests_mock.post(AUTH_URL, status_code=429, headers={"Retry-After": "600"})
        with pytest.raises(OnTrackAuthError) as info:
            manager(max_retry_delay=60).get()
        assert "max_retry_delay" in str(info.value)
        assert route.call_count == 1
        assert sleeps.calls == []

    def test_503_html_until_retries_run_out(self, requests_mock, manager, sleeps) -> None:
        route = requests_mock.post(
            AUTH_URL,
            status_code=503,
            text="<html><title>Service Unavailable</title></html>",
            headers={"Content-Type": "text/html"},
        )
        with pytest.raises(OnTrackAuthError) as info:
            manager(max_retries=3, retry_delay=0.5, max_retry_delay=60).get()
        assert route.call_count == 4
        assert "4 tries" in str(info.value)
        assert "503" in str(info.value)
        assert len(sleeps.calls) == 3
        for retry, delay in enumerate(sleeps.calls):
            ceiling = 0.5 * 2**retry
            assert ceiling / 2 <= delay <= ceiling

    def test_no_retries_when_max_retries_is_zero(self, requests_mock, manager, sleeps) -> None:
        route = requests_mock.post(AUTH_URL, status_code=502)
        with pytest.raises(OnTrackAuthError):
            manager(max_retries=0).get()
        assert route.call_count == 1
        assert sleeps.calls == []

    def test_connection_error_is_retried(self, requests_mock, manager, sleeps) -> None:
        route = requests_mock.post(
            AUTH_URL, [{"exc": requests.exceptions.ConnectionError}, {"json": token_body("tok-after")}]
        )
        assert manager().get() == "tok-after"
        assert route.call_count == 2
        assert len(sleeps.calls) == 1


SECRET_CASES = {
    "invalid_client": [{"status_code": 401, "json": {"error": "invalid_client"}}],
    "invalid_grant": [{"status_code": 403, "json": {"error": "invalid_grant"}}],
    "echoed_secrets": [
        {
            "status_code": 400,
            "json": {"error": "invalid_request", "error_description": "{secret} / {password} refused"},
        }
    ],
    "echoed_secrets_html": [{"status_code": 403, "text": "<html>{secret} and {password}</html>"}],
    "429_then_token": [
        {"status_code": 429, "headers": {"Retry-After": "1"}},
        {"json": {"access_token": "{token}", "expires_in": 3600, "token_type": "Bearer"}},
    ],
    "503_html": [{"status_code": 503, "text": "<html><title>Down</title>{secret}</html>"}],
    "mac_token": [{"json": {"access_token": "{token}", "token_type": "mac"}}],
    "token_without_lifetime": [{"json": {"access_token": "{token}"}}],
}


class TestNoSecretsLeak:
    @pytest.mark.parametrize("case", sorted(SECRET_CASES))
    def test_no_secret_in_errors_or_debug_logs(self, requests_mock, manager, caplog, case) -> None:
        caplog.set_level(logging.DEBUG)
        tokens = manager(max_retries=2)
        token_value = "eyJ-token-value-Qw3"
        secrets = [tokens.settings.client_secret, tokens.settings.password, token_value]

        def fill(item: Any) -> Any:
            if isinstance(item, str):
                return item.format(
                    secret=tokens.settings.client_secret, password=tokens.settings.password, token=token_value
                )
            if isinstance(item, dict):
                return {key: fill(value) for key, value in item.items()}
            return item

        requests_mock.post(AUTH_URL, [fill(response) for response in SECRET_CASES[case]])

        message = ""
        try:
            assert tokens.get() == token_value
        except OnTrackAuthError as exc:
            message = str(exc) + repr(exc)

        assert requests_mock.call_count >= 1
        for secret in secrets:
            assert secret not in message
            assert secret not in caplog.text
        if case.startswith("echoed"):
            assert "***" in message
        if case == "429_then_token":
            assert "retrying" in caplog.text  # the log was captured, so its silence about secrets counts

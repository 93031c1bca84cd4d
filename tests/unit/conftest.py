"""Fixtures of the unit tests: a clean token cache and pacer registry, and fast settings."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from airflow_provider_ontrack.client.core import OnTrackClient
from airflow_provider_ontrack.client.settings import OnTrackSettings

BASE_URL = "https://api.example.test/ts/ontrack/unite/v1"
AUTH_URL = "https://sso.example.test/hc/token"
CLIENT_ID = "client-id-4711"
CLIENT_SECRET = "cl13nt-s3cr3t-Xq9"
USERNAME = "techuser-1234@api-user.hilti.cloud"
PASSWORD = "g3n3rat3d-pa55word-Zz7"


@pytest.fixture
def settings() -> Callable[..., OnTrackSettings]:
    """Build settings of a fake tenant; keyword arguments override any field."""

    def build(**overrides: Any) -> OnTrackSettings:
        values: dict[str, Any] = {
            "base_url": BASE_URL,
            "auth_url": AUTH_URL,
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "username": USERNAME,
            "password": PASSWORD,
            "retry_delay": 0.001,
            "calls_per_second": 1000.0,
        }
        values.update(overrides)
        return OnTrackSettings(**values)

    return build


class SleepRecorder:
    """A stand-in for ``time.sleep`` that records each delay and, if given a clock, advances it."""

    def __init__(self, clock: FakeClock | None = None) -> None:
        self.calls: list[float] = []
        self.clock = clock

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)
        if self.clock is not None:
            self.clock.now += seconds


class FakeClock:
    """A monotonic clock that moves only when told to."""

    def __init__(self, start: float = 0.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sleeps() -> SleepRecorder:
    return SleepRecorder()


def token(value: str, expires_in: int = 3600) -> dict[str, Any]:
    """A requests-mock answer of the token endpoint issuing ``value``."""
    return {"json": {"access_token": value, "expires_in": expires_in, "token_type": "Bearer"}}


@pytest.fixture
def token_route(requests_mock):
    """A token endpoint that issues tok-1, tok-2, tok-3, ... one per request."""
    return requests_mock.post(AUTH_URL, [token(f"tok-{n}") for n in range(1, 10)])


@pytest.fixture
def client(settings, sleeps):
    """Build a client of the fake tenant whose retries sleep into ``sleeps``."""
    made: list[OnTrackClient] = []

    def build(**overrides: Any) -> OnTrackClient:
        made.append(OnTrackClient(settings(**overrides), sleep=sleeps))
        return made[-1]

    yield build
    for each in made:
        each.close()

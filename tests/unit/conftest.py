"""Fixtures of the unit tests: a clean token cache and pacer registry, and fast settings."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from airflow_provider_ontrack.client import pacing, tokens
from airflow_provider_ontrack.client.settings import OnTrackSettings

BASE_URL = "https://api.example.test/ts/ontrack/unite/v1"
AUTH_URL = "https://sso.example.test/hc/token"
CLIENT_ID = "client-id-4711"
CLIENT_SECRET = "cl13nt-s3cr3t-Xq9"
USERNAME = "techuser-1234@api-user.hilti.cloud"
PASSWORD = "g3n3rat3d-pa55word-Zz7"


@pytest.fixture(autouse=True)
def _clean_process_state() -> Iterator[None]:
    """Start every test with no cached token and no shared pacer, as a new process would."""
    tokens.forget_cached_tokens()
    pacing._pacers.clear()
    yield
    tokens.forget_cached_tokens()
    pacing._pacers.clear()


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

"""Fixtures shared by all tests: an isolated Airflow home, sandboxes, and ON!Track connections."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterator

import pytest

# Airflow reads its home and settings on first import; point it at a scratch folder before that.
os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="ontrack-tests-airflow-"))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")

from airflow_provider_ontrack.client import pacing, tokens  # noqa: E402
from airflow_provider_ontrack.sandbox import (  # noqa: E402
    SANDBOX_CLIENT_ID,
    SANDBOX_CLIENT_SECRET,
    SANDBOX_PASSWORD,
    SANDBOX_USERNAME,
    OnTrackSandbox,
)

SECRETS = (SANDBOX_CLIENT_SECRET, SANDBOX_PASSWORD)


@pytest.fixture(autouse=True)
def _fresh_client_state() -> Iterator[None]:
    """Each test starts with no cached token and no shared pacer, as a new task process would."""
    tokens.forget_cached_tokens()
    pacing._pacers.clear()
    yield
    tokens.forget_cached_tokens()
    pacing._pacers.clear()


@pytest.fixture(scope="session")
def sandbox() -> Iterator[OnTrackSandbox]:
    """A sandbox shared by tests that only read and that reset the call counters they look at."""
    with OnTrackSandbox(seed=7) as server:
        yield server


@pytest.fixture
def fresh_sandbox() -> Iterator[OnTrackSandbox]:
    """A sandbox of its own, for tests that write records or change the server's behaviour."""
    with OnTrackSandbox(seed=7) as server:
        yield server


def connection_for(server: OnTrackSandbox, **extra: object) -> dict:
    """The Airflow connection of a sandbox, as the JSON form of an ``AIRFLOW_CONN_...`` variable."""
    extras = {
        "client_id": SANDBOX_CLIENT_ID,
        "client_secret": SANDBOX_CLIENT_SECRET,
        "auth_url": server.token_url,
        "calls_per_second": 20,
        "retry_delay": 0.05,
    }
    extras.update(extra)
    return {
        "conn_type": "ontrack",
        "host": server.base_url,
        "login": SANDBOX_USERNAME,
        "password": SANDBOX_PASSWORD,
        "extra": extras,
    }


@pytest.fixture
def ontrack_connection(monkeypatch: pytest.MonkeyPatch) -> Callable[..., str]:
    """Register a sandbox's connection under a conn id (``ontrack_default`` unless told otherwise)."""

    def register(server: OnTrackSandbox, conn_id: str = "ontrack_default", **extra: object) -> str:
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(connection_for(server, **extra)))
        return conn_id

    return register

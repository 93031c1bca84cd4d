"""Fixtures of the integration tests: a private PostgreSQL server and a fresh database per test."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.postgres import PostgresServer, PostgresUnavailable

POSTGRES_CONN_ID = "ontrack_postgres_test"


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL cluster of the test session, in a temp dir, on 127.0.0.1 and a free port.

    Fails, never skips, when PostgreSQL is missing or does not start: the SQL sink must be tested on
    a real server, and a skip would hide that it was not.
    """
    problem = None
    try:
        server = PostgresServer().start()
    except PostgresUnavailable as error:
        problem = str(error)
    if problem is not None:
        # Outside the except block, so that the report shows the reason without a traceback.
        pytest.fail(f"PostgreSQL for the tests is not available: {problem}", pytrace=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgres_database(postgres_server: PostgresServer) -> str:
    """A new empty database, so that no test sees another's tables."""
    return postgres_server.create_database()


@pytest.fixture
def postgres_conn(
    postgres_server: PostgresServer, postgres_database: str, monkeypatch: pytest.MonkeyPatch
) -> str:
    """The id of an Airflow connection to a new empty database of the test's own."""
    monkeypatch.setenv(
        f"AIRFLOW_CONN_{POSTGRES_CONN_ID.upper()}",
        json.dumps(postgres_server.connection(postgres_database)),
    )
    return POSTGRES_CONN_ID

"""Memory of a sync stays flat however many records it reads."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import tracemalloc
import urllib.request
from pathlib import Path

import pytest

from airflow_provider_ontrack.operators.sql import OnTrackToSqlOperator
from airflow_provider_ontrack.sandbox import (
    SANDBOX_CLIENT_ID,
    SANDBOX_CLIENT_SECRET,
    SANDBOX_PASSWORD,
    SANDBOX_USERNAME,
)


def _sandbox_process(assets: int):
    """A sandbox in a process of its own, so that its memory is not counted as the client's."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "ontrack-sandbox"), "--port", str(port), "--assets", str(assets)],
        stdout=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            urllib.request.urlopen(f"{url}/_sandbox/tenant", timeout=2).close()
            return process, url
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("the sandbox did not start")


def _peak_of_sync(assets: int, monkeypatch, tmp_path) -> int:
    process, url = _sandbox_process(assets)
    try:
        monkeypatch.setenv(
            "AIRFLOW_CONN_ONTRACK_DEFAULT",
            json.dumps(
                {
                    "conn_type": "ontrack",
                    "host": f"{url}/ts/ontrack/unite/v1",
                    "login": SANDBOX_USERNAME,
                    "password": SANDBOX_PASSWORD,
                    "extra": {
                        "client_id": SANDBOX_CLIENT_ID,
                        "client_secret": SANDBOX_CLIENT_SECRET,
                        "auth_url": f"{url}/hc/token",
                        "calls_per_second": 100,
                    },
                }
            ),
        )
        monkeypatch.setenv(
            "AIRFLOW_CONN_MEMORY_DB",
            json.dumps({"conn_type": "sqlite", "host": str(tmp_path / f"{assets}.db")}),
        )
        # One small sync first, so that imports and table creation are not counted.
        OnTrackToSqlOperator(task_id="warm_up", resource="locations", sql_conn_id="memory_db").execute({})

        tracemalloc.start()
        summary = OnTrackToSqlOperator(task_id="sync", resource="assets", sql_conn_id="memory_db").execute({})
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    finally:
        process.terminate()
        process.wait(timeout=10)

    assert summary["rows"] == assets
    return peak


@pytest.mark.timeout(120)
def test_peak_memory_does_not_grow_with_the_tenant(monkeypatch, tmp_path):
    small = _peak_of_sync(2_000, monkeypatch, tmp_path)
    large = _peak_of_sync(20_000, monkeypatch, tmp_path)

    # Ten times the records may not cost more than a fifth more memory: one page is held at a time.
    assert large < small * 1.2, (small, large)

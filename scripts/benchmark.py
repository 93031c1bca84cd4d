"""Measure what a sync costs: API calls, token requests, peak memory, and import time of the operators.

Each tenant size runs against its own ``ontrack-sandbox`` process, so that the sandbox's memory is
not counted. Run with ``.venv/bin/python scripts/benchmark.py [asset counts...]``.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import tracemalloc
import urllib.request
from pathlib import Path

os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="ontrack-bench-"))

from airflow_provider_ontrack.sandbox import (  # noqa: E402
    SANDBOX_CLIENT_ID,
    SANDBOX_CLIENT_SECRET,
    SANDBOX_PASSWORD,
    SANDBOX_USERNAME,
)

BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as answer:
        return json.load(answer)


def _start_sandbox(assets: int) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    process = subprocess.Popen(
        [str(BIN / "ontrack-sandbox"), "--port", str(port), "--assets", str(assets)],
        stdout=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            _get(f"{url}/_sandbox/tenant")
            return process, url
        except OSError:
            if time.monotonic() > deadline:
                process.kill()
                raise
            time.sleep(0.2)


def measure_sync(assets: int, calls_per_second: float) -> dict:
    """Sync the assets of a sandbox tenant into SQLite with the operator's writer."""
    from airflow_provider_ontrack.client import pacing, tokens
    from airflow_provider_ontrack.operators.sql import OnTrackToSqlOperator

    tokens.forget_cached_tokens()
    pacing._pacers.clear()
    process, url = _start_sandbox(assets)
    try:
        database = Path(tempfile.mkdtemp()) / "bench.db"
        os.environ["AIRFLOW_CONN_ONTRACK_DEFAULT"] = json.dumps(
            {
                "conn_type": "ontrack",
                "host": f"{url}/ts/ontrack/unite/v1",
                "login": SANDBOX_USERNAME,
                "password": SANDBOX_PASSWORD,
                "extra": {
                    "client_id": SANDBOX_CLIENT_ID,
                    "client_secret": SANDBOX_CLIENT_SECRET,
                    "auth_url": f"{url}/hc/token",
                    "calls_per_second": calls_per_second,
                },
            }
        )
        os.environ["AIRFLOW_CONN_BENCH_DB"] = json.dumps({"conn_type": "sqlite", "host": str(database)})
        # A small warm-up sync pays the one-time costs (imports, table creation), which do not grow
        # with the tenant and would blur the comparison between sizes.
        OnTrackToSqlOperator(
            task_id="warm_up",
            resource="assets",
            sql_conn_id="bench_db",
            table="warm_up",
            filters={"daysSinceLastModified": 1},
        ).execute({})
        urllib.request.urlopen(urllib.request.Request(f"{url}/_sandbox/stats/reset", method="POST"))
        operator = OnTrackToSqlOperator(task_id="bench", resource="assets", sql_conn_id="bench_db")

        tracemalloc.start()
        started = time.monotonic()
        summary = operator.execute({})
        seconds = time.monotonic() - started
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()

        stats = _get(f"{url}/_sandbox/stats")
        with sqlite3.connect(database) as db:
            rows = db.execute("SELECT COUNT(*) FROM ontrack_assets").fetchone()[0]
    finally:
        process.terminate()
        process.wait(timeout=10)

    return {
        "assets": assets,
        "rows": rows,
        "api_calls": stats["total_calls"],
        "token_requests_after_warm_up": stats["token_requests"],
        "peak_mib": round(peak / 2**20, 1),
        "seconds": round(seconds, 1),
        "calls_per_second_setting": calls_per_second,
        "summary_api_calls": summary["api_calls"],
    }


def measure_import() -> dict:
    """Time the import of the operator modules in a fresh interpreter that already has airflow.sdk."""
    code = (
        "import sys, time, airflow.sdk\n"
        "before = set(sys.modules)\n"
        "t = time.perf_counter()\n"
        "import airflow_provider_ontrack.operators.ontrack, airflow_provider_ontrack.operators.sql\n"
        "ms = (time.perf_counter() - t) * 1000\n"
        "new = set(sys.modules) - before\n"
        "print(ms, len(new), int('requests' in new), int('oauthlib' in new))\n"
    )
    runs = []
    for _ in range(5):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        runs.append(out.stdout.split())
    runs.sort(key=lambda run: float(run[0]))
    ms, modules, requests_loaded, oauthlib_loaded = runs[len(runs) // 2]
    return {
        "median_ms": round(float(ms), 1),
        "new_modules": int(modules),
        "loads_requests": bool(int(requests_loaded)),
        "loads_oauthlib": bool(int(oauthlib_loaded)),
    }


def main() -> None:
    sizes = [int(arg) for arg in sys.argv[1:]] or [1_500, 20_000]
    print("operator import:", json.dumps(measure_import()))
    for size in sizes:
        print("sync:", json.dumps(measure_sync(size, calls_per_second=2)))


if __name__ == "__main__":
    main()

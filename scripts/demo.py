"""Run the main job against a local ON!Track sandbox and show what landed in the database.

Starts ``ontrack-sandbox`` on a free loopback port, runs the ``ontrack_assets_sync`` DAG with
``airflow dags test`` into a SQLite file, prints the row count of each table beside the sandbox's
own count, and stops the sandbox. Exits non-zero when a count differs.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from airflow_provider_ontrack.sandbox import (
    SANDBOX_CLIENT_ID,
    SANDBOX_CLIENT_SECRET,
    SANDBOX_PASSWORD,
    SANDBOX_USERNAME,
)

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / ".demo"
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_up(url: str, deadline: float) -> dict:
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                return json.load(answer)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def main() -> int:
    WORK.mkdir(exist_ok=True)
    database = WORK / "ontrack.db"
    database.unlink(missing_ok=True)
    port = free_port()
    sandbox_url = f"http://127.0.0.1:{port}"

    sandbox = subprocess.Popen([str(BIN / "ontrack-sandbox"), "--port", str(port), "--seed", "7"])
    try:
        tenant = wait_until_up(f"{sandbox_url}/_sandbox/tenant", time.monotonic() + 30)
        env = dict(
            os.environ,
            AIRFLOW_HOME=str(WORK / "airflow"),
            AIRFLOW__CORE__LOAD_EXAMPLES="False",
            AIRFLOW__CORE__DAGS_FOLDER=str(ROOT / "example_dags"),
            AIRFLOW__LOGGING__LOGGING_LEVEL="INFO",
            AIRFLOW_CONN_ONTRACK_DEFAULT=json.dumps(
                {
                    "conn_type": "ontrack",
                    "host": f"{sandbox_url}/ts/ontrack/unite/v1",
                    "login": SANDBOX_USERNAME,
                    "password": SANDBOX_PASSWORD,
                    "extra": {
                        "client_id": SANDBOX_CLIENT_ID,
                        "client_secret": SANDBOX_CLIENT_SECRET,
                        "auth_url": f"{sandbox_url}/hc/token",
                    },
                }
            ),
            AIRFLOW_CONN_ONTRACK_WAREHOUSE=json.dumps({"conn_type": "sqlite", "host": str(database)}),
        )
        airflow = str(BIN / "airflow")
        subprocess.run([airflow, "db", "migrate"], env=env, check=True, stdout=subprocess.DEVNULL)
        started = time.monotonic()
        subprocess.run([airflow, "dags", "test", "ontrack_assets_sync"], env=env, check=True)
        seconds = time.monotonic() - started

        with urllib.request.urlopen(f"{sandbox_url}/_sandbox/stats", timeout=5) as answer:
            stats = json.load(answer)
    finally:
        sandbox.terminate()
        sandbox.wait(timeout=10)

    print()
    print(f"ontrack_assets_sync finished in {seconds:.1f} s; SQLite file: {database.relative_to(ROOT)}")
    print(f"{'table':<20}{'rows':>8}{'in sandbox':>12}")
    mismatches = 0
    with sqlite3.connect(database) as db:
        for resource in ("workers", "locations", "assets"):
            rows = db.execute(f"SELECT COUNT(*) FROM ontrack_{resource}").fetchone()[0]
            mismatches += rows != tenant[resource]
            print(f"{'ontrack_' + resource:<20}{rows:>8,}{tenant[resource]:>12,}")
    print(f"API calls: {stats['total_calls']}, token requests: {stats['token_requests']}")
    if mismatches:
        print("Row counts differ from the sandbox's tenant.")
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main())

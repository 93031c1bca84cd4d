"""Waiting at scale and the waiting example: many deferred waits share the limit; the example DAG runs."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time

import pytest

from airflow_provider_ontrack.client import aio
from airflow_provider_ontrack.triggers.ontrack import OnTrackAssetTrigger
from tests.conftest import SECRETS, connection_for
from tests.integration.test_airflow import AIRFLOW, ROOT, _airflow_env
from tests.integration.test_writeback import airflow_home  # noqa: F401 - a fixture


@pytest.fixture(autouse=True)
def _fresh_async_state():
    aio.forget_async_state()
    yield
    aio.forget_async_state()


@pytest.mark.timeout(90)
def test_200_deferred_asset_waits_stay_within_the_call_limit(fresh_sandbox, ontrack_connection):
    # The sandbox refuses calls beyond its limit within any second, as a gateway enforcing it would.
    # Limit and connection are set to 20 calls per second, so that one round of 200 waits takes ten
    # seconds rather than the hundred it takes at Hilti's two; the property tested is the same.
    limit = 20
    fresh_sandbox.set_config(rate_limit=limit)
    ontrack_connection(fresh_sandbox, calls_per_second=limit)
    assets = fresh_sandbox.tenant.all("assets")[:200]
    seconds = 8.0
    triggers = [
        OnTrackAssetTrigger(
            ontrack_conn_id="ontrack_default",
            asset_id=asset["id"],
            expected={"status": "NEVER"},
            poll_interval=5,
            end_time=time.time() + seconds,
        )
        for asset in assets
    ]

    async def run_all() -> list[dict]:
        async def first(trigger) -> dict:
            events = trigger.run()
            event = await events.__anext__()
            await events.aclose()
            return event.payload

        return await asyncio.gather(*(first(trigger) for trigger in triggers))

    started = time.monotonic()
    events = asyncio.run(run_all())
    elapsed = time.monotonic() - started
    stats = fresh_sandbox.stats()

    assert all(event["status"] == "timeout" for event in events)
    # Over the whole run, calls stay within the limit. The sandbox also counts each trailing second;
    # on a loaded machine a call the event loop sent a few milliseconds late can meet the next one
    # in the same second, which the trigger then waits out, so a stray refusal is tolerated there.
    assert stats["calls"]["GET /assets/{id}"] <= limit * elapsed + 1
    calls = stats["calls"]["GET /assets/{id}"]
    assert stats["rejected_429"] <= max(2, calls // 50), "the shared pacer let calls through too fast"
    assert stats["calls"]["GET /assets/{id}"] >= 200  # every wait checked at least once
    assert stats["token_requests"] == 1  # one token for all 200 waits


def test_the_waiting_example_dag_runs_with_a_deferred_sensor(airflow_home, fresh_sandbox):  # noqa: F811
    # With its default params, as the README runs it: the tool and the jobsite found by externalId.
    # Completed at once: the example polls every ten minutes, which a test cannot wait for; the
    # sensor tests cover a transfer that is still in transit.
    asset = next(a for a in fresh_sandbox.tenant.all("assets") if a["externalId"] == "ERP-A-000257")
    jobsite = next(loc for loc in fresh_sandbox.tenant.all("locations") if loc["externalId"] == "SITE-0106")
    assert asset["currentLocationId"] != jobsite["id"]
    env = _airflow_env(
        airflow_home,
        AIRFLOW_CONN_ONTRACK_DEFAULT=json.dumps(connection_for(fresh_sandbox, calls_per_second=20)),
    )

    run = subprocess.run(
        [AIRFLOW, "dags", "test", "ontrack_wait_for_transfer"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )

    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-4000:]
    assert "DagRun Finished" in output and "state=success" in output
    assert fresh_sandbox.tenant.get("assets", asset["id"])["currentLocationId"] == jobsite["id"]
    calls = fresh_sandbox.stats()["calls"]
    assert calls["GET /locations"] == 1 and calls["POST /transfers"] == 1
    assert calls["GET /transfers/{id}"] >= 1
    assert not [secret for secret in (*SECRETS, *fresh_sandbox.issued_tokens()) if secret in output]

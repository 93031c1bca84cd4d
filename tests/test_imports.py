"""Importing the operator modules stays cheap, because Airflow parses DAG files all the time."""

from __future__ import annotations

import subprocess
import sys

HEAVY = (
    "requests",
    "oauthlib",
    "urllib3",
    "airflow_provider_ontrack.hooks.ontrack",
    "airflow_provider_ontrack.client.core",
    "airflow.providers.common.sql",
)


def test_operator_modules_leave_the_http_stack_unloaded():
    code = (
        "import sys, airflow.sdk\n"
        "before = set(sys.modules)\n"
        "import airflow_provider_ontrack.operators.ontrack, airflow_provider_ontrack.operators.sql\n"
        "print(' '.join(sorted(set(sys.modules) - before)))\n"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    new_modules = loaded.stdout.split()

    assert "airflow_provider_ontrack.operators.sql" in new_modules
    assert not [name for name in new_modules if name.startswith(HEAVY)], new_modules


def test_sensor_module_leaves_the_http_stack_unloaded():
    code = (
        "import sys, airflow.sdk\n"
        "before = set(sys.modules)\n"
        "import airflow_provider_ontrack.sensors.ontrack\n"
        "print(' '.join(sorted(set(sys.modules) - before)))\n"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    new_modules = loaded.stdout.split()

    assert "airflow_provider_ontrack.sensors.ontrack" in new_modules
    heavy = (*HEAVY, "aiohttp", "airflow_provider_ontrack.client.aio", "airflow_provider_ontrack.triggers")
    assert not [name for name in new_modules if name.startswith(heavy)], new_modules


def test_provider_info_imports_nothing():
    code = (
        "import sys\n"
        "before = set(sys.modules)\n"
        "from airflow_provider_ontrack.get_provider_info import get_provider_info\n"
        "get_provider_info()\n"
        "print(' '.join(sorted(set(sys.modules) - before)))\n"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)

    assert set(loaded.stdout.split()) == {
        "airflow_provider_ontrack",
        "airflow_provider_ontrack.get_provider_info",
    }

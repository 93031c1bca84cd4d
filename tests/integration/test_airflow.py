"""The provider inside a real Airflow: registration, the connection form, and the example DAG run."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import SECRETS, connection_for

ROOT = Path(__file__).resolve().parents[2]
AIRFLOW = str(Path(sys.executable).parent / "airflow")


@pytest.fixture(scope="session")
def airflow_home(tmp_path_factory) -> Path:
    """An Airflow home with a migrated SQLite metadata database, shared by the DAG runs."""
    home = tmp_path_factory.mktemp("airflow-home")
    subprocess.run([AIRFLOW, "db", "migrate"], env=_airflow_env(home), check=True, capture_output=True,
                   timeout=300)
    return home


def _airflow_env(home: Path, **extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("AIRFLOW")}
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__DAGS_FOLDER=str(ROOT / "example_dags"),
    )
    env.update(extra)
    return env


def _run_dag(home: Path, dag_id: str, server, database: Path, **extra: str) -> subprocess.CompletedProcess:
    env = _airflow_env(
        home,
        AIRFLOW_CONN_ONTRACK_DEFAULT=json.dumps(connection_for(server, calls_per_second=2)),
        AIRFLOW_CONN_ONTRACK_WAREHOUSE=json.dumps({"conn_type": "sqlite", "host": str(database)}),
        **extra,
    )
    return subprocess.run([AIRFLOW, "dags", "test", dag_id], env=env, capture_output=True, text=True,
                          timeout=600)


def _count(database: Path, table: str) -> int:
    with sqlite3.connect(database) as db:
        return db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]


class TestRegistration:
    def test_providers_manager_knows_the_connection_type(self):
        from airflow.providers_manager import ProvidersManager
        from airflow.sdk.providers_manager_runtime import ProvidersManagerTaskRuntime

        assert "airflow-provider-ontrack" in ProvidersManager().providers
        hook_info = ProvidersManagerTaskRuntime().hooks["ontrack"]
        assert hook_info.hook_class_name == "airflow_provider_ontrack.hooks.ontrack.OnTrackHook"
        assert hook_info.connection_id_attribute_name == "ontrack_conn_id"
        assert hook_info.hook_name == "Hilti ON!Track Unite"
        assert hook_info.connection_testable

    def test_cli_lists_provider_and_hook(self, airflow_home):
        env = _airflow_env(airflow_home)
        providers = subprocess.run([AIRFLOW, "providers", "list"], env=env, capture_output=True, text=True)
        hooks = subprocess.run([AIRFLOW, "providers", "hooks"], env=env, capture_output=True, text=True)

        assert "airflow-provider-ontrack" in providers.stdout
        assert "airflow_provider_ontrack.hooks.ontrack.OnTrackHook" in hooks.stdout
        assert "ontrack_conn_id" in hooks.stdout

    def test_ui_receives_the_connection_form(self):
        from airflow.api_fastapi.core_api.services.ui.connections import HookMetaService

        (meta,) = [item for item in HookMetaService.hook_meta_data() if item.connection_type == "ontrack"]
        form = meta.model_dump()

        assert form["hook_name"] == "Hilti ON!Track Unite"
        standard = form["standard_fields"]
        assert standard["host"]["title"] == "API base URL"
        assert standard["login"]["title"] == "Technical user"
        assert standard["password"]["title"] == "Technical user password"
        assert standard["port"]["hidden"] and standard["url_schema"]["hidden"]
        extra = form["extra_fields"]
        for name in ("client_id", "client_secret", "auth_url", "scope", "calls_per_second", "page_size",
                     "timeout", "page_param", "page_size_param", "result_key", "total_key", "assets_path"):
            assert name in extra, name
        assert extra["client_secret"]["schema"]["format"] == "password"
        assert extra["auth_url"]["value"] == "https://cloudsso.hilti.com/hc/token"
        assert extra["calls_per_second"]["value"] == 2

    def test_hook_form_methods_for_airflow_before_3_2(self):
        # Airflow 3.1 reads the form from the hook's methods through stand-ins for wtforms and
        # Flask-AppBuilder; do the same in a separate interpreter so that the stand-ins stay there.
        code = (
            "import json, sys\n"
            "from unittest import mock\n"
            "from airflow.api_fastapi.core_api.services.ui.connections import HookMetaService as S\n"
            "for name in ('wtforms', 'flask_babel', 'flask_appbuilder', 'flask_appbuilder.fieldwidgets'):\n"
            "    sys.modules[name] = mock.MagicMock()\n"
            "sys.modules['wtforms'].StringField = S.MockStringField\n"
            "sys.modules['wtforms'].IntegerField = S.MockIntegerField\n"
            "sys.modules['wtforms'].PasswordField = S.MockPasswordField\n"
            "sys.modules['flask_babel'].lazy_gettext = lambda text: text\n"
            "from airflow_provider_ontrack.hooks.ontrack import OnTrackHook\n"
            "widgets = OnTrackHook.get_connection_form_widgets()\n"
            "print(json.dumps({'widgets': {k: [type(v).__name__, v.param.schema.get('title')]\n"
            "                              for k, v in widgets.items()},\n"
            "                  'behaviour': OnTrackHook.get_ui_field_behaviour()}))\n"
        )
        run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stderr[-2000:]
        form = json.loads(run.stdout.strip().splitlines()[-1])

        from airflow_provider_ontrack.get_provider_info import CONN_FIELDS

        assert set(form["widgets"]) == set(CONN_FIELDS)
        assert form["widgets"]["client_secret"][0] == "MockPasswordField"
        assert form["widgets"]["page_size"][0] == "MockIntegerField"
        assert form["widgets"]["client_id"] == ["MockStringField", "Client ID"]
        assert form["behaviour"]["hidden_fields"] == ["schema", "port", "extra"]
        assert form["behaviour"]["relabeling"]["login"] == "Technical user"

    def test_form_fields_and_settings_agree(self):
        from airflow_provider_ontrack.client.settings import OnTrackSettings
        from airflow_provider_ontrack.get_provider_info import CONN_FIELDS

        defaults = OnTrackSettings(base_url="https://x", client_id="c", client_secret="s", username="u",
                                   password="p")
        for name, spec in CONN_FIELDS.items():
            if name in ("client_id", "client_secret"):
                continue
            assert spec["schema"]["default"] == getattr(defaults, name), name


class TestMainJob:
    def test_sync_dag_copies_the_tenant_and_is_safe_to_rerun(self, airflow_home, fresh_sandbox, tmp_path):
        database = tmp_path / "warehouse.db"

        first = _run_dag(airflow_home, "ontrack_assets_sync", fresh_sandbox, database)
        assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
        stats = fresh_sandbox.stats()
        counts = {name: _count(database, f"ontrack_{name}") for name in ("workers", "locations", "assets")}

        assert counts == {"workers": 25, "locations": 12, "assets": 1500}
        assert stats["token_requests"] == 1
        assert stats["calls"] == {"GET /workers": 1, "GET /locations": 1, "GET /assets": 3}

        second = _run_dag(airflow_home, "ontrack_assets_sync", fresh_sandbox, database)
        assert second.returncode == 0, second.stderr[-3000:]
        assert {name: _count(database, f"ontrack_{name}") for name in counts} == counts

    def test_no_secret_reaches_the_task_logs(self, airflow_home, fresh_sandbox, tmp_path):
        database = tmp_path / "warehouse.db"

        quiet = _run_dag(airflow_home, "ontrack_assets_sync", fresh_sandbox, database)
        verbose = _run_dag(airflow_home, "ontrack_assets_sync", fresh_sandbox, database,
                           AIRFLOW__LOGGING__LOGGING_LEVEL="DEBUG")

        assert quiet.returncode == 0 and verbose.returncode == 0, verbose.stderr[-3000:]
        issued = fresh_sandbox.issued_tokens()
        assert len(issued) == 2, "each run should have used exactly one token of its own"
        secrets = (*SECRETS, *issued)
        assert "Obtained an ON!Track token" in quiet.stdout + quiet.stderr
        assert not [s for s in secrets if s in quiet.stdout + quiet.stderr]

        # At DEBUG level, Airflow's own supervisor prints each value handed to the secret masker
        # (the connection's password and extras, and the token this provider registers). Those
        # lines are Airflow's; any other line holding a secret would be this provider's leak.
        leaking = [line for line in (verbose.stdout + verbose.stderr).splitlines()
                   if any(secret in line for secret in secrets)]
        assert leaking, "expected Airflow's masker registrations at DEBUG level"
        assert all("MaskSecret(value=" in line for line in leaking), leaking[:3]

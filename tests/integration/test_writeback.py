"""Write-back into ON!Track over real HTTP against the sandbox: the example DAG, crashes, rejects, updates.

Also the single-purpose writers: transfers, worker activation, and the refusal to delete workers.
The example DAG runs under ``airflow dags test`` in a subprocess with a migrated Airflow home that
``test_incremental`` shares (one migration per test session).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_ontrack.client.errors import (
    OnTrackApiError,
    OnTrackConfigError,
    OnTrackUnsupportedOperationError,
)
from airflow_provider_ontrack.hooks.ontrack import OnTrackHook
from airflow_provider_ontrack.operators.ontrack import (
    OnTrackActivateWorkerOperator,
    OnTrackRequestOperator,
    OnTrackTransferAssetsOperator,
)
from airflow_provider_ontrack.operators.writeback import OnTrackUpsertOperator
from airflow_provider_ontrack.sandbox import OnTrackSandbox
from tests.conftest import connection_for
from tests.integration.test_airflow import AIRFLOW, ROOT, _airflow_env

RESOURCES = ("workers", "locations", "assets")
# Runs one upsert in a process of its own, so that the test can kill it halfway.
UPSERT_SCRIPT = """
import sys
from airflow_provider_ontrack.operators.writeback import OnTrackUpsertOperator
resource, source, reject_path = sys.argv[1:4]
operator = OnTrackUpsertOperator(task_id="upsert", resource=resource, source=source, reject_path=reject_path)
print(operator.execute({}))
"""


@pytest.fixture(scope="session")
def airflow_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An Airflow home with a migrated metadata database, migrated once however many modules use it.

    The home has a fixed name under the session's base temp folder, so that a module importing this
    fixture (pytest may load this file under a second module name) finds the migration done.
    """
    home = tmp_path_factory.getbasetemp() / "airflow-home-writeback"
    done = home / "migrated"
    if not done.exists():
        home.mkdir(exist_ok=True)
        subprocess.run(
            [AIRFLOW, "db", "migrate"], env=_airflow_env(home), check=True, capture_output=True, timeout=300
        )
        done.touch()
    return home


def run_dag(home: Path, dag_id: str, server: OnTrackSandbox, **extra: str) -> subprocess.CompletedProcess:
    """Run one DAG with ``airflow dags test`` against ``server``; ``extra`` adds environment variables."""
    env = _airflow_env(
        home,
        AIRFLOW_CONN_ONTRACK_DEFAULT=json.dumps(connection_for(server, calls_per_second=20)),
        **extra,
    )
    return subprocess.run(
        [AIRFLOW, "dags", "test", dag_id], env=env, capture_output=True, text=True, timeout=600, cwd=ROOT
    )


def _output(run: subprocess.CompletedProcess) -> str:
    return (run.stdout or "")[-3000:] + (run.stderr or "")[-3000:]


def _by_key(server: OnTrackSandbox, resource: str) -> dict[str, dict[str, Any]]:
    return {record["externalId"]: record for record in server.tenant.all(resource) if record["externalId"]}


def _keys(server: OnTrackSandbox, prefix: str) -> list[str]:
    return sorted(
        record["externalId"]
        for record in server.tenant.all("assets")
        if (record["externalId"] or "").startswith(prefix)
    )


def _writes(server: OnTrackSandbox) -> dict[str, int]:
    return {call: count for call, count in server.stats()["calls"].items() if not call.startswith("GET")}


def _upsert(resource: str = "assets", **kwargs: Any) -> dict[str, Any]:
    return OnTrackUpsertOperator(task_id=f"upsert_{resource}", resource=resource, **kwargs).execute({})


def _write_jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records), "utf-8")
    return path


def _rejects(path: Path | str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(path).read_text("utf-8").splitlines()]


def _wait_for(condition: Callable[[], bool], timeout: float, about: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            detail = about.read_text("utf-8", errors="replace")[-3000:] if about else ""
            raise AssertionError(f"gave up waiting after {timeout} s\n{detail}")
        time.sleep(0.02)


def _seeded_location(server: OnTrackSandbox) -> dict[str, Any]:
    return next(location for location in server.tenant.all("locations") if location["externalId"])


def _plain_assets(server: OnTrackSandbox) -> list[dict[str, Any]]:
    """Seeded assets that are not storage assets and sit in none, with an ERP key."""
    return [
        asset
        for asset in server.tenant.all("assets")
        if asset["assetType"] == "ASSET" and asset["parentAssetId"] is None and asset["externalId"]
    ]


def _new_assets(location_id: str, prefix: str, count: int) -> list[dict[str, Any]]:
    return [
        {
            "externalId": f"{prefix}{number:03d}",
            "name": f"Rental breaker {number}",
            "currentLocationId": location_id,
            "serialNumber": f"SN-{prefix}{number:03d}",
        }
        for number in range(1, count + 1)
    ]


@pytest.fixture
def tenant(fresh_sandbox: OnTrackSandbox, ontrack_connection) -> OnTrackSandbox:
    """A sandbox of the test's own, registered as ``ontrack_default``."""
    ontrack_connection(fresh_sandbox)
    return fresh_sandbox


class TestExampleDag:
    def test_first_run_creates_the_export_and_a_rerun_changes_nothing(
        self, airflow_home, fresh_sandbox, tmp_path
    ):
        rejects = tmp_path / "rejects"
        before = fresh_sandbox.tenant.counts()

        first = run_dag(
            airflow_home, "ontrack_erp_writeback", fresh_sandbox, ONTRACK_REJECTS_DIR=str(rejects)
        )

        assert first.returncode == 0, _output(first)
        after = fresh_sandbox.tenant.counts()
        assert after == {
            "workers": before["workers"] + 4,
            "locations": before["locations"] + 2,
            "assets": before["assets"] + 5,
        }
        assert _writes(fresh_sandbox) == {"POST /workers": 4, "POST /locations": 2, "POST /assets": 5}
        workers, locations, assets = (_by_key(fresh_sandbox, resource) for resource in RESOURCES)
        assert locations["ERP-L-9001"]["managerId"] == workers["ERP-W-9001"]["id"]
        assert locations["ERP-L-9002"]["managerId"] == workers["ERP-W-9002"]["id"]
        assert assets["ERP-A-9003"]["parentAssetId"] == assets["ERP-A-9001"]["id"]
        assert assets["ERP-A-9003"]["currentLocationId"] == locations["ERP-L-9002"]["id"]
        assert assets["ERP-A-9002"]["responsibleWorkerId"] == workers["ERP-W-9001"]["id"]
        assert assets["ERP-A-9002"]["purchasePrice"] == 1299
        assert locations["ERP-L-9001"]["labels"] == ["new build", "river"]
        assert workers["ERP-W-9003"]["email"] is None
        assert workers["ERP-W-9002"]["lastName"] == "Zieliński"
        for resource in RESOURCES:
            assert (rejects / f"{resource}.rejected.jsonl").read_text("utf-8") == "", resource
        fresh_sandbox.reset_stats()

        second = run_dag(
            airflow_home, "ontrack_erp_writeback", fresh_sandbox, ONTRACK_REJECTS_DIR=str(rejects)
        )

        assert second.returncode == 0, _output(second)
        assert fresh_sandbox.tenant.counts() == after
        assert _writes(fresh_sandbox) == {}
        assert "Wrote assets: 0 created, 0 updated, 5 unchanged, 0 rejected" in second.stdout + second.stderr
        for resource in RESOURCES:
            assert (rejects / f"{resource}.rejected.jsonl").read_text("utf-8") == "", resource


class TestCrashesAndRetries:
    def test_killed_halfway_then_rerun_creates_each_record_once(self, tenant, tmp_path):
        wanted = _new_assets(_seeded_location(tenant)["id"], "KILL-A-", 12)
        source = _write_jsonl(tmp_path / "assets.jsonl", wanted)
        reject_path = tmp_path / "assets.rejected.jsonl"
        # Let each POST through, but answer it a second late, so the kill lands between two creates.
        tenant.add_fault(method="POST", path="/assets", status=None, delay=1.0, count=10)
        env = {**os.environ, "AIRFLOW_CONN_ONTRACK_DEFAULT": json.dumps(connection_for(tenant))}
        log = tmp_path / "child.log"
        with log.open("w") as output:
            child = subprocess.Popen(
                [sys.executable, "-c", UPSERT_SCRIPT, "assets", str(source), str(reject_path)],
                env=env,
                cwd=ROOT,
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        try:
            _wait_for(lambda: tenant.stats()["calls"].get("POST /assets", 0) >= 2, timeout=60, about=log)
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait(timeout=30)
        tenant.clear_faults()
        _wait_for(lambda: len(_keys(tenant, "KILL-A-")) >= 2, timeout=5)
        created_before = len(_keys(tenant, "KILL-A-"))

        summary = _upsert(source=str(source), reject_path=str(reject_path))

        assert child.returncode == -signal.SIGKILL
        assert 2 <= created_before < 12
        assert _keys(tenant, "KILL-A-") == [record["externalId"] for record in wanted]
        assert summary["created"] == 12 - created_before
        assert summary["unchanged"] == created_before
        assert summary["rejected"] == 0
        assert tenant.tenant.count("assets") == 1500 + 12

    def test_ambiguous_504_on_a_create_fails_and_the_retry_creates_nothing_twice(self, tenant, tmp_path):
        wanted = _new_assets(_seeded_location(tenant)["id"], "AMB-A-", 6)
        source = _write_jsonl(tmp_path / "assets.jsonl", wanted)
        # The first two POSTs pass; the third is stored, but the client is told 504.
        tenant.add_fault(method="POST", path="/assets", status=None, count=2)
        tenant.add_fault(method="POST", path="/assets", status=504, after_effect=True)

        with pytest.raises(OnTrackApiError) as raised:
            _upsert(source=str(source))

        assert raised.value.status == 504
        assert raised.value.method == "POST"
        assert tenant.stats()["calls"]["POST /assets"] == 3, "a create must not be repeated on its own"
        assert _keys(tenant, "AMB-A-") == ["AMB-A-001", "AMB-A-002", "AMB-A-003"]

        retry = _upsert(source=str(source))

        assert _keys(tenant, "AMB-A-") == [record["externalId"] for record in wanted]
        assert (retry["created"], retry["unchanged"]) == (3, 3)
        assert tenant.stats()["calls"]["POST /assets"] == 6
        assert tenant.tenant.count("assets") == 1506


class TestRejects:
    def test_each_bad_row_goes_to_the_reject_file_and_the_rest_is_written(self, tenant, tmp_path):
        location = _seeded_location(tenant)
        not_storage = _plain_assets(tenant)[0]
        source = tmp_path / "assets.csv"
        source.write_text(
            "externalId,name,currentLocationId,currentLocationExternalId,status,parentAssetId\n"
            f"REJ-A-001,Good grinder,{location['id']},,ACTIVE,\n"
            "REJ-A-002,Too,many,fields,on,this,row\n"
            f"REJ-A-003,,{location['id']},,,\n"
            f"REJ-A-004,Broken drill,{location['id']},,BROKEN,\n"
            f"REJ-A-001,Second grinder,{location['id']},,,\n"
            "REJ-A-005,Lost saw,,NOPE-LOC,,\n"
            f"REJ-A-006,Nested laser,{location['id']},,,{not_storage['id']}\n"
            f"REJ-A-007,Good hammer,,{location['externalId']},,\n",
            "utf-8",
        )
        reject_path = tmp_path / "out" / "assets.rejected.jsonl"

        summary = _upsert(source=str(source), reject_path=str(reject_path))

        rejects = {entry["line"]: entry for entry in _rejects(reject_path)}
        assert sorted(rejects) == [3, 4, 5, 6, 7, 8]
        assert rejects[3]["reason"] == "row has 7 fields, the header has 6"
        assert rejects[3]["record"] == "REJ-A-002,Too,many,fields,on,this,row"
        assert rejects[4]["reason"].startswith("name: required")
        assert rejects[4]["record"] == {"externalId": "REJ-A-003", "currentLocationId": location["id"]}
        assert rejects[5]["reason"].startswith("status: must be one of ACTIVE")
        assert "'BROKEN'" in rejects[5]["reason"]
        assert rejects[6]["reason"] == "externalId: 'REJ-A-001' was given before, on line 2"
        assert rejects[6]["record"]["name"] == "Second grinder"
        assert rejects[7]["reason"].startswith("currentLocationExternalId: no ON!Track location")
        assert "'NOPE-LOC'" in rejects[7]["reason"]
        assert rejects[8]["reason"].startswith("refused by ON!Track: parentAssetId:")
        assert "not a storage asset" in rejects[8]["reason"]
        assert rejects[8]["record"]["externalId"] == "REJ-A-006"
        assert _keys(tenant, "REJ-A-") == ["REJ-A-001", "REJ-A-007"]
        written = _by_key(tenant, "assets")
        assert written["REJ-A-001"]["name"] == "Good grinder"
        assert written["REJ-A-007"]["currentLocationId"] == location["id"]
        assert {key: summary[key] for key in ("created", "updated", "unchanged", "rejected")} == {
            "created": 2,
            "updated": 0,
            "unchanged": 0,
            "rejected": 6,
        }
        assert summary["reject_path"].endswith("out/assets.rejected.jsonl")

    def test_default_reject_path_is_beside_the_source_and_emptied_by_a_clean_run(self, tenant, tmp_path):
        location_id = _seeded_location(tenant)["id"]
        source = tmp_path / "assets.jsonl"
        _write_jsonl(source, [{"externalId": "DEF-A-001", "currentLocationId": location_id}])

        first = _upsert(source=str(source))
        _write_jsonl(source, [{"externalId": "DEF-A-001", "name": "Fixed", "currentLocationId": location_id}])
        second = _upsert(source=str(source))

        assert first["rejected"] == 1 and first["reject_path"].endswith("assets.jsonl.rejected.jsonl")
        assert (second["created"], second["rejected"]) == (1, 0)
        assert Path(str(source) + ".rejected.jsonl").read_text("utf-8") == ""

    def test_invalid_json_line_is_rejected_with_its_text(self, tenant, tmp_path):
        location_id = _seeded_location(tenant)["id"]
        source = tmp_path / "assets.jsonl"
        good = json.dumps({"externalId": "JSN-A-001", "name": "Good", "currentLocationId": location_id})
        source.write_text(f'{good}\n{{"externalId": "JSN-A-002",\n[1, 2]\n', "utf-8")

        summary = _upsert(source=str(source), reject_path=str(tmp_path / "rejects.jsonl"))

        rejects = _rejects(tmp_path / "rejects.jsonl")
        assert [entry["line"] for entry in rejects] == [2, 3]
        assert rejects[0]["reason"].startswith("not valid JSON")
        assert rejects[0]["record"] == '{"externalId": "JSN-A-002",'
        assert rejects[1]["reason"] == "record: must be an object, got list"
        assert (summary["created"], summary["rejected"]) == (1, 2)

    def test_a_price_that_is_not_a_finite_number_is_rejected_not_fatal(self, tenant, tmp_path):
        location_id = _seeded_location(tenant)["id"]
        source = tmp_path / "assets.csv"
        source.write_text(
            "externalId,name,currentLocationId,purchasePrice\n"
            f"NAN-A-001,Good,{location_id},12.5\n"
            f"NAN-A-002,Not a price,{location_id},nan\n",
            "utf-8",
        )

        summary = _upsert(source=str(source), reject_path=str(tmp_path / "rejects.jsonl"))

        assert (summary["created"], summary["rejected"]) == (1, 1)
        assert _rejects(tmp_path / "rejects.jsonl")[0]["reason"].startswith("purchasePrice:")

    def test_storage_assets_nested_two_deep_in_one_run_are_all_created(self, tenant, tmp_path):
        location_id = _seeded_location(tenant)["id"]
        records = [
            {
                "externalId": "NST-A-3",
                "name": "Drill",
                "currentLocationId": location_id,
                "parentAssetExternalId": "NST-A-2",
            },
            {
                "externalId": "NST-A-2",
                "name": "Gang box",
                "assetType": "STORAGE_ASSET",
                "currentLocationId": location_id,
                "parentAssetExternalId": "NST-A-1",
            },
            {
                "externalId": "NST-A-1",
                "name": "Van",
                "assetType": "STORAGE_ASSET",
                "currentLocationId": location_id,
            },
        ]

        summary = _upsert(records=records, reject_path=str(tmp_path / "rejects.jsonl"))

        assert _rejects(tmp_path / "rejects.jsonl") == []
        assert summary["created"] == 3
        stored = _by_key(tenant, "assets")
        assert stored["NST-A-3"]["parentAssetId"] == stored["NST-A-2"]["id"]


class TestUpdates:
    def test_two_changed_fields_update_the_record_and_keep_the_rest(self, tenant, tmp_path):
        existing = _plain_assets(tenant)[0]
        kept = {
            field: existing[field]
            for field in (
                "serialNumber",
                "scanCode",
                "labels",
                "purchasePrice",
                "currentLocationId",
                "responsibleWorkerId",
            )
        }
        records = [{"externalId": existing["externalId"], "name": "Renamed by the ERP", "status": "LOST"}]
        tenant.reset_stats()

        summary = _upsert(records=records, reject_path=str(tmp_path / "rejects.jsonl"))

        assert {key: summary[key] for key in ("created", "updated", "unchanged", "rejected")} == {
            "created": 0,
            "updated": 1,
            "unchanged": 0,
            "rejected": 0,
        }
        stored = tenant.tenant.get("assets", existing["id"])
        assert (stored["name"], stored["status"]) == ("Renamed by the ERP", "LOST")
        assert {field: stored[field] for field in kept} == kept
        assert _writes(tenant) == {"PUT /assets/{id}": 1}

    def test_unchanged_records_make_no_put(self, tenant, tmp_path):
        existing = _plain_assets(tenant)[:3]
        records = [
            {"externalId": asset["externalId"], "name": asset["name"], "labels": asset["labels"]}
            for asset in existing
        ]
        tenant.reset_stats()

        summary = _upsert(records=records, reject_path=str(tmp_path / "rejects.jsonl"))

        assert (summary["unchanged"], summary["updated"], summary["created"]) == (3, 0, 0)
        assert _writes(tenant) == {}

    @pytest.mark.parametrize(("stored", "given"), [(1299.0, 1299), (1299, 1299.0)])
    def test_whole_number_and_float_count_as_unchanged(self, tenant, tmp_path, stored, given):
        existing = _plain_assets(tenant)[0]
        tenant.tenant.update("assets", existing["id"], {"purchasePrice": stored})
        tenant.reset_stats()

        summary = _upsert(
            records=[{"externalId": existing["externalId"], "purchasePrice": given}],
            reject_path=str(tmp_path / "rejects.jsonl"),
        )

        assert (summary["unchanged"], summary["updated"]) == (1, 0)
        assert _writes(tenant) == {}

    def test_csv_number_equal_to_the_stored_float_is_unchanged(self, tenant, tmp_path):
        existing = _plain_assets(tenant)[0]
        tenant.tenant.update("assets", existing["id"], {"purchasePrice": 1299.0})
        source = tmp_path / "assets.csv"
        source.write_text(f"externalId,purchasePrice\n{existing['externalId']},1299\n", "utf-8")
        tenant.reset_stats()

        summary = _upsert(source=str(source))

        assert (summary["unchanged"], summary["updated"]) == (1, 0)
        assert _writes(tenant) == {}


class TestDryRunAndInputs:
    @pytest.mark.parametrize("dry_run", [True, "true", "True"])
    def test_dry_run_writes_nothing_but_reports_the_counts(self, tenant, tmp_path, dry_run):
        location_id = _seeded_location(tenant)["id"]
        existing = _plain_assets(tenant)[0]
        records = [
            *_new_assets(location_id, "DRY-A-", 2),
            {"externalId": existing["externalId"], "name": "Would be renamed"},
        ]
        counts = tenant.tenant.counts()
        tenant.reset_stats()

        summary = _upsert(records=records, reject_path=str(tmp_path / "rejects.jsonl"), dry_run=dry_run)

        assert summary["dry_run"] is True
        assert (summary["created"], summary["updated"], summary["unchanged"]) == (2, 1, 0)
        assert _writes(tenant) == {}
        assert tenant.tenant.counts() == counts
        assert tenant.tenant.get("assets", existing["id"])["name"] == existing["name"]
        # A dry run keeps its rejects apart, so that the real runs' reject file stays as it was.
        assert (tmp_path / "rejects.dry-run.jsonl").read_text("utf-8") == ""
        assert not (tmp_path / "rejects.jsonl").exists()

    def test_records_from_a_task_with_a_reject_path(self, tenant, tmp_path):
        records = [
            {"externalId": "TSK-W-1", "firstName": "Mira", "lastName": "Keller", "contractType": "AGENCY"},
            "not a record",
            {"externalId": "TSK-W-2", "firstName": "Ola", "lastName": "Nordmann", "email": "no-at-sign"},
        ]
        reject_path = tmp_path / "workers.rejected.jsonl"

        summary = _upsert("workers", records=records, reject_path=str(reject_path))

        assert (summary["created"], summary["rejected"]) == (1, 2)
        rejects = _rejects(reject_path)
        assert [(entry["line"], entry["reason"].split(":")[0]) for entry in rejects] == [
            (2, "record"),
            (3, "email"),
        ]
        assert rejects[0]["record"] == "not a record"
        assert _by_key(tenant, "workers")["TSK-W-1"]["contractType"] == "AGENCY"
        assert "TSK-W-2" not in _by_key(tenant, "workers")

    def test_neither_source_nor_records_is_refused(self):
        with pytest.raises(OnTrackConfigError) as raised:
            OnTrackUpsertOperator(task_id="upsert", resource="assets")

        assert raised.value.field == "source"

    def test_both_source_and_records_are_refused(self, tmp_path):
        with pytest.raises(OnTrackConfigError) as raised:
            OnTrackUpsertOperator(
                task_id="upsert",
                resource="assets",
                source=str(tmp_path / "a.jsonl"),
                records=[],
                reject_path=str(tmp_path / "r.jsonl"),
            )

        assert raised.value.field == "source"

    def test_records_without_reject_path_are_refused(self):
        with pytest.raises(OnTrackConfigError) as raised:
            OnTrackUpsertOperator(task_id="upsert", resource="assets", records=[{"externalId": "X"}])

        assert raised.value.field == "reject_path"
        assert "reject_path" in str(raised.value)

    def test_unknown_resource_and_file_type_are_refused_before_any_call(self, tenant, tmp_path):
        with pytest.raises(OnTrackConfigError) as resource:
            _upsert("transfers", records=[], reject_path=str(tmp_path / "r.jsonl"))
        with pytest.raises(OnTrackConfigError) as suffix:
            _upsert(source=str(tmp_path / "assets.xlsx"))

        assert resource.value.field == "resource"
        assert suffix.value.field == "source"
        assert tenant.stats()["total_calls"] == 0


class TestTransfersAndWorkers:
    @pytest.mark.parametrize("target", ["to_location_id", "to_worker_id", "to_storage_asset_id"])
    def test_transfer_moves_the_assets(self, tenant, target):
        assets = tenant.tenant.all("assets")
        storage = next(asset for asset in assets if asset["assetType"] == "STORAGE_ASSET")
        location = next(
            place for place in tenant.tenant.all("locations") if place["id"] != storage["currentLocationId"]
        )
        worker = tenant.tenant.all("workers")[-1]
        moved = [asset["id"] for asset in _plain_assets(tenant)[:2]]
        target_id = {
            "to_location_id": location["id"],
            "to_worker_id": worker["id"],
            "to_storage_asset_id": storage["id"],
        }[target]

        answer = OnTrackTransferAssetsOperator(
            task_id="transfer", asset_ids=moved, note="Weekly rebalancing", **{target: target_id}
        ).execute({})

        assert answer["assetIds"] == moved
        assert answer["status"] == "COMPLETED"
        assert answer["transferId"]
        hook = OnTrackHook()
        for asset_id in moved:
            stored = hook.get_asset(asset_id)
            if target == "to_location_id":
                assert (stored["currentLocationId"], stored["parentAssetId"]) == (location["id"], None)
            elif target == "to_worker_id":
                assert stored["responsibleWorkerId"] == worker["id"]
            else:
                assert stored["parentAssetId"] == storage["id"]
                assert stored["currentLocationId"] == storage["currentLocationId"]
        assert hook.get_transfer(answer["transferId"])["note"] == "Weekly rebalancing"

    def test_transfer_in_transit_has_already_moved_the_assets(self, tenant):
        tenant.set_config(transfer_completion_delay=60)
        moved = [asset["id"] for asset in _plain_assets(tenant)[:3]]
        worker = tenant.tenant.all("workers")[0]

        answer = OnTrackTransferAssetsOperator(
            task_id="transfer", asset_ids=moved, to_worker_id=worker["id"]
        ).execute({})

        assert answer["status"] == "IN_TRANSIT"
        assert {tenant.tenant.get("assets", asset_id)["responsibleWorkerId"] for asset_id in moved} == {
            worker["id"]
        }
        assert tenant.stats()["calls"] == {"POST /transfers": 1}

    @pytest.mark.parametrize(
        "targets", [{}, {"to_location_id": "loc-1", "to_worker_id": "wrk-1"}], ids=["none", "two"]
    )
    def test_zero_or_two_targets_are_refused_before_any_call(self, tenant, targets):
        operator = OnTrackTransferAssetsOperator(task_id="transfer", asset_ids=["a-1"], **targets)

        with pytest.raises(OnTrackConfigError) as raised:
            operator.execute({})

        assert "exactly one" in str(raised.value)
        assert (tenant.stats()["total_calls"], tenant.stats()["token_requests"]) == (0, 0)

    def test_activate_worker_makes_it_an_app_user(self, tenant):
        worker = next(person for person in tenant.tenant.all("workers") if not person["isUser"])

        answer = OnTrackActivateWorkerOperator(
            task_id="activate",
            worker_id=worker["id"],
            email="new.user@example-construction.com",
            role_id="SITE_MANAGER",
        ).execute({})

        stored = tenant.tenant.get("workers", worker["id"])
        assert (stored["isUser"], stored["roleId"], stored["email"]) == (
            True,
            "SITE_MANAGER",
            "new.user@example-construction.com",
        )
        assert (stored["firstName"], stored["lastName"]) == (worker["firstName"], worker["lastName"])
        assert answer["id"] == worker["id"] and answer["isUser"] is True

    def test_deleting_a_worker_is_refused_without_a_call(self, tenant):
        worker_id = tenant.tenant.all("workers")[0]["id"]
        before = tenant.stats()

        with pytest.raises(OnTrackUnsupportedOperationError):
            OnTrackHook().delete_worker(worker_id)
        for method, path in (
            ("DELETE", f"/workers/{worker_id}"),
            ("delete", "workers/x/"),
            ("Delete", "//workers/x"),
        ):
            with pytest.raises(OnTrackUnsupportedOperationError):
                OnTrackRequestOperator(task_id="delete", method=method, path=path).execute({})

        assert tenant.stats() == before
        assert tenant.tenant.get("workers", worker_id) is not None

    def test_request_operator_returns_the_envelope(self, tenant):
        answer = OnTrackRequestOperator(
            task_id="request", method="GET", path="/locations", query={"pageSize": 2}
        ).execute({})

        assert answer["totalRecords"] == 12
        assert answer["pageSize"] == 2
        assert len(answer["result"]) == 2
        assert {"id", "name", "type"} <= set(answer["result"][0])
        assert tenant.stats()["calls"] == {"GET /locations": 1}

"""The write-back's guards against inputs and situations that would lose or duplicate records."""

from __future__ import annotations

import json

import pytest

from airflow_provider_ontrack.client.errors import OnTrackConfigError, OnTrackUnsupportedOperationError
from airflow_provider_ontrack.hooks.ontrack import OnTrackHook
from airflow_provider_ontrack.operators.ontrack import OnTrackRequestOperator
from tests.integration.test_writeback import (
    _plain_assets,
    _rejects,
    _seeded_location,
    _upsert,
    _write_jsonl,
    _writes,
    tenant,  # noqa: F401 - a fixture
)


class TestConfiguration:
    def test_a_reject_file_that_is_the_source_is_refused(self, tmp_path):
        source = str(tmp_path / "assets.jsonl")

        with pytest.raises(OnTrackConfigError) as raised:
            _upsert(source=source, reject_path=source)

        assert raised.value.field == "reject_path"

    @pytest.mark.parametrize("match_on", ["id", "lastModifiedDate"])
    def test_matching_on_a_field_ontrack_sets_is_refused(self, tmp_path, match_on):
        with pytest.raises(OnTrackConfigError) as raised:
            _upsert(source=str(tmp_path / "a.jsonl"), match_on=match_on)

        assert raised.value.field == "match_on"

    @pytest.mark.parametrize("dry_run", ["None", "", "  "])
    def test_a_dry_run_flag_that_rendered_empty_is_refused(self, tenant, tmp_path, dry_run):  # noqa: F811
        source = _write_jsonl(tmp_path / "a.jsonl", [{"externalId": "G-1", "name": "x"}])

        with pytest.raises(OnTrackConfigError) as raised:
            _upsert(source=str(source), dry_run=dry_run)

        assert raised.value.field == "dry_run"
        assert _writes(tenant) == {}

    def test_a_reject_path_that_is_a_folder_fails_before_writing(self, tenant, tmp_path):  # noqa: F811
        location = _seeded_location(tenant)["id"]
        source = _write_jsonl(
            tmp_path / "a.jsonl", [{"externalId": "G-1", "name": "x", "currentLocationId": location}]
        )

        with pytest.raises(OnTrackConfigError) as raised:
            _upsert(source=str(source), reject_path=str(tmp_path))

        assert raised.value.field == "reject_path"
        assert _writes(tenant) == {}


class TestInputs:
    def test_bom_and_blank_leading_lines_are_read(self, tenant, tmp_path):  # noqa: F811
        location = _seeded_location(tenant)
        jsonl = tmp_path / "a.jsonl"
        jsonl.write_text(
            "\ufeff"
            + json.dumps({"externalId": "G-1", "name": "x", "currentLocationId": location["id"]})
            + "\n",
            "utf-8",
        )
        csv_file = tmp_path / "w.csv"
        csv_file.write_text("\n\nexternalId,firstName,lastName\nG-W-1,Ada,Lovelace\n", "utf-8")

        assets = _upsert(source=str(jsonl))
        workers = _upsert("workers", source=str(csv_file))

        assert (assets["created"], assets["rejected"]) == (1, 0)
        assert (workers["created"], workers["rejected"]) == (1, 0)

    @pytest.mark.parametrize(
        "header", ["externalId,firstName,lastName,lastName", "externalId,firstName,,lastName"]
    )
    def test_an_unclear_csv_header_is_refused_before_any_write(self, tenant, tmp_path, header):  # noqa: F811
        source = tmp_path / "w.csv"
        source.write_text(f"{header}\nG-W-1,Ada,X,Lovelace\n", "utf-8")

        with pytest.raises(OnTrackConfigError, match="header"):
            _upsert("workers", source=str(source))

        assert _writes(tenant) == {}

    def test_a_file_that_is_not_utf8_names_the_source(self, tenant, tmp_path):  # noqa: F811
        source = tmp_path / "w.csv"
        source.write_bytes("externalId,firstName,lastName\nG-W-1,Jörg,Müller\n".encode("latin-1"))

        with pytest.raises(OnTrackConfigError, match="UTF-8") as raised:
            _upsert("workers", source=str(source))

        assert raised.value.field == "source"

    def test_fields_ontrack_sets_are_ignored_so_a_rerun_changes_nothing(self, tenant, tmp_path):  # noqa: F811
        asset = _plain_assets(tenant)[0]
        record = {
            "externalId": asset["externalId"],
            "name": "Renamed",
            "id": "made-up",
            "lastModifiedDate": "2020-01-01T00:00:00.000Z",
        }
        source = _write_jsonl(tmp_path / "a.jsonl", [record])

        first = _upsert(source=str(source))
        second = _upsert(source=str(source))

        assert (first["updated"], first["rejected"]) == (1, 0)
        assert (second["updated"], second["unchanged"]) == (0, 1)
        assert tenant.tenant.get("assets", asset["id"])["name"] == "Renamed"

    def test_keys_are_compared_without_surrounding_spaces(self, tenant, tmp_path):  # noqa: F811
        asset = _plain_assets(tenant)[0]
        source = _write_jsonl(
            tmp_path / "a.jsonl", [{"externalId": f"  {asset['externalId']} ", "name": asset["name"]}]
        )

        summary = _upsert(source=str(source))

        assert (summary["created"], summary["unchanged"]) == (0, 1)

    def test_a_huge_integer_is_compared_without_crashing(self, tenant, tmp_path):  # noqa: F811
        asset = _plain_assets(tenant)[0]
        source = _write_jsonl(
            tmp_path / "a.jsonl", [{"externalId": asset["externalId"], "purchasePrice": 10**400}]
        )

        summary = _upsert(source=str(source), dry_run=True)

        assert summary["updated"] == 1


class TestReferences:
    def test_a_reference_to_a_key_two_records_carry_is_rejected(self, tenant, tmp_path):  # noqa: F811
        location = _seeded_location(tenant)
        manager = tenant.tenant.all("workers")[0]["id"]
        tenant.tenant.create(
            "locations",
            {
                "name": "Impostor",
                "type": "JOBSITE",
                "managerId": manager,
                "externalId": location["externalId"],
            },
        )
        source = _write_jsonl(
            tmp_path / "a.jsonl",
            [
                {"externalId": "G-1", "name": "x", "currentLocationExternalId": location["externalId"]},
            ],
        )

        summary = _upsert(source=str(source), reject_path=str(tmp_path / "r.jsonl"))

        assert (summary["created"], summary["rejected"]) == (0, 1)
        assert "several" in _rejects(tmp_path / "r.jsonl")[0]["reason"]

    @pytest.mark.parametrize("key", [["SITE-0103"], {"k": 1}, 7])
    def test_a_reference_that_is_not_a_key_is_rejected(self, tenant, tmp_path, key):  # noqa: F811
        source = _write_jsonl(
            tmp_path / "a.jsonl", [{"externalId": "G-1", "name": "x", "currentLocationExternalId": key}]
        )

        summary = _upsert(source=str(source), reject_path=str(tmp_path / "r.jsonl"))

        assert summary["rejected"] == 1
        assert _rejects(tmp_path / "r.jsonl")[0]["reason"].startswith("currentLocationExternalId")

    def test_an_update_is_checked_as_the_merged_record(self, tenant, tmp_path):  # noqa: F811
        worker = next(w for w in tenant.tenant.all("workers") if w["isUser"] and w["externalId"])
        source = _write_jsonl(
            tmp_path / "w.jsonl",
            [
                {"externalId": worker["externalId"], "isUser": True, "designation": "Head of Tools"},
            ],
        )

        summary = _upsert("workers", source=str(source))

        assert (summary["updated"], summary["rejected"]) == (1, 0)
        assert tenant.tenant.get("workers", worker["id"])["designation"] == "Head of Tools"


class TestRejectsSurviveFailures:
    def test_rejects_are_written_when_the_run_fails(self, tenant, tmp_path):  # noqa: F811
        location = _seeded_location(tenant)["id"]
        source = _write_jsonl(
            tmp_path / "a.jsonl",
            [
                {"externalId": "G-BAD", "name": "x", "currentLocationId": location, "status": "BROKEN"},
                {"externalId": "G-OK", "name": "y", "currentLocationId": location},
            ],
        )
        tenant.add_fault(
            method="POST",
            path="/assets",
            status=409,
            count=1,
            body='{"status": 409, "message": "conflict"}',
            content_type="application/json",
        )

        with pytest.raises(Exception):  # noqa: B017 - the 409 itself is not what this test is about
            _upsert(source=str(source), reject_path=str(tmp_path / "r.jsonl"))

        assert [entry["record"]["externalId"] for entry in _rejects(tmp_path / "r.jsonl")] == ["G-BAD"]


class TestWorkers:
    def test_activation_keeps_the_worker_whole(self, tenant):  # noqa: F811
        worker = next(w for w in tenant.tenant.all("workers") if not w["isUser"])

        OnTrackHook().activate_worker_user(worker["id"], email="site@example.com", role_id="EVERYONE")

        stored = tenant.tenant.get("workers", worker["id"])
        assert (stored["firstName"], stored["lastName"]) == (worker["firstName"], worker["lastName"])
        assert (stored["isUser"], stored["email"]) == (True, "site@example.com")

    @pytest.mark.parametrize("path", ["/./workers/w-1", "/locations/../workers/w-1", "workers//w-1"])
    def test_deleting_a_worker_is_refused_however_the_path_is_spelled(self, tenant, path):  # noqa: F811
        with pytest.raises(OnTrackUnsupportedOperationError):
            OnTrackRequestOperator(task_id="delete", method="DELETE", path=path).execute({})

        assert tenant.stats()["total_calls"] == 0


def test_blank_transfer_targets_do_not_count(tenant):  # noqa: F811
    asset = _plain_assets(tenant)[0]
    location = _seeded_location(tenant)["id"]

    with pytest.raises(OnTrackConfigError):
        OnTrackHook().create_transfer([asset["id"]], to_location_id="  ", to_worker_id="   ")

    transfer = OnTrackHook().create_transfer([asset["id"]], to_location_id=location, to_worker_id="  ")
    assert transfer["status"] in ("IN_TRANSIT", "COMPLETED")


def test_too_many_rejects_fail_the_task_after_writing_the_rest(tenant, tmp_path):  # noqa: F811
    from airflow_provider_ontrack.client.errors import OnTrackError

    location = _seeded_location(tenant)["id"]
    source = _write_jsonl(
        tmp_path / "a.jsonl",
        [
            {"externalId": "G-BAD-1", "name": "x", "currentLocationId": location, "status": "BROKEN"},
            {"externalId": "G-BAD-2", "name": "x"},
            {"externalId": "G-OK", "name": "y", "currentLocationId": location},
        ],
    )

    with pytest.raises(OnTrackError, match="max_rejected=1"):
        _upsert(source=str(source), reject_path=str(tmp_path / "r.jsonl"), max_rejected=1)

    assert [entry["line"] for entry in _rejects(tmp_path / "r.jsonl")] == [1, 2]
    assert _writes(tenant) == {"POST /assets": 1}


def test_a_retried_transfer_is_not_made_twice(tenant):  # noqa: F811
    from types import SimpleNamespace

    from airflow_provider_ontrack.operators.ontrack import OnTrackTransferAssetsOperator

    asset = _plain_assets(tenant)[0]
    target = next(
        loc["id"] for loc in tenant.tenant.all("locations") if loc["id"] != asset["currentLocationId"]
    )
    operator = OnTrackTransferAssetsOperator(task_id="move", asset_ids=[asset["id"]], to_location_id=target)

    first = operator.execute({"ti": SimpleNamespace(try_number=1)})
    retry = operator.execute({"ti": SimpleNamespace(try_number=2)})

    assert first["status"] in ("IN_TRANSIT", "COMPLETED")
    assert retry["status"] == "ALREADY_THERE"
    assert tenant.stats()["calls"].get("POST /transfers") == 1


class _StateStore:
    """Stands in for Airflow's task state store, which keeps a task's values across its tries."""

    def __init__(self) -> None:
        self.values: dict = {}

    def get(self, key, default=None):
        return self.values.get(key, default)

    def set(self, key, value, *, retention=None) -> None:
        self.values[key] = value


def test_a_retried_transfer_returns_the_transfer_of_the_earlier_try(tenant):  # noqa: F811
    from types import SimpleNamespace

    from airflow_provider_ontrack.operators.ontrack import OnTrackTransferAssetsOperator

    asset = _plain_assets(tenant)[0]
    target = next(
        loc["id"] for loc in tenant.tenant.all("locations") if loc["id"] != asset["currentLocationId"]
    )
    operator = OnTrackTransferAssetsOperator(task_id="move", asset_ids=[asset["id"]], to_location_id=target)
    store = _StateStore()

    first = operator.execute({"ti": SimpleNamespace(try_number=1), "task_state_store": store})
    tenant.reset_stats()
    retry = operator.execute({"ti": SimpleNamespace(try_number=2), "task_state_store": store})

    assert first["transferId"] and retry == first
    assert tenant.stats()["total_calls"] == 0  # neither a second transfer nor a read of the assets


def test_a_retry_with_other_arguments_is_not_taken_for_the_earlier_transfer(tenant):  # noqa: F811
    from types import SimpleNamespace

    from airflow_provider_ontrack.operators.ontrack import OnTrackTransferAssetsOperator

    asset = _plain_assets(tenant)[0]
    first_target, second_target = [
        loc["id"] for loc in tenant.tenant.all("locations") if loc["id"] != asset["currentLocationId"]
    ][:2]
    store = _StateStore()
    earlier = OnTrackTransferAssetsOperator(
        task_id="move", asset_ids=[asset["id"]], to_location_id=first_target
    )
    earlier.execute({"ti": SimpleNamespace(try_number=1), "task_state_store": store})

    retry = OnTrackTransferAssetsOperator(
        task_id="move", asset_ids=[asset["id"]], to_location_id=second_target
    ).execute({"ti": SimpleNamespace(try_number=2), "task_state_store": store})

    assert retry["transferId"] and retry["status"] != "ALREADY_THERE"
    assert tenant.tenant.get("assets", asset["id"])["currentLocationId"] == second_target
    assert tenant.stats()["calls"]["POST /transfers"] == 2


def test_find_by_external_id_stops_at_the_first_match(tenant):  # noqa: F811
    asset = tenant.tenant.all("assets")[10]
    tenant.reset_stats()

    found = OnTrackHook().find_by_external_id("assets", asset["externalId"])
    missing = OnTrackHook().find_by_external_id("assets", "NO-SUCH-KEY")

    assert found["id"] == asset["id"]
    assert missing is None
    assert tenant.stats()["calls"]["GET /assets"] == 1 + 3  # first page holds it; a miss reads all

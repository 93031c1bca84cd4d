"""Tests of the local ON!Track sandbox over real HTTP on loopback."""

from __future__ import annotations

import email.utils
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import requests

from airflow_provider_ontrack.sandbox import (
    GRANTED_SCOPE,
    SANDBOX_CLIENT_ID,
    SANDBOX_CLIENT_SECRET,
    SANDBOX_PASSWORD,
    SANDBOX_USERNAME,
    OnTrackSandbox,
    Tenant,
)
from airflow_provider_ontrack.sandbox.tenant import ASSET_FIELDS, LOCATION_FIELDS, WORKER_FIELDS

NOW = "2026-06-01T00:00:00Z"
NOW_DT = datetime(2026, 6, 1, tzinfo=timezone.utc)
TIMESTAMP_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
REPO_ROOT = Path(__file__).resolve().parents[2]
FORM = {"grant_type": "password", "username": SANDBOX_USERNAME, "password": SANDBOX_PASSWORD}


def _ts(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%f%z")


@pytest.fixture(scope="module")
def sandbox():
    with OnTrackSandbox(seed=7, now=NOW) as sb:
        yield sb


@pytest.fixture(autouse=True)
def clean(sandbox):
    """Every test starts from the seeded tenant, default settings and zero counters."""
    sandbox.reset()
    sandbox.set_config(
        token_lifetime=3600,
        rate_limit=0,
        token_style="standard",
        transfer_completion_delay=0,
        retry_after_format="seconds",
        max_page_size=500,
    )
    sandbox.reset_stats()
    yield
    sandbox.clear_faults()


@pytest.fixture
def api(sandbox):
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {sandbox.grant_token()}"
    yield session
    session.close()


def get_token(sandbox: OnTrackSandbox, **form: str) -> requests.Response:
    return requests.post(
        sandbox.token_url, auth=(SANDBOX_CLIENT_ID, SANDBOX_CLIENT_SECRET), data={**FORM, **form}, timeout=5
    )


def fields_of(response: requests.Response) -> list[str]:
    return [item["field"] for item in response.json()["details"]]


def some(sandbox: OnTrackSandbox, resource: str, **match: Any) -> dict[str, Any]:
    """The first seeded record (by id) whose fields equal ``match``."""
    for record in sandbox.tenant.all(resource):
        if all(record.get(key) == value for key, value in match.items()):
            return record
    raise AssertionError(f"no {resource} with {match}")


# ---------------------------------------------------------------------------------------------------------
# Token endpoint
# ---------------------------------------------------------------------------------------------------------


def test_token_success(sandbox):
    response = get_token(sandbox)

    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.headers["Cache-Control"] == "no-store"
    body = response.json()
    assert len(body["access_token"]) >= 40
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 3600
    assert body["scope"] == GRANTED_SCOPE
    assert sandbox.stats()["token_requests"] == 1

    check = requests.get(
        sandbox.base_url + "/workers", headers={"Authorization": f"Bearer {body['access_token']}"}, timeout=5
    )
    assert check.status_code == 200


def test_token_scope_is_case_insensitive(sandbox):
    assert get_token(sandbox, scope="hc.request.allscopes").status_code == 200

    unknown = get_token(sandbox, scope="Something.Else")
    assert unknown.status_code == 400
    assert unknown.json()["error"] == "invalid_scope"


@pytest.mark.parametrize(
    ("auth", "form", "content", "status", "error"),
    [
        (None, {}, None, 401, "invalid_client"),
        ((SANDBOX_CLIENT_ID, "wrong"), {}, None, 401, "invalid_client"),
        (("someone-else", SANDBOX_CLIENT_SECRET), {}, None, 401, "invalid_client"),
        ("ok", {"grant_type": "client_credentials"}, None, 400, "unsupported_grant_type"),
        ("ok", {"password": "nope"}, None, 403, "invalid_grant"),
        ("ok", {"username": "intruder@example.com"}, None, 403, "invalid_grant"),
        ("ok", {}, "json", 400, "invalid_request"),
    ],
)
def test_token_failures(sandbox, auth, form, content, status, error):
    credentials = (SANDBOX_CLIENT_ID, SANDBOX_CLIENT_SECRET) if auth == "ok" else auth
    payload = {**FORM, **form}
    if content == "json":
        response = requests.post(sandbox.token_url, auth=credentials, json=payload, timeout=5)
    else:
        response = requests.post(sandbox.token_url, auth=credentials, data=payload, timeout=5)

    assert response.status_code == status
    body = response.json()
    assert body["error"] == error
    assert "access_token" not in body
    if error == "invalid_client":
        assert body["error_description"] == "Unknown client or wrong client secret"
    if error == "invalid_grant":
        assert body["error_description"] == "Wrong email or password."
    stats = sandbox.stats()
    assert (stats["token_requests"], stats["token_failures"]) == (0, 1)


def test_username_is_case_insensitive_but_password_is_not(sandbox):
    assert get_token(sandbox, username=SANDBOX_USERNAME.upper()).status_code == 200
    assert get_token(sandbox, password=SANDBOX_PASSWORD.upper()).status_code == 403


@pytest.mark.parametrize(
    ("style", "check"),
    [
        ("standard", lambda body: body["expires_in"] == 3600 and body["token_type"] == "Bearer"),
        ("string_expiry", lambda body: body["expires_in"] == "3600"),
        ("no_expiry", lambda body: "expires_in" not in body),
        ("lowercase_type", lambda body: body["token_type"] == "bearer"),
    ],
)
def test_sloppy_token_styles(sandbox, style, check):
    requests.post(sandbox.url + "/_sandbox/config", json={"token_style": style}, timeout=5).raise_for_status()

    body = get_token(sandbox).json()

    assert check(body)
    headers = {"Authorization": f"Bearer {body['access_token']}"}
    assert requests.get(sandbox.base_url + "/locations", headers=headers, timeout=5).status_code == 200


def test_token_expires(sandbox):
    sandbox.set_config(token_lifetime=1)
    token = get_token(sandbox).json()["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    assert requests.get(sandbox.base_url + "/workers", headers=headers, timeout=5).status_code == 200

    time.sleep(1.1)
    response = requests.get(sandbox.base_url + "/workers", headers=headers, timeout=5)

    assert response.status_code == 401
    assert response.json()["status"] == 401
    assert response.json()["error"] == "Unauthorized"
    assert "expired" in response.json()["message"]
    assert token not in response.text


def test_fractional_lifetime_is_reported_as_whole_seconds(sandbox):
    sandbox.set_config(token_lifetime=2.5)

    assert get_token(sandbox).json()["expires_in"] == 2


def test_issued_tokens_lists_every_token_handed_out(sandbox):
    before = set(sandbox.issued_tokens())

    over_http = get_token(sandbox).json()["access_token"]
    direct = sandbox.grant_token()
    get_token(sandbox, password="wrong")

    assert set(sandbox.issued_tokens()) - before == {over_http, direct}


def test_revoked_tokens_stop_working(sandbox, api):
    assert api.get(sandbox.base_url + "/assets").status_code == 200

    revoked = requests.post(sandbox.url + "/_sandbox/tokens/revoke", timeout=5)
    response = api.get(sandbox.base_url + "/assets")

    assert revoked.status_code == 200
    assert response.status_code == 401
    assert "revoked" in response.json()["message"]
    fresh = get_token(sandbox).json()["access_token"]
    headers = {"Authorization": f"Bearer {fresh}"}
    assert requests.get(sandbox.base_url + "/assets", headers=headers, timeout=5).status_code == 200


@pytest.mark.parametrize("header", [None, "Bearer not-a-token", "Basic abc", "Bearer "])
def test_missing_or_unknown_bearer_token(sandbox, header):
    headers = {"Authorization": header} if header else {}

    response = requests.get(sandbox.base_url + "/assets", headers=headers, timeout=5)

    assert response.status_code == 401
    body = response.json()
    assert (body["status"], body["error"]) == (401, "Unauthorized")
    assert "not-a-token" not in response.text


# ---------------------------------------------------------------------------------------------------------
# Lists and paging
# ---------------------------------------------------------------------------------------------------------


def test_list_envelope_defaults(sandbox, api):
    response = api.get(sandbox.base_url + "/assets")

    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json; charset=utf-8"
    body = response.json()
    assert set(body) == {"result", "pageNumber", "pageSize", "totalRecords"}
    assert (body["pageNumber"], body["pageSize"], body["totalRecords"]) == (1, 100, 1500)
    assert len(body["result"]) == 100
    assert all(list(record) == list(ASSET_FIELDS) for record in body["result"])


def test_page_size_is_capped_at_500_silently(sandbox, api):
    first = api.get(sandbox.base_url + "/assets", params={"pageSize": 1000}).json()
    third = api.get(sandbox.base_url + "/assets", params={"pageSize": 1000, "page": 3}).json()
    past_end = api.get(sandbox.base_url + "/assets", params={"pageSize": 1000, "page": 4}).json()

    assert (first["pageSize"], len(first["result"]), first["totalRecords"]) == (500, 500, 1500)
    assert (third["pageNumber"], len(third["result"])) == (3, 500)
    assert past_end["result"] == []
    assert past_end["totalRecords"] == 1500


def test_max_page_size_setting(sandbox, api):
    sandbox.set_config(max_page_size=40)

    body = api.get(sandbox.base_url + "/workers", params={"pageSize": 100}).json()

    assert (body["pageSize"], len(body["result"]), body["totalRecords"]) == (40, 25, 25)


def test_pages_are_ordered_by_id_without_gaps(sandbox, api):
    ids: list[str] = []
    page = 1
    while True:
        body = api.get(sandbox.base_url + "/workers", params={"page": page, "pageSize": 7}).json()
        if not body["result"]:
            break
        ids += [record["id"] for record in body["result"]]
        page += 1

    assert page == 5
    assert len(ids) == len(set(ids)) == 25
    assert ids == sorted(ids)


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"page": 0}, "page"),
        ({"page": "abc"}, "page"),
        ({"pageSize": 0}, "pageSize"),
        ({"pageSize": -5}, "pageSize"),
        ({"pageSize": "1.5"}, "pageSize"),
    ],
)
def test_bad_paging_parameters(sandbox, api, params, field):
    response = api.get(sandbox.base_url + "/locations", params=params)

    assert response.status_code == 400
    assert response.json()["error"] == "Bad Request"
    assert field in fields_of(response)


def test_unknown_query_parameters_are_ignored(sandbox, api):
    response = api.get(sandbox.base_url + "/locations", params={"sort": "name", "foo": "bar"})

    assert response.status_code == 200
    assert response.json()["totalRecords"] == 12


# ---------------------------------------------------------------------------------------------------------
# Change windows
# ---------------------------------------------------------------------------------------------------------


def ids_modified(sandbox: OnTrackSandbox, start: datetime, end: datetime | None = None) -> list[str]:
    return [
        record["id"]
        for record in sandbox.tenant.all("assets")
        if start <= _ts(record["lastModifiedDate"]) and (end is None or _ts(record["lastModifiedDate"]) < end)
    ]


def all_ids(sandbox: OnTrackSandbox, api: requests.Session, **params: Any) -> list[str]:
    body = api.get(sandbox.base_url + "/assets", params={**params, "pageSize": 500}).json()
    assert body["totalRecords"] <= 500
    return [record["id"] for record in body["result"]]


def test_date_only_window(sandbox, api):
    expected = ids_modified(
        sandbox, datetime(2026, 3, 1, tzinfo=timezone.utc), datetime(2026, 4, 1, tzinfo=timezone.utc)
    )

    got = all_ids(sandbox, api, startDate="2026-03-01", endDate="2026-04-01")

    assert 100 < len(expected) < 500
    assert got == expected


def test_window_offsets_and_naive_times_are_utc(sandbox, api):
    utc = all_ids(sandbox, api, startDate="2026-04-10T06:30:00Z", endDate="2026-05-02T00:00:00.000Z")
    shifted = all_ids(
        sandbox, api, startDate="2026-04-10T08:30:00+02:00", endDate="2026-05-01T19:00:00-05:00"
    )
    naive = all_ids(sandbox, api, startDate="2026-04-10T06:30:00", endDate="2026-05-02T00:00:00")

    # An unencoded "+" in a query string arrives as a space; the offset must still be read.
    raw = api.get(
        sandbox.base_url
        + "/assets?pageSize=500&startDate=2026-04-10T08:30:00+02:00&endDate=2026-05-02T00:00:00Z"
    )

    assert utc == shifted == naive
    assert [record["id"] for record in raw.json()["result"]] == utc
    assert utc == ids_modified(
        sandbox, datetime(2026, 4, 10, 6, 30, tzinfo=timezone.utc), datetime(2026, 5, 2, tzinfo=timezone.utc)
    )


def test_window_of_90_days_is_fine_but_91_is_not(sandbox, api):
    ok = api.get(sandbox.base_url + "/assets", params={"startDate": "2026-01-01", "endDate": "2026-04-01"})
    too_long = api.get(
        sandbox.base_url + "/assets", params={"startDate": "2026-01-01", "endDate": "2026-04-02"}
    )

    assert ok.status_code == 200
    assert too_long.status_code == 400
    assert "90 days" in too_long.json()["message"]
    assert fields_of(too_long) == ["startDate"]


def test_start_date_alone_runs_until_now(sandbox, api):
    start = NOW_DT - timedelta(days=20)

    got = all_ids(sandbox, api, startDate=start.strftime("%Y-%m-%dT%H:%M:%SZ"))
    too_old = api.get(sandbox.base_url + "/assets", params={"startDate": "2025-12-01"})

    assert got == ids_modified(sandbox, start)
    assert too_old.status_code == 400
    assert "90 days" in too_old.json()["message"]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"endDate": "2026-05-01"}, "startDate"),
        ({"startDate": "2026-05-02", "endDate": "2026-05-01"}, "startDate"),
        ({"startDate": "yesterday"}, "startDate"),
        ({"startDate": "2026-05-01", "endDate": "2026-13-01"}, "endDate"),
        ({"daysSinceLastModified": 0}, "daysSinceLastModified"),
        ({"daysSinceLastModified": 91}, "daysSinceLastModified"),
        ({"daysSinceLastModified": "ten"}, "daysSinceLastModified"),
        ({"daysSinceLastModified": 5, "startDate": "2026-05-01"}, "daysSinceLastModified"),
    ],
)
def test_bad_change_windows(sandbox, api, params, field):
    response = api.get(sandbox.base_url + "/assets", params=params)

    assert response.status_code == 400
    assert field in fields_of(response)


def test_days_since_last_modified(sandbox, api):
    start = sandbox.tenant.clock() - timedelta(days=10)

    got = all_ids(sandbox, api, daysSinceLastModified=10)

    assert 0 < len(got) < 500
    assert got == ids_modified(sandbox, start)


def test_new_and_updated_records_enter_the_window(sandbox, api):
    location = some(sandbox, "locations")
    old_asset = min(sandbox.tenant.all("assets"), key=lambda record: record["lastModifiedDate"])
    created = api.post(
        sandbox.base_url + "/assets", json={"name": "Fresh", "currentLocationId": location["id"]}
    )
    updated = api.put(sandbox.base_url + f"/assets/{old_asset['id']}", json={"costCode": "KST-9999"})

    start = sandbox.tenant.clock() - timedelta(days=1)
    got = all_ids(sandbox, api, daysSinceLastModified=1)

    assert created.status_code == 201
    assert updated.status_code == 200
    assert {created.json()["id"], old_asset["id"]} <= set(got)
    assert got == ids_modified(sandbox, start)


# ---------------------------------------------------------------------------------------------------------
# Records, validation, creation and updates
# ---------------------------------------------------------------------------------------------------------


def test_seeded_tenant_shape(sandbox):
    workers, locations, assets = (sandbox.tenant.all(name) for name in ("workers", "locations", "assets"))
    by_id = {asset["id"]: asset for asset in assets}
    storage = [asset for asset in assets if asset["assetType"] == "STORAGE_ASSET"]
    children = [asset for asset in assets if asset["parentAssetId"]]
    names = {f"{worker['firstName']} {worker['lastName']}" for worker in workers}

    assert (len(workers), len(locations), len(assets)) == (25, 12, 1500)
    assert {"Jonas Müller", "Zoë Ångström", "Дмитрий Иванов", "Siobhán O'Brien"} <= names
    assert "東京 渋谷 現場" in {location["name"] for location in locations}
    assert len(storage) == 40
    assert 150 < len(children) < 500
    for child in children:
        parent = by_id[child["parentAssetId"]]
        assert parent["assetType"] == "STORAGE_ASSET"
        assert parent["currentLocationId"] == child["currentLocationId"]
    for key in ("serialNumber", "inventoryNumber", "scanCode"):
        assert len({asset[key] for asset in assets}) == 1500
    assert Counter(asset["status"] for asset in assets).most_common(1)[0][0] == "ACTIVE"
    assert {"OWNED", "RENTED", "LEASED", "FLEET"} == {asset["ownershipType"] for asset in assets}
    assert 1 <= sum(location["locationState"] == "INACTIVE" for location in locations) <= 2
    assert all(worker["email"] and worker["roleId"] for worker in workers if worker["isUser"])
    for record in workers + locations + assets:
        moment = _ts(record["lastModifiedDate"])
        assert NOW_DT - timedelta(days=180) <= moment < NOW_DT
        assert TIMESTAMP_RE.match(record["lastModifiedDate"])
    assert {location["origin"] for location in locations} == {"ONTRACK"}
    assert all(list(worker) == list(WORKER_FIELDS) for worker in workers)
    assert all(list(location) == list(LOCATION_FIELDS) for location in locations)


def test_create_read_and_list_an_asset(sandbox, api):
    location = some(sandbox, "locations")
    worker = some(sandbox, "workers")
    body = {
        "name": "TE 30-A36 rotary hammer",
        "currentLocationId": location["id"],
        "responsibleWorkerId": worker["id"],
        "status": "ACTIVE",
        "assetType": "ASSET",
        "ownershipType": "FLEET",
        "labels": ["new"],
        "purchasePrice": 1099.5,
        "purchaseDate": "2026-05-20",
        "externalId": "ERP-A-000001",
        "customColour": "red",
        "id": "client-chosen",
        "lastModifiedDate": "2000-01-01T00:00:00.000Z",
    }

    created = api.post(sandbox.base_url + "/assets", json=body)

    assert created.status_code == 201
    record = created.json()
    assert record["id"] != "client-chosen"
    assert TIMESTAMP_RE.match(record["lastModifiedDate"])
    assert _ts(record["lastModifiedDate"]) >= NOW_DT
    assert record["ontrackId"]
    assert record["customColour"] == "red"
    assert record["serialNumber"] is None
    assert set(ASSET_FIELDS) <= set(record)
    assert api.get(sandbox.base_url + f"/assets/{record['id']}").json() == record
    assert api.get(sandbox.base_url + "/assets").json()["totalRecords"] == 1501
    assert sandbox.tenant.count("assets") == 1501


def test_external_ids_need_not_be_unique(sandbox, api):
    taken = some(sandbox, "workers")["externalId"] or "HR-1"

    response = api.post(
        sandbox.base_url + "/workers", json={"firstName": "A", "lastName": "B", "externalId": taken}
    )

    assert response.status_code == 201
    assert response.json()["externalId"] == taken


def test_created_location_has_unite_origin(sandbox, api):
    manager = some(sandbox, "workers")

    response = api.post(
        sandbox.base_url + "/locations",
        json={"name": "Neue Baustelle Graz", "type": "JOBSITE", "managerId": manager["id"]},
    )

    assert response.status_code == 201
    assert response.json()["origin"] == "UNITE"
    assert response.json()["labels"] is None
    assert set(response.json()) == set(LOCATION_FIELDS)


@pytest.mark.parametrize(
    ("resource", "body", "fields"),
    [
        ("workers", {}, ["firstName", "lastName"]),
        ("workers", {"firstName": "  ", "lastName": 5}, ["lastName", "firstName"]),
        ("workers", {"firstName": "A", "lastName": "B", "isUser": True}, ["email", "roleId"]),
        ("workers", {"firstName": "A", "lastName": "B", "isUser": "yes"}, ["isUser"]),
        ("workers", {"firstName": "A", "lastName": "B", "email": "no-at-sign"}, ["email"]),
        ("workers", {"firstName": "A", "lastName": "B", "contractType": "FREELANCE"}, ["contractType"]),
        ("locations", {"name": "X", "type": "GARAGE", "managerId": "nobody"}, ["type", "managerId"]),
        ("locations", {"name": "X"}, ["type", "managerId"]),
        ("assets", {}, ["name", "currentLocationId"]),
        ("assets", {"name": "X", "currentLocationId": "nowhere"}, ["currentLocationId"]),
    ],
)
def test_validation_errors_name_the_fields(sandbox, api, resource, body, fields):
    response = api.post(sandbox.base_url + f"/{resource}", json=body)

    assert response.status_code == 400
    payload = response.json()
    assert (payload["status"], payload["error"]) == (400, "Bad Request")
    assert sorted(fields_of(response)) == sorted(fields)
    assert all(item["message"] for item in payload["details"])
    assert sandbox.tenant.count(resource) == {"workers": 25, "locations": 12, "assets": 1500}[resource]


def test_asset_field_types_enums_and_references(sandbox, api):
    location = some(sandbox, "locations")
    tool = some(sandbox, "assets", assetType="ASSET")
    body = {
        "name": 42,
        "currentLocationId": location["id"],
        "status": "BROKEN",
        "assetType": "BOX",
        "ownershipType": "BORROWED",
        "labels": ["ok", 3],
        "purchasePrice": "12.50",
        "purchaseDate": "20.05.2026",
        "responsibleWorkerId": "ghost",
        "parentAssetId": tool["id"],
        "locationState": "ANYTHING",
    }

    response = api.post(sandbox.base_url + "/assets", json=body)

    assert response.status_code == 400
    assert sorted(fields_of(response)) == sorted(
        [
            "name",
            "status",
            "assetType",
            "ownershipType",
            "labels",
            "purchasePrice",
            "purchaseDate",
            "responsibleWorkerId",
            "parentAssetId",
        ]
    )


def test_location_state_enum(sandbox, api):
    manager = some(sandbox, "workers")
    body = {"name": "X", "type": "WAREHOUSE", "managerId": manager["id"], "locationState": "CLOSED"}

    response = api.post(sandbox.base_url + "/locations", json=body)

    assert response.status_code == 400
    assert fields_of(response) == ["locationState"]


def test_storage_parent_is_accepted(sandbox, api):
    box = some(sandbox, "assets", assetType="STORAGE_ASSET")
    body = {
        "name": "Spare battery",
        "currentLocationId": box["currentLocationId"],
        "parentAssetId": box["id"],
    }

    response = api.post(sandbox.base_url + "/assets", json=body)

    assert response.status_code == 201
    assert response.json()["parentAssetId"] == box["id"]


@pytest.mark.parametrize("raw", [b"[1, 2]", b"{not json", b"", b'"text"', b'{"name": NaN}'])
def test_body_must_be_a_json_object(sandbox, api, raw):
    response = api.post(sandbox.base_url + "/workers", data=raw, headers={"Content-Type": "application/json"})

    assert response.status_code == 400
    assert response.json()["status"] == 400


def test_put_updates_merges_and_bumps_the_date(sandbox, api):
    worker = some(sandbox, "workers", isUser=False)

    response = api.put(
        sandbox.base_url + f"/workers/{worker['id']}",
        json={
            "designation": "Foreman",
            "id": "other",
            "lastModifiedDate": "2001-01-01T00:00:00.000Z",
            "badge": 7,
        },
    )

    assert response.status_code == 200
    record = response.json()
    assert record["id"] == worker["id"]
    assert record["designation"] == "Foreman"
    assert record["firstName"] == worker["firstName"]
    assert record["badge"] == 7
    assert _ts(record["lastModifiedDate"]) > _ts(worker["lastModifiedDate"])
    assert _ts(record["lastModifiedDate"]) >= NOW_DT
    assert api.get(sandbox.base_url + f"/workers/{worker['id']}").json() == record


def test_put_validates_the_merged_record(sandbox, api):
    worker = some(sandbox, "workers", isUser=False)
    asset = some(sandbox, "assets", assetType="ASSET")

    blank = api.put(sandbox.base_url + f"/workers/{worker['id']}", json={"lastName": ""})
    user = api.put(sandbox.base_url + f"/workers/{worker['id']}", json={"isUser": True, "roleId": None})
    bad_status = api.put(sandbox.base_url + f"/assets/{asset['id']}", json={"status": "STOLEN"})
    missing = api.put(sandbox.base_url + "/workers/does-not-exist", json={"lastName": "X"})

    assert (blank.status_code, fields_of(blank)) == (400, ["lastName"])
    assert user.status_code == 400
    assert "roleId" in fields_of(user)
    assert (bad_status.status_code, fields_of(bad_status)) == (400, ["status"])
    assert missing.status_code == 404
    assert sandbox.tenant.get("workers", worker["id"]) == worker


def test_unknown_ids_and_paths_are_json_404s(sandbox, api):
    for path in ("/assets/no-such-id", "/workers/no-such-id", "/gadgets", "/transfers/nope", ""):
        response = api.get(sandbox.base_url + path)
        assert response.status_code == 404, path
        assert response.json()["status"] == 404


def test_workers_and_others_cannot_be_deleted(sandbox, api):
    worker = some(sandbox, "workers")
    asset = some(sandbox, "assets")

    response = api.delete(sandbox.base_url + f"/workers/{worker['id']}")
    other = api.delete(sandbox.base_url + f"/assets/{asset['id']}")

    assert response.status_code == 405
    assert response.json() == {
        "status": 405,
        "error": "Method Not Allowed",
        "message": "Workers cannot be deleted",
    }
    assert other.status_code == 405
    assert sandbox.tenant.count("workers") == 25


def test_non_latin_text_round_trips(sandbox, api):
    body = {"firstName": "Zoë 🚧", "lastName": "王", "designation": "Прораб", "costCenter": "مركز-٤٢"}

    created = api.post(sandbox.base_url + "/workers", json=body)
    raw = api.get(sandbox.base_url + f"/workers/{created.json()['id']}")

    assert created.status_code == 201
    assert "Zoë 🚧".encode() in raw.content
    assert b"\\u" not in raw.content
    assert {key: raw.json()[key] for key in body} == body


def test_concurrent_creates_are_all_stored(sandbox):
    token = sandbox.grant_token()
    errors: list[int] = []

    def create(index: int) -> None:
        headers = {"Authorization": f"Bearer {token}"}
        for number in range(10):
            response = requests.post(
                sandbox.base_url + "/workers",
                json={"firstName": f"T{index}", "lastName": str(number)},
                headers=headers,
                timeout=10,
            )
            if response.status_code != 201:
                errors.append(response.status_code)

    threads = [threading.Thread(target=create, args=(index,)) for index in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert sandbox.tenant.count("workers") == 25 + 80
    assert sandbox.stats()["calls"]["POST /workers"] == 80


def test_programmatic_create_goes_through_validation(sandbox):
    from airflow_provider_ontrack.sandbox import ValidationError

    with pytest.raises(ValidationError) as caught:
        sandbox.tenant.create("assets", {"name": "No location"})
    record = sandbox.tenant.create("workers", {"firstName": "Py", "lastName": "Test"})

    assert caught.value.details == [{"field": "currentLocationId", "message": "must not be blank"}]
    assert sandbox.tenant.get("workers", record["id"]) == record


# ---------------------------------------------------------------------------------------------------------
# Transfers
# ---------------------------------------------------------------------------------------------------------


def test_transfer_to_location(sandbox, api):
    child = some(
        sandbox,
        "assets",
        assetType="ASSET",
        parentAssetId=next(
            asset["parentAssetId"] for asset in sandbox.tenant.all("assets") if asset["parentAssetId"]
        ),
    )
    target = next(
        location
        for location in sandbox.tenant.all("locations")
        if location["id"] != child["currentLocationId"]
    )

    response = api.post(
        sandbox.base_url + "/transfers",
        json={"assetIds": [child["id"]], "toLocationId": target["id"], "note": "Zurück ins Lager 📦"},
    )

    assert response.status_code == 201
    body = response.json()
    assert set(body) == {"transferId", "status", "assetIds"}
    assert (body["status"], body["assetIds"]) == ("COMPLETED", [child["id"]])
    moved = sandbox.tenant.get("assets", child["id"])
    assert moved["currentLocationId"] == target["id"]
    assert moved["parentAssetId"] is None
    assert moved["lastModifiedDate"] > child["lastModifiedDate"]
    stored = api.get(sandbox.base_url + f"/transfers/{body['transferId']}").json()
    assert (stored["status"], stored["toLocationId"], stored["note"]) == (
        "COMPLETED",
        target["id"],
        "Zurück ins Lager 📦",
    )


def test_transfer_to_worker_and_into_storage(sandbox, api):
    tools = [asset for asset in sandbox.tenant.all("assets") if asset["assetType"] == "ASSET"][:3]
    worker = some(sandbox, "workers")
    van = some(sandbox, "assets", assetType="STORAGE_ASSET")
    ids = [tool["id"] for tool in tools]

    to_worker = api.post(sandbox.base_url + "/transfers", json={"assetIds": ids, "toWorkerId": worker["id"]})
    to_van = api.post(
        sandbox.base_url + "/transfers",
        json={"assetIds": ids, "toStorageAssetId": van["id"], "transferDate": "2026-05-31T10:00:00+02:00"},
    )

    assert (to_worker.status_code, to_van.status_code) == (201, 201)
    for asset_id in ids:
        record = sandbox.tenant.get("assets", asset_id)
        assert record["responsibleWorkerId"] == worker["id"]
        assert record["parentAssetId"] == van["id"]
        assert record["currentLocationId"] == van["currentLocationId"]
    stored = api.get(sandbox.base_url + f"/transfers/{to_van.json()['transferId']}").json()
    assert stored["transferDate"] == "2026-05-31T08:00:00.000Z"


@pytest.mark.parametrize(
    "case", ["two_targets", "no_target", "unknown_asset", "not_storage", "into_itself", "empty"]
)
def test_bad_transfers(sandbox, api, case):
    tool = some(sandbox, "assets", assetType="ASSET")
    van = some(sandbox, "assets", assetType="STORAGE_ASSET")
    location = some(sandbox, "locations")
    bodies = {
        "two_targets": {"assetIds": [tool["id"]], "toLocationId": location["id"], "toWorkerId": "x"},
        "no_target": {"assetIds": [tool["id"]]},
        "unknown_asset": {"assetIds": [tool["id"], "ghost"], "toLocationId": location["id"]},
        "not_storage": {"assetIds": [van["id"]], "toStorageAssetId": tool["id"]},
        "into_itself": {"assetIds": [van["id"], tool["id"]], "toStorageAssetId": van["id"]},
        "empty": {"assetIds": [], "toLocationId": location["id"]},
    }

    response = api.post(sandbox.base_url + "/transfers", json=bodies[case])

    assert response.status_code == 400
    assert response.json()["details"]
    assert sandbox.tenant.get("assets", tool["id"]) == tool


def test_transfer_in_transit_then_completed(sandbox, api):
    sandbox.set_config(transfer_completion_delay=0.6)
    tool = some(sandbox, "assets", assetType="ASSET")
    location = next(loc for loc in sandbox.tenant.all("locations") if loc["id"] != tool["currentLocationId"])

    created = api.post(
        sandbox.base_url + "/transfers", json={"assetIds": [tool["id"]], "toLocationId": location["id"]}
    )
    url = sandbox.base_url + f"/transfers/{created.json()['transferId']}"
    early = api.get(url).json()["status"]
    time.sleep(0.7)
    late = api.get(url).json()["status"]

    assert (created.json()["status"], early, late) == ("IN_TRANSIT", "IN_TRANSIT", "COMPLETED")


# ---------------------------------------------------------------------------------------------------------
# Rate limiting and faults
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("style", ["seconds", "http-date"])
def test_rate_limit_answers_429_with_retry_after(sandbox, api, style):
    sandbox.set_config(rate_limit=3, retry_after_format=style)

    statuses = []
    rejected = None
    for _ in range(8):
        response = api.get(sandbox.base_url + "/locations", params={"pageSize": 1})
        statuses.append(response.status_code)
        if response.status_code == 429:
            rejected = response

    assert statuses[:3] == [200, 200, 200]
    assert statuses[3:] == [429] * 5
    assert rejected.json()["status"] == 429
    retry_after = rejected.headers["Retry-After"]
    if style == "seconds":
        assert retry_after == "1"
    else:
        moment = email.utils.parsedate_to_datetime(retry_after)
        assert 0 <= (moment - datetime.now(timezone.utc)).total_seconds() <= 3
    stats = sandbox.stats()
    assert stats["rejected_429"] == 5
    assert stats["calls"]["GET /locations"] == 8

    time.sleep(1.05)
    assert api.get(sandbox.base_url + "/locations").status_code == 200


def test_fault_with_html_body(sandbox, api):
    html = "<html><body><h1>503 Service Temporarily Unavailable</h1></body></html>"
    fault = {
        "method": "GET",
        "path": "/assets",
        "status": 503,
        "count": 2,
        "body": html,
        "content_type": "text/html",
        "headers": {"Retry-After": "1"},
    }
    assert requests.post(sandbox.url + "/_sandbox/faults", json=fault, timeout=5).status_code == 201

    first = api.get(sandbox.base_url + "/assets")
    other = api.get(sandbox.base_url + "/workers")
    second = api.get(sandbox.base_url + "/assets")
    third = api.get(sandbox.base_url + "/assets")

    assert (first.status_code, second.status_code, third.status_code, other.status_code) == (
        503,
        503,
        200,
        200,
    )
    assert first.text == html
    assert first.headers["Content-Type"] == "text/html"
    assert first.headers["Retry-After"] == "1"
    assert sandbox.stats()["calls"]["GET /assets"] == 3


def test_fault_by_template_and_on_the_token_endpoint(sandbox, api):
    asset = some(sandbox, "assets")
    sandbox.add_fault(path="/assets/{id}", status=502)
    sandbox.add_fault(path="/hc/token", method="POST", status=500)

    single = api.get(sandbox.base_url + f"/assets/{asset['id']}")
    listing = api.get(sandbox.base_url + "/assets")
    token = get_token(sandbox)

    assert (single.status_code, listing.status_code, token.status_code) == (502, 200, 500)
    assert single.json()["status"] == 502
    assert sandbox.stats()["token_failures"] == 1
    assert get_token(sandbox).status_code == 200


def test_fault_drop_closes_the_connection(sandbox, api):
    sandbox.add_fault(path="/workers", drop=True)

    with pytest.raises(requests.ConnectionError):
        requests.get(sandbox.base_url + "/workers", headers=api.headers, timeout=5)

    assert api.get(sandbox.base_url + "/workers").status_code == 200
    assert sandbox.stats()["calls"]["GET /workers"] == 2


def test_fault_delay_makes_clients_time_out(sandbox, api):
    sandbox.add_fault(path="/locations", status=200, delay=1.0, body={"late": True})

    started = time.monotonic()
    with pytest.raises(requests.Timeout):
        requests.get(sandbox.base_url + "/locations", headers=api.headers, timeout=0.3)

    assert time.monotonic() - started < 0.9
    assert api.get(sandbox.base_url + "/locations").json()["totalRecords"] == 12


def test_fault_without_status_only_delays(sandbox, api):
    sandbox.add_fault(path="/locations", status=None, delay=0.3)

    started = time.monotonic()
    response = api.get(sandbox.base_url + "/locations")

    assert response.status_code == 200
    assert time.monotonic() - started >= 0.3


def test_fault_after_effect_commits_then_fails(sandbox, api):
    sandbox.add_fault(method="POST", path="/workers", status=504, after_effect=True, body="Gateway Timeout")

    response = api.post(sandbox.base_url + "/workers", json={"firstName": "Ghost", "lastName": "Write"})

    assert response.status_code == 504
    assert response.text == "Gateway Timeout"
    assert sandbox.tenant.count("workers") == 26
    assert any(worker["firstName"] == "Ghost" for worker in sandbox.tenant.all("workers"))


def test_faults_can_be_listed_and_cleared(sandbox, api):
    sandbox.add_fault(path="/assets", status=500, count=5)
    listed = requests.get(sandbox.url + "/_sandbox/faults", timeout=5).json()["faults"]

    cleared = requests.delete(sandbox.url + "/_sandbox/faults", timeout=5)

    assert [fault["count"] for fault in listed] == [5]
    assert cleared.json() == {"cleared": 1}
    assert api.get(sandbox.base_url + "/assets").status_code == 200


def test_bad_fault_and_config_requests(sandbox):
    bad_fault = requests.post(sandbox.url + "/_sandbox/faults", json={"status": 503}, timeout=5)
    bad_config = requests.post(
        sandbox.url + "/_sandbox/config", json={"token_style": "weird", "x": 1}, timeout=5
    )

    assert bad_fault.status_code == 400
    assert bad_config.status_code == 400
    assert sorted(fields_of(bad_config)) == ["token_style", "x"]
    assert sandbox.config["token_style"] == "standard"


# ---------------------------------------------------------------------------------------------------------
# Stats and admin endpoints
# ---------------------------------------------------------------------------------------------------------


def test_stats_count_every_call_by_template(sandbox, api):
    asset = some(sandbox, "assets")
    get_token(sandbox)
    get_token(sandbox, password="bad")
    api.get(sandbox.base_url + "/assets")
    api.get(sandbox.base_url + f"/assets/{asset['id']}")
    api.get(sandbox.base_url + "/assets/other-id")
    requests.get(sandbox.base_url + "/workers", timeout=5)

    stats = requests.get(sandbox.url + "/_sandbox/stats", timeout=5).json()

    assert stats == {
        "token_requests": 1,
        "token_failures": 1,
        "calls": {"GET /assets": 1, "GET /assets/{id}": 2, "GET /workers": 1},
        "total_calls": 4,
        "rejected_429": 0,
    }
    assert sandbox.stats() == stats

    reset = requests.post(sandbox.url + "/_sandbox/stats/reset", timeout=5)
    assert reset.status_code == 200
    assert sandbox.stats() == {
        "token_requests": 0,
        "token_failures": 0,
        "calls": {},
        "total_calls": 0,
        "rejected_429": 0,
    }


def test_call_log_has_time_path_and_status_of_every_api_call(sandbox, api):
    sandbox.set_config(rate_limit=2)
    asset = some(sandbox, "assets")
    get_token(sandbox)
    before = time.monotonic()

    api.get(sandbox.base_url + f"/assets/{asset['id']}")
    api.get(sandbox.base_url + "/assets/no such id")
    api.get(sandbox.base_url + "/workers")
    requests.get(sandbox.url + "/_sandbox/stats", timeout=5)
    log = sandbox.call_log()

    assert [(call["method"], call["path"], call["template"], call["status"]) for call in log] == [
        ("GET", f"/assets/{asset['id']}", "/assets/{id}", 200),
        ("GET", "/assets/no such id", "/assets/{id}", 404),
        ("GET", "/workers", "/workers", 429),
    ]
    times = [call["at"] for call in log]
    assert before <= times[0] <= times[1] <= times[2] <= time.monotonic()
    assert len(log) == sandbox.stats()["total_calls"]

    sandbox.reset_stats()
    assert sandbox.call_log() == []


def test_admin_tenant_reset_and_config(sandbox, api):
    api.post(sandbox.base_url + "/workers", json={"firstName": "Temp", "lastName": "Worker"})
    before = requests.get(sandbox.url + "/_sandbox/tenant", timeout=5).json()

    reset = requests.post(sandbox.url + "/_sandbox/reset", timeout=5)
    config = requests.post(sandbox.url + "/_sandbox/config", json={"rate_limit": 50}, timeout=5).json()

    assert before == {"workers": 26, "locations": 12, "assets": 1500}
    assert reset.json() == {"workers": 25, "locations": 12, "assets": 1500}
    assert config["rate_limit"] == 50
    assert requests.get(sandbox.url + "/_sandbox/config", timeout=5).json() == config
    assert requests.get(sandbox.url + "/_sandbox/nothing", timeout=5).status_code == 404


# ---------------------------------------------------------------------------------------------------------
# Determinism, scale, command line
# ---------------------------------------------------------------------------------------------------------


def dump(sb: OnTrackSandbox) -> bytes:
    headers = {"Authorization": f"Bearer {sb.grant_token()}"}
    chunks = []
    for resource in ("workers", "locations", "assets"):
        for page in (1, 2, 3):
            response = requests.get(
                sb.base_url + f"/{resource}",
                params={"page": page, "pageSize": 500},
                headers=headers,
                timeout=10,
            )
            chunks.append(response.content)
    return b"\n".join(chunks)


def test_same_seed_and_now_give_identical_listings(sandbox):
    with OnTrackSandbox(seed=7, now=NOW) as twin, OnTrackSandbox(seed=8, now=NOW) as other:
        mine, theirs, different = dump(sandbox), dump(twin), dump(other)

    assert mine == theirs
    assert mine != different
    assert json.loads(different.split(b"\n")[0])["totalRecords"] == 25


def test_counts_can_be_chosen_and_big_tenants_page_fast():
    tenant = Tenant(seed=3, now=NOW, worker_count=40, location_count=20, asset_count=20_000)
    start = datetime(2026, 4, 1, tzinfo=timezone.utc)

    started = time.monotonic()
    seen = 0
    for page in range(1, 41):
        records, total = tenant.list_page("assets", page, 500, start=start)
        seen += len(records)
    elapsed = time.monotonic() - started

    assert tenant.counts() == {"workers": 40, "locations": 20, "assets": 20_000}
    assert seen == total
    assert elapsed < 2.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize(("stop_signal", "verbose"), [(signal.SIGTERM, False), (signal.SIGINT, True)])
def test_cli_serves_and_stops_cleanly(stop_signal, verbose):
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    command = [sys.executable, "-m", "airflow_provider_ontrack.sandbox", "--port", str(port), "--now", NOW]
    if verbose:
        command.append("--verbose")
    process = subprocess.Popen(
        command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        line = process.stdout.readline()
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 15
        while True:
            try:
                counts = requests.get(base + "/_sandbox/tenant", timeout=1).json()
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline, "sandbox CLI did not come up"
                time.sleep(0.1)

        token = requests.post(
            base + "/hc/token", auth=(SANDBOX_CLIENT_ID, SANDBOX_CLIENT_SECRET), data=FORM, timeout=5
        ).json()["access_token"]
        workers = requests.get(
            base + "/ts/ontrack/unite/v1/workers?page=1",
            headers={"Authorization": f"Bearer {token}"},
            timeout=5,
        )
    finally:
        process.send_signal(stop_signal)
        try:
            code = process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
        stderr = process.stderr.read()
        process.stdout.close()
        process.stderr.close()

    assert f"{base}/ts/ontrack/unite/v1" in line
    assert f"{base}/hc/token" in line
    assert SANDBOX_CLIENT_ID in line and SANDBOX_USERNAME in line
    assert counts == {"workers": 25, "locations": 12, "assets": 1500}
    assert workers.json()["totalRecords"] == 25
    assert code == 0
    assert token not in stderr
    assert SANDBOX_PASSWORD not in stderr
    assert SANDBOX_CLIENT_SECRET not in stderr
    if verbose:
        assert "POST /hc/token 200" in stderr
        assert "GET /ts/ontrack/unite/v1/workers 200" in stderr
        assert "page=1" not in stderr
    else:
        assert stderr == ""

"""The file sink over real HTTP against the sandbox: JSON Lines, CSV, atomic replacement, incremental runs."""

from __future__ import annotations

import csv
import datetime as dt
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pendulum
import pytest
from airflow.sdk import ObjectStoragePath

from airflow_provider_ontrack.client import OnTrackApiError, OnTrackConfigError
from airflow_provider_ontrack.hooks.ontrack import OnTrackHook
from airflow_provider_ontrack.operators.files import OnTrackToFileOperator
from tests.test_imports import HEAVY

RESOURCES = ("workers", "locations", "assets")
TRICKY_TEXT = 'Bohrhammer, "TE 30" 🔨\nzweite Zeile: 東京 渋谷 現場 — 드릴\r\nend'
SUMMARY_KEYS = {"resource", "path", "format", "mode", "rows", "fields", "api_calls", "seconds"}


def _write(
    path: Path | str | ObjectStoragePath,
    resource: str = "assets",
    context: dict[str, Any] | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    if isinstance(path, Path):
        path = str(path)
    operator = OnTrackToFileOperator(task_id=f"write_{resource}", resource=resource, path=path, **kwargs)
    return operator.execute(context or {})


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _csv_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        rows = list(reader)
        return list(reader.fieldnames or []), rows


def _cell(value: Any) -> str:
    """What a CSV cell must hold, worked out independently of the operator."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def _leftovers(folder: Path) -> list[Path]:
    return [path for path in folder.rglob("*") if ".part" in path.name or path.name.startswith(".ontrack-")]


@pytest.fixture
def shared(sandbox, ontrack_connection):
    """The session's sandbox (not written to), with counters zeroed."""
    ontrack_connection(sandbox)
    sandbox.reset_stats()
    return sandbox


@pytest.fixture
def own(fresh_sandbox, ontrack_connection):
    """A sandbox of the test's own, for tests that write records or queue faults."""
    ontrack_connection(fresh_sandbox, max_retries=1)
    return fresh_sandbox


class TestJsonLines:
    def test_every_asset_lands_exactly_as_the_api_sends_it(self, shared, tmp_path):
        target = tmp_path / "not" / "yet" / "there" / "assets.jsonl"

        summary = _write(target)

        lines = target.read_bytes().split(b"\n")
        assert lines[-1] == b"" and len(lines) - 1 == 1500
        written = [json.loads(line) for line in lines[:-1]]
        ids = [record["id"] for record in written]
        assert len(set(ids)) == 1500
        assert set(ids) == {record["id"] for record in shared.tenant.all("assets")}
        assert written == list(OnTrackHook().iter_assets())
        assert b"\\u" not in target.read_bytes()  # non-ASCII text as UTF-8, not as escapes

        assert set(summary) == SUMMARY_KEYS
        assert summary["resource"] == "assets"
        assert summary["path"] == str(target)
        assert summary["format"] == "jsonl"
        assert summary["mode"] == "full"
        assert summary["rows"] == 1500
        assert summary["fields"] == len(written[0])
        assert summary["api_calls"] == 3
        assert _leftovers(tmp_path) == []

    def test_nested_values_and_awkward_text_survive(self, own, tmp_path):
        location = own.tenant.all("locations")[0]["id"]
        created = own.tenant.create(
            "assets",
            {
                "name": TRICKY_TEXT,
                "currentLocationId": location,
                "labels": ["rot", "紅", "🔴"],
                "specs": {"torque": [1.5, {"unit": "Nm", "max": None}], "cordless": True},
                "note": "line\u2028separator and paragraph\u2029separator",
            },
        )
        target = tmp_path / "assets.ndjson"

        _write(target, page_size=500)

        by_id = {record["id"]: record for record in _jsonl(target)}
        assert by_id[created["id"]] == created
        assert list(by_id[created["id"]]) == list(created)  # field order kept too
        assert len(by_id) == 1501

    @pytest.mark.parametrize("resource", ["workers", "locations"])
    def test_other_resources(self, shared, tmp_path, resource):
        target = tmp_path / f"{resource}.json"

        summary = _write(target, resource=resource)

        assert _jsonl(target) == list(OnTrackHook().iter_records(resource))
        assert summary["rows"] == shared.tenant.count(resource)
        assert b"\\u" not in target.read_bytes()
        if resource == "locations":
            assert "東京 渋谷 現場".encode() in target.read_bytes()


class TestCsv:
    def test_every_resource_round_trips_through_the_csv_reader(self, own, tmp_path):
        location = own.tenant.all("locations")[0]["id"]
        created = own.tenant.create(
            "assets",
            {
                "name": "Kernbohrgerät DD 150-U",
                "description": TRICKY_TEXT,
                "currentLocationId": location,
                "labels": ["Zürich", 'with "quotes", and commas'],
                "purchasePrice": 4899.5,
                "warrantyEnds": "2027-01-01",
            },
        )

        for resource in RESOURCES:
            target = tmp_path / "csv" / f"{resource}.csv"
            summary = _write(target, resource=resource)

            api_records = list(OnTrackHook().iter_records(resource))
            fields = list(dict.fromkeys(field for record in api_records for field in record))
            header, rows = _csv_rows(target)
            assert header == fields, resource
            assert len(rows) == summary["rows"] == own.tenant.count(resource)
            assert summary["fields"] == len(fields)
            assert summary["format"] == "csv"
            for record, row in zip(api_records, rows, strict=True):
                assert row == {field: _cell(record.get(field)) for field in fields}, resource

        header, rows = _csv_rows(tmp_path / "csv" / "assets.csv")
        assert header[-1] == "warrantyEnds"
        row = next(row for row in rows if row["id"] == created["id"])
        assert row["description"] == TRICKY_TEXT
        assert row["warrantyEnds"] == "2027-01-01"
        assert json.loads(row["labels"]) == ["Zürich", 'with "quotes", and commas']
        assert row["purchasePrice"] == "4899.5"
        assert row["parentAssetId"] == ""
        assert sum(1 for row in rows if row["warrantyEnds"]) == 1

        _, workers = _csv_rows(tmp_path / "csv" / "workers.csv")
        assert {row["isUser"] for row in workers} == {"true", "false"}
        assert _leftovers(tmp_path) == []

    def test_a_field_first_seen_in_the_last_record_gets_a_column(self, own, tmp_path):
        # Worker ids are random; make the new field show up on whichever worker the API lists last.
        last = list(OnTrackHook().iter_workers())[-1]
        own.tenant.update("workers", last["id"], {"badge": {"nfc": "04:A2:19", "issued": "2026-01-01"}})
        target = tmp_path / "workers.csv"

        _write(target, resource="workers")

        header, rows = _csv_rows(target)
        assert header[-1] == "badge"
        assert json.loads(rows[-1]["badge"]) == {"nfc": "04:A2:19", "issued": "2026-01-01"}
        assert all(row["badge"] == "" for row in rows[:-1])

    def test_file_format_wins_over_the_suffix(self, shared, tmp_path):
        target = tmp_path / "workers.txt"

        summary = _write(target, resource="workers", file_format="CSV")

        assert summary["format"] == "csv"
        assert len(_csv_rows(target)[1]) == 25


class TestNothingToWrite:
    @pytest.mark.parametrize("name", ["assets.jsonl", "assets.csv"])
    def test_a_read_without_records_writes_an_empty_file(self, shared, tmp_path, name):
        target = tmp_path / name
        target.write_text("yesterday's export\n", encoding="utf-8")

        summary = _write(target, filters={"startDate": "2020-01-01", "endDate": "2020-01-02"})

        assert target.read_bytes() == b""
        assert (summary["rows"], summary["fields"], summary["api_calls"]) == (0, 0, 1)
        assert _leftovers(tmp_path) == []


def _failing_after_first_page(server, **kwargs: Any) -> OnTrackToFileOperator:
    """An operator whose read fails on page 2: the fault is queued once page 1 has been handed out."""

    class FailingMidway(OnTrackToFileOperator):
        def read_records(self, context):
            records, read = super().read_records(context)

            def then_fail() -> Iterator[dict[str, Any]]:
                for number, record in enumerate(records):
                    if number == 0:
                        server.add_fault(method="GET", path="/assets", status=500, count=20)
                    yield record

            return then_fail(), read

    return FailingMidway(task_id="write_assets", resource="assets", page_size=100, **kwargs)


class TestAtomicReplacement:
    @pytest.mark.parametrize("name", ["assets.jsonl", "assets.csv"])
    def test_a_failed_first_run_leaves_no_file(self, own, tmp_path, name):
        target = tmp_path / "out" / name

        with pytest.raises(OnTrackApiError, match="500"):
            _failing_after_first_page(own, path=str(target)).execute({})

        # Page 1 was read and written, then page 2 failed (a 500 is not retried).
        assert own.faults()[0]["count"] == 19
        assert not target.exists()
        assert _leftovers(tmp_path) == []

    @pytest.mark.parametrize("name", ["assets.jsonl", "assets.csv"])
    def test_a_failed_rerun_keeps_the_previous_file_and_a_good_one_replaces_it(self, own, tmp_path, name):
        target = tmp_path / name
        _write(target)
        before = target.read_bytes()

        with pytest.raises(OnTrackApiError):
            _failing_after_first_page(own, path=str(target)).execute({})

        assert target.read_bytes() == before
        assert _leftovers(tmp_path) == []

        own.clear_faults()
        first = own.tenant.all("assets")[0]
        own.tenant.update("assets", first["id"], {"status": "IN_REPAIR"})
        summary = _write(target)

        assert summary["rows"] == 1500
        assert target.read_bytes() != before
        assert _leftovers(tmp_path) == []

    def test_a_remote_store_gets_the_same_promise(self, own):
        from airflow.sdk.io import attach
        from airflow.sdk.io.store import _STORE_CACHE
        from fsspec.implementations.memory import MemoryFileSystem

        # fsspec's in-memory file system stands in for an object store: no rename, only copy and delete.
        memory = MemoryFileSystem()
        attach("memory", fs=memory)
        url = "memory://ontrack-file-sink-test/assets.jsonl"
        try:
            with pytest.raises(OnTrackApiError):
                _failing_after_first_page(own, path=url).execute({})
            assert memory.find("/ontrack-file-sink-test") == []

            own.clear_faults()
            summary = _write(url)
            first = memory.cat_file("/ontrack-file-sink-test/assets.jsonl")

            assert summary["path"] == url
            assert first.count(b"\n") == summary["rows"] == 1500
            assert [json.loads(line) for line in first.splitlines()] == list(OnTrackHook().iter_assets())

            with pytest.raises(OnTrackApiError):
                _failing_after_first_page(own, path=url).execute({})
            assert memory.find("/ontrack-file-sink-test") == ["/ontrack-file-sink-test/assets.jsonl"]
            assert memory.cat_file("/ontrack-file-sink-test/assets.jsonl") == first
        finally:
            _STORE_CACHE.pop("memory", None)
            if memory.exists("/ontrack-file-sink-test"):
                memory.rm("/ontrack-file-sink-test", recursive=True)


class TestIncremental:
    @staticmethod
    def _context(previous_success: dt.datetime | None) -> dict[str, Any]:
        now = pendulum.now("UTC")
        return {
            "data_interval_start": now - dt.timedelta(hours=1),
            "data_interval_end": now + dt.timedelta(minutes=5),
            "prev_data_interval_end_success": previous_success,
        }

    def test_reads_only_what_changed_unless_told_or_first(self, own, tmp_path):
        changed = [asset["id"] for asset in own.tenant.all("assets")[100:103]]
        for asset_id in changed:
            own.tenant.update("assets", asset_id, {"status": "LOST"})
        previous = pendulum.now("UTC") - dt.timedelta(hours=1)
        target = tmp_path / "changes.jsonl"

        summary = _write(target, incremental=True, context=self._context(previous))

        ids = [record["id"] for record in _jsonl(target)]
        assert set(changed) <= set(ids)
        assert len(ids) < 100
        assert summary["mode"] == "incremental" and summary["rows"] == len(ids)
        assert {"since", "until"} <= set(summary)

        summary = _write(target, incremental=True, full_read="True", context=self._context(previous))
        assert summary["mode"] == "full"
        assert len(_jsonl(target)) == 1500

        summary = _write(target, incremental=True, context=self._context(None))
        assert summary["mode"] == "full"
        assert len(_jsonl(target)) == 1500


class TestArguments:
    def test_the_path_is_templated(self, shared, tmp_path):
        operator = OnTrackToFileOperator(
            task_id="write_workers", resource="workers", path=str(tmp_path / "{{ ds }}" / "workers.jsonl")
        )
        assert "path" in operator.template_fields

        operator.render_template_fields({"ds": "2026-11-30"})
        summary = operator.execute({})

        assert summary["path"] == str(tmp_path / "2026-11-30" / "workers.jsonl")
        assert len(_jsonl(tmp_path / "2026-11-30" / "workers.jsonl")) == 25

    def test_an_object_storage_path_is_accepted(self, shared, tmp_path):
        target = tmp_path / "workers.jsonl"

        summary = _write(ObjectStoragePath(f"file://{target}"), resource="workers")

        assert summary["path"] == f"file://{target}"
        assert len(_jsonl(target)) == 25

    @pytest.mark.parametrize(
        ("path", "file_format"),
        [("workers.jsonl", "parquet"), ("workers.txt", None), ("workers", None), ("workers.csv", "")],
    )
    def test_a_bad_format_is_refused_when_the_dag_is_parsed(self, tmp_path, path, file_format):
        with pytest.raises(OnTrackConfigError, match="file_format") as raised:
            OnTrackToFileOperator(
                task_id="write", resource="workers", path=str(tmp_path / path), file_format=file_format
            )
        assert raised.value.field == "file_format"

    def test_a_templated_unknown_suffix_is_refused_before_any_call(self, shared, tmp_path):
        operator = OnTrackToFileOperator(
            task_id="write", resource="workers", path=str(tmp_path / "workers.{{ params.ext }}")
        )
        operator.render_template_fields({"params": {"ext": "xlsx"}})

        with pytest.raises(OnTrackConfigError, match="file_format"):
            operator.execute({})

        assert shared.stats()["total_calls"] == 0
        assert shared.stats()["token_requests"] == 0
        assert list(tmp_path.iterdir()) == []

    @pytest.mark.parametrize("path", ["", str(Path("/tmp") / "folder") + "/"])
    def test_a_path_that_names_no_file_is_refused(self, shared, path):
        operator = OnTrackToFileOperator(task_id="write", resource="workers", path=path, file_format="csv")

        with pytest.raises(OnTrackConfigError, match="path"):
            operator.execute({})
        assert shared.stats()["total_calls"] == 0


def test_importing_the_module_leaves_the_http_stack_unloaded():
    code = (
        "import sys, airflow.sdk\n"
        "before = set(sys.modules)\n"
        "import airflow_provider_ontrack.operators.files\n"
        "print(' '.join(sorted(set(sys.modules) - before)))\n"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    new_modules = loaded.stdout.split()

    assert "airflow_provider_ontrack.operators.files" in new_modules
    assert not [name for name in new_modules if name.startswith(HEAVY)], new_modules

"""Write records from an ERP export into ON!Track without duplicates, however often the task runs."""

from __future__ import annotations

import csv
import io
import json
import math
import time
from collections.abc import Iterator, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from airflow_provider_ontrack.client.errors import OnTrackConfigError, OnTrackError
from airflow_provider_ontrack.client.records import (
    BOOLEAN_FIELDS,
    LIST_FIELDS,
    NUMBER_FIELDS,
    REFERENCES,
    SERVER_FIELDS,
    problems,
)
from airflow_provider_ontrack.client.settings import DEFAULT_CONN_ID

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_ontrack.hooks.ontrack import OnTrackHook

WRITABLE_RESOURCES = ("workers", "locations", "assets")
# Marks a key that more than one ON!Track record carries: a reference to it names nothing for sure.
AMBIGUOUS = "<ambiguous>"


class OnTrackUpsertOperator(BaseOperator):
    """Create the records ON!Track lacks and update the ones that changed, matched by ``externalId``.

    Records come from a JSON Lines or CSV file (any Airflow object storage path, local by default)
    or from an upstream task. Each is checked first; a record that cannot be written (a required
    field missing, a malformed CSV row, a key given twice, a reference that names nothing, a
    record the server refuses) goes to the reject file with the reason, and the others are
    written. Nothing is dropped silently.

    The task is safe to run again and to retry after a crash: it reads what ON!Track holds first,
    so a record created by an earlier try is found by its key and not created twice. An ERP export
    may name related records by their own keys (``managerExternalId`` of a location,
    ``currentLocationExternalId``, ``responsibleWorkerExternalId`` and ``parentAssetExternalId`` of
    an asset); they are turned into ON!Track ids. Write workers first, then locations, then assets,
    since each refers to the ones before.

    An update sends the whole stored record with the changed fields replaced, so it is right
    whether the API replaces records or merges fields.

    :param resource: ``workers``, ``locations`` or ``assets``. (templated)
    :param source: the path of a JSON Lines (``.jsonl``) or CSV (``.csv``) file. (templated)
    :param records: records from an upstream task, instead of ``source``. (templated)
    :param match_on: the field that identifies a record in both systems. (templated)
    :param reject_path: where rejected records go, as JSON Lines; ``<source>.rejected.jsonl`` by
        default. Written on every run, so an old reject file never outlives its cause. (templated)
    :param dry_run: only report what would change. (templated)
    :param max_rejected: fail the task, after writing what it could and the reject file, when more
        records than this were rejected; by default rejects never fail the task.
    :param source_conn_id: the object storage connection of ``source`` and ``reject_path``, if any.
    :param ontrack_conn_id: the ON!Track connection. (templated)
    """

    template_fields: Sequence[str] = (
        "resource",
        "source",
        "records",
        "match_on",
        "reject_path",
        "dry_run",
        "ontrack_conn_id",
    )
    ui_color = "#d2051e"
    ui_fgcolor = "#ffffff"

    def __init__(
        self,
        *,
        resource: str,
        source: str | None = None,
        records: list[dict[str, Any]] | None = None,
        match_on: str = "externalId",
        reject_path: str | None = None,
        dry_run: bool | str = False,
        max_rejected: int | None = None,
        source_conn_id: str | None = None,
        ontrack_conn_id: str = DEFAULT_CONN_ID,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if (source is None) == (records is None):
            raise OnTrackConfigError(
                "source", "give either source (a file) or records (from a task), not both"
            )
        if source is None and reject_path is None:
            raise OnTrackConfigError("reject_path", "is needed when records come from a task")
        if reject_path is not None and source is not None and str(reject_path) == str(source):
            raise OnTrackConfigError("reject_path", "must not be the source file, which it would overwrite")
        if match_on in SERVER_FIELDS:
            raise OnTrackConfigError(
                "match_on", f"{match_on!r} is set by ON!Track; match on a key of your own"
            )
        self.resource = resource
        self.source = source
        self.records = records
        self.match_on = match_on
        self.reject_path = reject_path
        self.dry_run = dry_run
        self.max_rejected = max_rejected
        self.source_conn_id = source_conn_id
        self.ontrack_conn_id = ontrack_conn_id
        self._ids: dict[str, dict[str, str]] = {}

    @cached_property
    def hook(self) -> OnTrackHook:
        """The hook of the task's ON!Track connection."""
        from airflow_provider_ontrack.hooks.ontrack import OnTrackHook

        return OnTrackHook(ontrack_conn_id=self.ontrack_conn_id)

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_provider_ontrack.operators._sync import _as_bool

        if self.resource not in WRITABLE_RESOURCES:
            raise OnTrackConfigError(
                "resource", f"must be one of {', '.join(WRITABLE_RESOURCES)}, got {self.resource!r}"
            )
        # A template that renders nothing ("None") must not quietly turn a dry run into a real one.
        dry_run = _as_bool("dry_run", self.dry_run, allow_empty=False)
        self._ids = {}
        started = time.monotonic()
        calls_before = self.hook.client.calls_made
        rejects = Rejects()

        reject_target = self._reject_target(dry_run)
        counts = {"created": 0, "updated": 0, "unchanged": 0}
        try:
            wanted = self._load(rejects)
            existing = self._existing(wanted, rejects)
            self._resolve_references(wanted, rejects)
            plan = self._plan(wanted, existing, rejects)
            counts["unchanged"] = len(plan.unchanged)
            self._carry_out(plan, counts, rejects, dry_run)
        finally:
            # Also when the run fails: what was rejected so far is known and must not be lost.
            reject_path = self._write_rejects(rejects, reject_target)

        summary = {
            "resource": self.resource,
            **counts,
            "rejected": len(rejects),
            "dry_run": dry_run,
            "reject_path": reject_path,
            "api_calls": self.hook.client.calls_made - calls_before,
            "seconds": round(time.monotonic() - started, 1),
        }
        self.log.info(
            "%s %s: %d created, %d updated, %d unchanged, %d rejected%s",
            "Planned" if dry_run else "Wrote",
            self.resource,
            counts["created"],
            counts["updated"],
            counts["unchanged"],
            len(rejects),
            f"; rejects in {reject_path}" if rejects else "",
        )
        if self.max_rejected is not None and len(rejects) > self.max_rejected:
            raise OnTrackError(
                f"{len(rejects)} {self.resource} were rejected, more than max_rejected={self.max_rejected}; "
                f"the reasons are in {reject_path}"
            )
        return summary

    def _carry_out(self, plan: Plan, counts: dict[str, int], rejects: Rejects, dry_run: bool) -> None:
        if not dry_run:
            self._write(plan, counts, rejects)
            return

        counts["created"], counts["updated"] = len(plan.creates), len(plan.updates)
        for line, record in plan.creates[:20]:
            self.log.info("Would create line %d: %s %s", line, self.match_on, record.get(self.match_on))
        for line, record_id, changed in plan.updates[:20]:
            self.log.info("Would update line %d: %s, fields %s", line, record_id, ", ".join(sorted(changed)))

    def _load(self, rejects: Rejects) -> list[tuple[int, dict[str, Any]]]:
        """Read, parse and check the input; return ``(line, record)`` pairs worth matching."""
        seen_keys: dict[str, int] = {}
        loaded = []
        ignored: set[str] = set()
        for line, record, error in self._input():
            if error:
                rejects.add(line, error, record)
                continue
            # Fields ON!Track sets itself can never match what it stores; sending them would make
            # every run see a change.
            ignored.update(SERVER_FIELDS & record.keys())
            for field in SERVER_FIELDS:
                record.pop(field, None)
            key = record.get(self.match_on)
            if not isinstance(key, str) or not key.strip():
                rejects.add(line, f"{self.match_on}: required to match the record, got {key!r}", record)
                continue
            key = record[self.match_on] = key.strip()
            if key in seen_keys:
                rejects.add(
                    line, f"{self.match_on}: {key!r} was given before, on line {seen_keys[key]}", record
                )
                continue
            seen_keys[key] = line
            loaded.append((line, record))

        if ignored:
            self.log.warning("Ignored fields that ON!Track sets itself: %s", ", ".join(sorted(ignored)))
        return loaded

    def _input(self) -> Iterator[tuple[int, dict[str, Any] | Any, str | None]]:
        if self.records is not None:
            if not isinstance(self.records, list):
                raise OnTrackConfigError(
                    "records", f"must be a list of records, got {type(self.records).__name__}"
                )
            for line, record in enumerate(self.records, 1):
                if isinstance(record, dict):
                    yield line, dict(record), None
                else:
                    yield line, record, f"record: must be an object, got {type(record).__name__}"
            return

        path = self._path(self.source)
        suffix = path.suffix.lower()
        if suffix in (".jsonl", ".ndjson"):
            read = _read_json_lines
        elif suffix == ".csv":
            read = _read_csv
        else:
            raise OnTrackConfigError("source", f"must end in .jsonl, .ndjson or .csv, got {self.source!r}")
        try:
            yield from read(path)
        except UnicodeDecodeError as exc:
            raise OnTrackConfigError(
                "source", f"must be UTF-8 text; byte {exc.start} of {self.source!r} is not (save it as UTF-8)"
            ) from None

    def _existing(
        self, wanted: list[tuple[int, dict[str, Any]]], rejects: Rejects
    ) -> dict[str, dict[str, Any]]:
        """Read every record of the resource once and keep those the input names, by key."""
        keys = {record[self.match_on] for _, record in wanted}
        found: dict[str, dict[str, Any]] = {}
        twice: set[str] = set()
        # An asset may name its storage asset by key: keep every key's id from this same read
        # rather than reading the resource a second time.
        refers_to_itself = any(
            target == self.resource and field in record
            for _, record in wanted
            for field, (_, target) in REFERENCES[self.resource].items()
        )
        page_size = self.hook.settings.max_page_size
        for record in self.hook.iter_records(self.resource, page_size=page_size):
            key = record.get(self.match_on)
            if refers_to_itself:
                self._remember(self.resource, record)
            if key in keys:
                if key in found:
                    twice.add(key)
                found[key] = record

        if twice:
            # Which of two ON!Track records to update is not for this task to guess.
            kept = []
            for line, record in wanted:
                if record[self.match_on] in twice:
                    reason = f"{self.match_on}: {record[self.match_on]!r} matches several ON!Track records"
                    rejects.add(line, reason, record)
                else:
                    kept.append((line, record))
            wanted[:] = kept
        return found

    def _resolve_references(self, wanted: list[tuple[int, dict[str, Any]]], rejects: Rejects) -> None:
        references = REFERENCES[self.resource]
        used = {field for _, record in wanted for field in record if field in references}
        if not used:
            return

        ids = self._ids
        for field in used:
            target = references[field][1]
            if target not in ids:
                ids[target] = {}
                for record in self.hook.iter_records(target, page_size=self.hook.settings.max_page_size):
                    self._remember(target, record)

        created_here = {record[self.match_on] for _, record in wanted}
        kept = []
        for line, record in wanted:
            for field in used & record.keys():
                key = record[field]
                id_field, target = references[field]
                if isinstance(key, str):
                    key = record[field] = key.strip()
                if key in (None, ""):
                    del record[field]
                elif not isinstance(key, str):
                    rejects.add(line, f"{field}: must be an externalId, got {key!r}", record)
                    break
                elif ids[target].get(key) is AMBIGUOUS:
                    rejects.add(line, f"{field}: {key!r} matches several ON!Track {target}", record)
                    break
                elif key in ids[target]:
                    del record[field]
                    record[id_field] = ids[target][key]
                elif target == self.resource and key in created_here:
                    # A storage asset created by this same run: its id is known once it exists, so
                    # the reference stays until then (see _pending_references).
                    continue
                else:
                    rejects.add(line, f"{field}: no ON!Track {target[:-1]} has externalId {key!r}", record)
                    break
            else:
                kept.append((line, record))
        wanted[:] = kept

    def _in_creation_order(
        self, creates: list[tuple[int, dict[str, Any]]], rejects: Rejects
    ) -> Iterator[tuple[int, dict[str, Any]]]:
        """Yield creates so that a record comes after the record of this run it refers to.

        A drill in a gang box in a van, all new, is created van first. Records whose reference can
        never be met (a cycle, or a parent that was rejected) are rejected once nothing else moves.
        """
        waiting = list(creates)
        while waiting:
            ready, later = [], []
            for line, record in waiting:
                pending = self._pending_keys(record)
                (later if pending else ready).append((line, record))
            if not ready:
                for line, record in later:
                    rejects.add(line, "the record it refers to was not created in this run", record)
                return
            yield from ready
            waiting = later

    def _pending_keys(self, record: dict[str, Any]) -> list[str]:
        known = self._ids.get(self.resource, {})
        return [
            record[field]
            for field, (_, target) in REFERENCES[self.resource].items()
            if target == self.resource and field in record and record[field] not in known
        ]

    def _remember(self, resource: str, record: dict[str, Any]) -> None:
        """Note the ON!Track id of a record under its ``externalId``, the key references use."""
        key = record.get("externalId")
        if isinstance(key, str) and key.strip():
            known = self._ids.setdefault(resource, {})
            known[key.strip()] = AMBIGUOUS if key.strip() in known else record["id"]

    def _pending_references(self, record: dict[str, Any]) -> dict[str, Any]:
        """Resolve what refers to a record created earlier in this run; raise ``KeyError`` if it was not."""
        for field, (id_field, target) in REFERENCES[self.resource].items():
            if target == self.resource and field in record:
                key = record.pop(field)
                record[id_field] = self._ids[self.resource][key]
        return record

    def _plan(
        self, wanted: list[tuple[int, dict[str, Any]]], existing: dict[str, dict[str, Any]], rejects: Rejects
    ) -> Plan:
        plan = Plan()
        for line, record in wanted:
            stored = existing.get(record[self.match_on])
            # An update is judged as the record it will be: a field stored before need not be given again.
            found = problems(
                self.resource, record if stored is None else {**stored, **record}, creating=stored is None
            )
            if found:
                rejects.add(line, "; ".join(found), record)
            elif stored is None:
                plan.creates.append((line, record))
            else:
                changed = {field for field, value in record.items() if not _same(value, stored.get(field))}
                if changed:
                    body = {key: value for key, value in stored.items() if key not in SERVER_FIELDS}
                    body.update(record)
                    plan.updates.append((line, stored["id"], changed))
                    plan.bodies[stored["id"]] = body
                    plan.inputs[stored["id"]] = record
                else:
                    plan.unchanged.append(line)
        return plan

    def _write(self, plan: Plan, counts: dict[str, int], rejects: Rejects) -> None:
        from airflow_provider_ontrack.client.errors import OnTrackApiError, OnTrackTransportError

        for line, record in self._in_creation_order(plan.creates, rejects):
            try:
                created = self.hook.create_record(self.resource, self._pending_references(dict(record)))
            except OnTrackTransportError:
                raise
            except OnTrackConfigError as exc:
                rejects.add(line, str(exc), record)
                continue
            except OnTrackApiError as exc:
                if exc.status != 400:
                    raise
                rejects.add(line, f"refused by ON!Track: {_refusal(exc)}", record)
                continue
            counts["created"] += 1
            self._remember(self.resource, created)

        for line, record_id, changed in plan.updates:
            try:
                body = self._pending_references(plan.bodies[record_id])
            except KeyError:
                rejects.add(line, "the record it refers to could not be created", plan.inputs[record_id])
                continue
            try:
                self.hook.update_record(self.resource, record_id, body)
            except OnTrackTransportError:
                raise
            except OnTrackConfigError as exc:
                rejects.add(line, str(exc), plan.inputs[record_id])
                continue
            except OnTrackApiError as exc:
                if exc.status != 400:
                    raise
                rejects.add(line, f"refused by ON!Track: {_refusal(exc)}", plan.inputs[record_id])
                continue
            self.log.debug("Updated %s (%s)", record_id, ", ".join(sorted(changed)))
            counts["updated"] += 1

    def _reject_target(self, dry_run: bool) -> Any:
        """Where this run's rejects go; checked before anything is written."""
        target = str(self.reject_path or f"{self.source}.rejected.jsonl")
        if dry_run:
            # A dry run must not overwrite the reject file of the real runs.
            target = target[: -len(".jsonl")] if target.endswith(".jsonl") else target
            target += ".dry-run.jsonl"
        path = self._path(target)
        if path.exists() and path.is_dir():
            raise OnTrackConfigError("reject_path", f"{target!r} is a folder; name a file")
        return path

    def _write_rejects(self, rejects: Rejects, path: Any) -> str:
        if path.protocol in ("file", "local"):
            path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", encoding="utf-8") as out:
            for entry in sorted(rejects.entries, key=lambda entry: entry["line"]):
                out.write(json.dumps(entry, ensure_ascii=False, default=str) + "\n")
        return str(path)

    def _path(self, value: Any):
        from airflow.sdk import ObjectStoragePath

        text = str(value)
        if "://" not in text:
            text = "file://" + text
        return ObjectStoragePath(text, conn_id=self.source_conn_id)


class Plan:
    """What a write-back run is about to do."""

    def __init__(self) -> None:
        self.creates: list[tuple[int, dict[str, Any]]] = []
        self.updates: list[tuple[int, str, set[str]]] = []
        self.bodies: dict[str, dict[str, Any]] = {}
        self.inputs: dict[str, dict[str, Any]] = {}
        self.unchanged: list[int] = []


class Rejects:
    """Records that were not written, each with its line and the reason."""

    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = []

    def __len__(self) -> int:
        return len(self.entries)

    def add(self, line: int, reason: str, record: Any) -> None:
        self.entries.append({"line": line, "reason": reason, "record": record})


def _read_json_lines(path: Any) -> Iterator[tuple[int, Any, str | None]]:
    with path.open("r", encoding="utf-8-sig") as lines:
        for line, text in enumerate(lines, 1):
            if not text.strip():
                continue
            try:
                record = json.loads(text, parse_constant=_refuse_constant)
            except ValueError as exc:
                yield line, text.rstrip("\n"), f"not valid JSON: {exc}"
                continue
            if not isinstance(record, dict):
                yield line, record, f"record: must be an object, got {type(record).__name__}"
                continue
            yield line, record, None


def _read_csv(path: Any) -> Iterator[tuple[int, Any, str | None]]:
    with path.open("r", encoding="utf-8-sig", newline="") as text:
        reader = csv.reader(text)
        header: list[str] = []
        for row in reader:
            # Blank lines before the header are skipped, not taken for an empty header.
            if any(cell.strip() for cell in row):
                header = [name.strip() for name in row]
                break
        if not header:
            return
        blank = [str(number) for number, name in enumerate(header, 1) if not name]
        repeated = sorted({name for name in header if name and header.count(name) > 1})
        if blank or repeated:
            # Which of two columns holds the value is a guess; no row of such a file can be trusted.
            raise OnTrackConfigError(
                "source",
                f"the CSV header has {'blank column ' + ', '.join(blank) if blank else ''}"
                f"{' and ' if blank and repeated else ''}"
                f"{'repeated columns ' + ', '.join(repeated) if repeated else ''}",
            )
        for row in reader:
            line = reader.line_num
            if not any(cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                raw = io.StringIO()
                csv.writer(raw).writerow(row)
                yield (
                    line,
                    raw.getvalue().rstrip("\r\n"),
                    f"row has {len(row)} fields, the header has {len(header)}",
                )
                continue
            record, error = _typed(dict(zip(header, row, strict=True)))
            yield line, record, error


def _typed(row: dict[str, str]) -> tuple[dict[str, Any], str | None]:
    """Turn a CSV row's text into the types the API wants; an empty cell means no value."""
    record: dict[str, Any] = {}
    for field, text in row.items():
        text = text.strip()
        if text == "":
            continue
        if field in BOOLEAN_FIELDS:
            lowered = text.lower()
            if lowered not in ("true", "false", "1", "0", "yes", "no"):
                return row, f"{field}: must be true or false, got {text!r}"
            record[field] = lowered in ("true", "1", "yes")
        elif field in NUMBER_FIELDS:
            try:
                number = float(text)
            except ValueError:
                return row, f"{field}: must be a number, got {text!r}"
            if not math.isfinite(number):
                return row, f"{field}: must be a finite number, got {text!r}"
            record[field] = int(number) if number.is_integer() else number
        elif field in LIST_FIELDS:
            if text.startswith("["):
                try:
                    record[field] = json.loads(text)
                except ValueError:
                    return row, f"{field}: must be a JSON list or texts separated by ';', got {text!r}"
            else:
                record[field] = [item.strip() for item in text.split(";") if item.strip()]
        else:
            record[field] = text
    return record, None


def _refuse_constant(name: str) -> Any:
    # NaN and Infinity are not JSON, and the API could not be sent them.
    raise ValueError(f"{name} is not a JSON number")


def _same(wanted: Any, stored: Any) -> bool:
    """Compare an input value with the stored one as the API means them: 1299 and 1299.0 are equal."""
    if isinstance(wanted, bool) or isinstance(stored, bool):
        return wanted is stored
    if isinstance(wanted, (int, float)) and isinstance(stored, (int, float)):
        return wanted == stored  # Python compares int and float exactly, and 1299 == 1299.0
    return wanted == stored


def _refusal(exc: Any) -> str:
    fields = exc.field_errors
    if fields:
        return "; ".join(f"{field}: {message}" for field, message in fields.items())
    return str(exc.message)

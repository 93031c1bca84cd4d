"""Copy ON!Track records into a JSON Lines or CSV file on a local disk or any Airflow object store."""

from __future__ import annotations

import codecs
import csv
import json
import os
import secrets
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import IO, TYPE_CHECKING, Any

from airflow_provider_ontrack.client.errors import OnTrackApiError, OnTrackConfigError
from airflow_provider_ontrack.operators._sync import BaseOnTrackSyncOperator

if TYPE_CHECKING:
    from airflow.sdk import Context, ObjectStoragePath

FILE_FORMATS = ("jsonl", "csv")
SUFFIX_FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv"}

# Large enough that a local write is a few system calls per page of records, small next to a page.
_WRITE_BUFFER = 1 << 20


class OnTrackToFileOperator(BaseOnTrackSyncOperator):
    """Write ON!Track workers, locations or assets to a JSON Lines or CSV file, replacing it whole.

    The path is an Airflow object storage path: a plain local path (``/data/ontrack/assets.jsonl``),
    ``file:///...``, or any scheme an installed provider serves (``s3://``, ``gs://``, ...), with
    ``conn_id`` naming the store's connection. Records are read page by page and streamed to the
    file, so memory stays flat however large the tenant.

    - JSON Lines: one record per line as the API sent it, every field and nested value kept, UTF-8
      with non-ASCII text unescaped.
    - CSV: UTF-8, a header row of the API's field names, then one row per record. Lists and objects
      are JSON text, booleans ``true``/``false``, a missing or null value an empty cell. The header
      names every field of every record in the order they first appear; to know them before the
      first row, the records are first staged in a temporary local JSON Lines file (next to the
      target for a local path, in the system's temporary folder otherwise).

    The file is written under a temporary sibling name (``<name>.<random>.part``) and moved into
    place only once every record is in it, so a reader never sees half a file and a failed run
    leaves the previous file as it was; a re-run replaces the file. On a local disk the move is an
    atomic rename. Object stores have no rename: there the move is a copy and a delete, atomic only
    as far as the store's copy is (S3 and GCS show an object once it is complete). A process killed
    outright cannot remove its ``.part`` file; readers that list the folder should skip ``*.part``.

    With ``incremental=True`` only the records changed since the last successful run are read; see
    :class:`BaseOnTrackSyncOperator`. A record changed while such a read spans several change
    windows (a gap of more than 90 days since the last success) can appear twice; the later line is
    the newer one.

    :param path: the file to write; its parent folder is created when it is local. (templated)
    :param file_format: ``jsonl`` or ``csv``; by default from the path's suffix: ``.jsonl``,
        ``.ndjson`` and ``.json`` are JSON Lines, ``.csv`` is CSV.
    :param conn_id: the Airflow connection of the object store, if it needs one. (templated)
    :param resource: ``workers``, ``locations`` or ``assets``. (templated)
    """

    template_fields: Sequence[str] = (*BaseOnTrackSyncOperator.template_fields, "path", "conn_id")

    def __init__(
        self,
        *,
        path: str | ObjectStoragePath,
        file_format: str | None = None,
        conn_id: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.path = path
        self.file_format = None if file_format is None else _checked_format(file_format)
        self.conn_id = conn_id
        if self.file_format is None and isinstance(path, str) and not _is_template(path):
            # Say it when the DAG is parsed rather than when the task first runs.
            _format_of(path.rsplit("/", 1)[-1])

    def execute(self, context: Context) -> dict[str, Any]:
        target = self._target()
        file_format = self.file_format or _format_of(target.name)

        started = time.monotonic()
        records, read = self.read_records(context)
        calls_before = self.hook.client.calls_made
        records = _checked_records(records, self.resource)
        self.log.info("Writing ON!Track %s to %s as %s", self.resource, target, file_format)

        with _replacing(target, self.log) as (out, local_folder):
            if file_format == "csv":
                rows, fields = _write_csv(records, out, local_folder, self.log)
            else:
                rows, fields = _write_jsonl(records, out)

        summary = {
            "resource": self.resource,
            "path": str(target),
            "format": file_format,
            **read,
            "rows": rows,
            "fields": len(fields),
            "api_calls": self.hook.client.calls_made - calls_before,
            "seconds": round(time.monotonic() - started, 1),
        }
        self.log.info(
            "Wrote %d %s with %d fields to %s in %.1f s with %d API calls",
            rows,
            self.resource,
            len(fields),
            target,
            summary["seconds"],
            summary["api_calls"],
        )
        return summary

    def _target(self) -> ObjectStoragePath:
        from airflow.sdk import ObjectStoragePath

        path = self.path
        if isinstance(path, ObjectStoragePath):
            target = path if self.conn_id is None else ObjectStoragePath(str(path), conn_id=self.conn_id)
        elif isinstance(path, str) and path.strip():
            target = ObjectStoragePath(path, conn_id=self.conn_id)
        else:
            raise OnTrackConfigError("path", f"must be a file path or URL, got {path!r}")

        if not target.name or str(path).endswith("/"):
            raise OnTrackConfigError("path", f"must name a file, not a folder: {str(path)!r}")
        if _local_path(target) is not None and not os.path.isabs(target.path):
            # A relative path means the worker's current folder; say which one in the summary.
            target = ObjectStoragePath(os.path.abspath(target.path), conn_id=self.conn_id)
        return target


def _checked_format(file_format: Any) -> str:
    text = str(file_format).strip().lower()
    if text not in FILE_FORMATS:
        raise OnTrackConfigError("file_format", f"must be jsonl or csv, got {file_format!r}")
    return text


def _format_of(name: str) -> str:
    suffix = os.path.splitext(name)[1].lower()
    if suffix not in SUFFIX_FORMATS:
        raise OnTrackConfigError(
            "file_format",
            f"cannot be told from the file name {name!r}: give file_format='jsonl' or 'csv', or end the "
            f"path in {', '.join(SUFFIX_FORMATS)}",
        )
    return SUFFIX_FORMATS[suffix]


def _is_template(text: str) -> bool:
    return "{{" in text or "{%" in text


def _local_path(target: ObjectStoragePath) -> str | None:
    """The path on this machine's file system, or ``None`` for a remote store."""
    from fsspec.implementations.local import LocalFileSystem

    return target.path if isinstance(target.fs, LocalFileSystem) else None


def _checked_records(records: Iterable[Any], resource: str) -> Iterator[dict[str, Any]]:
    for record in records:
        if not isinstance(record, dict):
            raise OnTrackApiError(
                f"expected every {resource} record to be a JSON object, got {type(record).__name__}",
                status=None,
                method="GET",
                path=f"/{resource}",
            )
        yield record


@contextmanager
def _replacing(target: ObjectStoragePath, log: Any) -> Iterator[tuple[IO[bytes], str | None]]:
    """Open a temporary sibling of ``target`` for writing and move it onto ``target`` on success.

    Yields the binary file and, for a local target, its folder. On any error the sibling is removed
    and ``target`` stays as it was.
    """
    # A name of its own per run: two runs writing the same path never write into one file.
    part_name = f"{target.name}.{secrets.token_hex(4)}.part"
    local = _local_path(target)
    if local is not None:
        folder = os.path.dirname(local)
        os.makedirs(folder, exist_ok=True)
        part = os.path.join(folder, part_name)
        moved = False
        try:
            with open(part, "xb", buffering=_WRITE_BUFFER) as out:
                yield out, folder
                out.flush()
                # On disk before the rename: after a power cut the name must not point at a file
                # whose blocks were never written.
                os.fsync(out.fileno())
            os.replace(part, local)
            moved = True
            _sync_folder(folder)
        finally:
            if not moved:
                _remove(part, os.unlink, log)
        return

    fs = target.fs
    part_path = (target.parent / part_name).path
    moved = False
    try:
        with fs.open(part_path, "wb") as out:
            yield out, None
        fs.mv(part_path, target.path)
        moved = True
    finally:
        if not moved:
            _remove(part_path, fs.rm, log)


def _sync_folder(folder: str) -> None:
    """Make a rename in ``folder`` durable; a no-op where folders cannot be opened (Windows)."""
    try:
        handle = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)


def _remove(path: str, remove: Any, log: Any) -> None:
    try:
        remove(path)
    except FileNotFoundError:
        pass
    except Exception:
        # Raising here would hide the error that stopped the write, which matters more.
        log.warning("Could not remove the unfinished file %s", path, exc_info=True)


def _write_jsonl(records: Iterable[dict[str, Any]], out: IO[bytes]) -> tuple[int, list[str]]:
    """Write one JSON line per record; return the count and the fields in first-seen order."""
    fields: dict[str, None] = {}
    rows = 0
    for record in records:
        fields.update(dict.fromkeys(record))
        out.write(_json_line(record))
        rows += 1
    return rows, list(fields)


def _json_line(record: dict[str, Any]) -> bytes:
    text = json.dumps(record, ensure_ascii=False)
    # U+2028 and U+2029 end a line for str.splitlines() and some JSON Lines readers; escaped, they
    # decode to the same text and a line stays a record.
    text = text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    try:
        return text.encode("utf-8") + b"\n"
    except UnicodeEncodeError:
        # A lone surrogate (half of an escaped pair) has no UTF-8 form; as an ASCII escape it stays
        # exactly what the API sent.
        return json.dumps(record).encode("ascii") + b"\n"


def _write_csv(
    records: Iterable[dict[str, Any]], out: IO[bytes], local_folder: str | None, log: Any
) -> tuple[int, list[str]]:
    """Write a header of every field seen, then one row per record; return the count and fields."""
    # The header comes first but a field may first show up in the last record: stage the records,
    # one line each, and write the CSV from the staged copy once every field is known.
    with tempfile.TemporaryFile(dir=local_folder, prefix=".ontrack-", suffix=".jsonl") as staged:
        rows, fields = _write_jsonl(records, staged)
        log.info("Read %d records with %d fields; writing the CSV", rows, len(fields))
        staged.seek(0)

        writer = csv.writer(codecs.getwriter("utf-8")(out))
        if fields:
            writer.writerow(fields)
        for line in staged:
            record = json.loads(line)
            writer.writerow([_csv_cell(record.get(field)) for field in fields])
    return rows, fields


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    # Numbers, booleans (true/false), lists and objects as their JSON text.
    return json.dumps(value, ensure_ascii=False)

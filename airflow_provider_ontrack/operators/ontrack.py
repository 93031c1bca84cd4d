"""Operators that read, create and update single ON!Track records."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from airflow_provider_ontrack.client.settings import DEFAULT_CONN_ID

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_ontrack.hooks.ontrack import OnTrackHook


class _OnTrackRecordOperator(BaseOperator):
    """Shared parts of the single-record operators: the resource, the connection and the hook."""

    ui_color = "#d2051e"
    ui_fgcolor = "#ffffff"

    def __init__(self, *, resource: str, ontrack_conn_id: str = DEFAULT_CONN_ID, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.resource = resource
        self.ontrack_conn_id = ontrack_conn_id

    @cached_property
    def hook(self) -> OnTrackHook:
        """The hook of the task's ON!Track connection."""
        from airflow_provider_ontrack.hooks.ontrack import OnTrackHook

        return OnTrackHook(ontrack_conn_id=self.ontrack_conn_id)


class OnTrackGetRecordOperator(_OnTrackRecordOperator):
    """Read one ON!Track worker, location or asset and return it.

    :param resource: ``workers``, ``locations`` or ``assets``.
    :param record_id: the record's ON!Track id. (templated)
    :param ontrack_conn_id: the ON!Track connection. (templated)
    """

    template_fields: Sequence[str] = ("record_id", "ontrack_conn_id")

    def __init__(self, *, resource: str, record_id: str, **kwargs: Any) -> None:
        super().__init__(resource=resource, **kwargs)
        self.record_id = record_id

    def execute(self, context: Context) -> dict[str, Any]:
        record = self.hook.get_record(self.resource, self.record_id)
        self.log.info("Read %s %s", self.resource.rstrip("s"), self.record_id)
        return record


class OnTrackCreateRecordOperator(_OnTrackRecordOperator):
    """Create one ON!Track worker, location or asset and return it as stored.

    When Airflow retries the task and the record carries an ``externalId``, the operator first looks
    for a record with that ``externalId``: an earlier try may have created it before failing, and
    creating it again would leave a duplicate. Finding it costs one list read of the resource, so it
    is done on retries only.

    :param resource: ``workers``, ``locations`` or ``assets``.
    :param record: the fields of the new record, in the API's camelCase names. (templated)
    :param ontrack_conn_id: the ON!Track connection. (templated)
    """

    template_fields: Sequence[str] = ("record", "ontrack_conn_id")
    template_fields_renderers = {"record": "json"}

    def __init__(self, *, resource: str, record: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(resource=resource, **kwargs)
        self.record = record

    def execute(self, context: Context) -> dict[str, Any]:
        external_id = self.record.get("externalId") if isinstance(self.record, dict) else None
        try_number = getattr(context.get("ti"), "try_number", 1) or 1
        if external_id and try_number > 1:
            existing = self.hook.find_by_external_id(self.resource, external_id)
            if existing is not None:
                self.log.info(
                    "Try %d: %s with externalId %s already exists as %s; not creating it again",
                    try_number,
                    self.resource.rstrip("s"),
                    external_id,
                    existing.get("id"),
                )
                return existing

        created = self.hook.create_record(self.resource, self.record)
        self.log.info("Created %s %s", self.resource.rstrip("s"), created.get("id"))
        return created


class OnTrackUpdateRecordOperator(_OnTrackRecordOperator):
    """Update one ON!Track worker, location or asset and return it as stored.

    An update sends the same fields each time, so Airflow may retry it safely.

    :param resource: ``workers``, ``locations`` or ``assets``.
    :param record_id: the record's ON!Track id. (templated)
    :param record: the fields to change, in the API's camelCase names. (templated)
    :param ontrack_conn_id: the ON!Track connection. (templated)
    """

    template_fields: Sequence[str] = ("record_id", "record", "ontrack_conn_id")
    template_fields_renderers = {"record": "json"}

    def __init__(self, *, resource: str, record_id: str, record: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(resource=resource, **kwargs)
        self.record_id = record_id
        self.record = record

    def execute(self, context: Context) -> dict[str, Any]:
        updated = self.hook.update_record(self.resource, self.record_id, self.record)
        self.log.info("Updated %s %s", self.resource.rstrip("s"), self.record_id)
        return updated


class OnTrackGetAssetOperator(OnTrackGetRecordOperator):
    """Read one ON!Track asset and return it.

    :param asset_id: the asset's ON!Track id. (templated)
    :param ontrack_conn_id: the ON!Track connection. (templated)
    """

    def __init__(self, *, asset_id: str, **kwargs: Any) -> None:
        super().__init__(resource="assets", record_id=asset_id, **kwargs)


class OnTrackCreateAssetOperator(OnTrackCreateRecordOperator):
    """Create one ON!Track asset and return it as stored; see :class:`OnTrackCreateRecordOperator`.

    :param record: the asset's fields; ``name`` and ``currentLocationId`` are required. (templated)
    :param ontrack_conn_id: the ON!Track connection. (templated)
    """

    def __init__(self, *, record: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(resource="assets", record=record, **kwargs)


class OnTrackUpdateAssetOperator(OnTrackUpdateRecordOperator):
    """Update one ON!Track asset and return it as stored.

    :param asset_id: the asset's ON!Track id. (templated)
    :param record: the fields to change. (templated)
    :param ontrack_conn_id: the ON!Track connection. (templated)
    """

    def __init__(self, *, asset_id: str, record: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(resource="assets", record_id=asset_id, record=record, **kwargs)


class OnTrackActivateWorkerOperator(_OnTrackRecordOperator):
    """Give an ON!Track worker access to the app, with a role; returns the worker as stored.

    .. note::
        Hilti allows this in productive accounts only; a testing account refuses it.

    :param worker_id: the worker's ON!Track id. (templated)
    :param email: the e-mail address the worker signs in with. (templated)
    :param role_id: the ON!Track role to give. (templated)
    :param ontrack_conn_id: the ON!Track connection. (templated)
    """

    template_fields: Sequence[str] = ("worker_id", "email", "role_id", "ontrack_conn_id")

    def __init__(self, *, worker_id: str, email: str, role_id: str, **kwargs: Any) -> None:
        super().__init__(resource="workers", **kwargs)
        self.worker_id = worker_id
        self.email = email
        self.role_id = role_id

    def execute(self, context: Context) -> dict[str, Any]:
        worker = self.hook.activate_worker_user(self.worker_id, email=self.email, role_id=self.role_id)
        self.log.info("Worker %s is now an app user with role %s", self.worker_id, self.role_id)
        return worker


# The task state store key under which a transfer operator keeps the transfer it made.
TRANSFER_STATE_KEY = "ontrack_transfer"


class OnTrackTransferAssetsOperator(_OnTrackRecordOperator):
    """Move ON!Track assets to a location, to a worker or into a storage asset.

    Give exactly one target. Returns ``{"transferId", "status", "assetIds"}``; a transfer may stay
    ``IN_TRANSIT`` for a while.

    A retried task does not move the assets a second time. On Airflow 3.3 and newer the transfer
    ON!Track answered is kept in the task's state store, which outlives retries, so a retry returns
    that transfer, ``transferId`` included, for a transfer sensor downstream. Without a stored
    transfer (older Airflow, or a try that failed before the answer came) the assets are read: if
    they are all at the target already, no transfer is made, the status is ``ALREADY_THERE`` and
    ``transferId`` is ``None``.

    :param asset_ids: the ids of the assets to move. (templated)
    :param to_location_id: the jobsite or warehouse to move them to. (templated)
    :param to_worker_id: the worker to hand them to. (templated)
    :param to_storage_asset_id: the storage asset (van, container) to put them in. (templated)
    :param note: a note kept with the transfer. (templated)
    :param ontrack_conn_id: the ON!Track connection. (templated)
    """

    template_fields: Sequence[str] = (
        "asset_ids",
        "to_location_id",
        "to_worker_id",
        "to_storage_asset_id",
        "note",
        "ontrack_conn_id",
    )

    def __init__(
        self,
        *,
        asset_ids: list[str],
        to_location_id: str | None = None,
        to_worker_id: str | None = None,
        to_storage_asset_id: str | None = None,
        note: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(resource="assets", **kwargs)
        self.asset_ids = asset_ids
        self.to_location_id = to_location_id
        self.to_worker_id = to_worker_id
        self.to_storage_asset_id = to_storage_asset_id
        self.note = note

    def execute(self, context: Context) -> dict[str, Any]:
        try_number = getattr(context.get("ti"), "try_number", 1) or 1
        store = context.get("task_state_store")
        if try_number > 1:
            earlier = store.get(TRANSFER_STATE_KEY) if store is not None else None
            if isinstance(earlier, dict) and earlier.get("request") == self._request():
                answer = earlier["answer"]
                self.log.info("Try %d: an earlier try made transfer %s", try_number, answer.get("transferId"))
                return answer
            if self._already_moved():
                # An earlier try moved them and then failed before it could say so; moving them again
                # would record a second transfer.
                self.log.info("Try %d: the assets are already at the target; no new transfer", try_number)
                return {"transferId": None, "status": "ALREADY_THERE", "assetIds": list(self.asset_ids)}

        transfer = self.hook.create_transfer(
            self.asset_ids,
            to_location_id=self.to_location_id,
            to_worker_id=self.to_worker_id,
            to_storage_asset_id=self.to_storage_asset_id,
            note=self.note,
        )
        self.log.info(
            "Transfer %s of %d assets is %s",
            transfer.get("transferId"),
            len(self.asset_ids),
            transfer.get("status"),
        )
        answer = {key: transfer.get(key) for key in ("transferId", "status", "assetIds")}
        if store is not None and answer["transferId"]:
            # Kept with the request, so that a retry with other arguments is not taken for this one.
            store.set(TRANSFER_STATE_KEY, {"request": self._request(), "answer": answer})
        return answer

    def _request(self) -> dict[str, Any]:
        return {
            "assetIds": list(self.asset_ids),
            "toLocationId": self.to_location_id,
            "toWorkerId": self.to_worker_id,
            "toStorageAssetId": self.to_storage_asset_id,
        }

    def _already_moved(self) -> bool:
        field, target = next(
            (field, value)
            for field, value in (
                ("currentLocationId", self.to_location_id),
                ("responsibleWorkerId", self.to_worker_id),
                ("parentAssetId", self.to_storage_asset_id),
            )
            if value
        )
        return all(self.hook.get_asset(asset_id).get(field) == target for asset_id in self.asset_ids)


class OnTrackRequestOperator(_OnTrackRecordOperator):
    """Call any ON!Track Unite path that no typed operator covers, with the connection's tokens and limits.

    The answer is returned, so it lands in XCom: point it at calls with small answers, and use
    :class:`~airflow_provider_ontrack.operators.sql.OnTrackToSqlOperator` for lists.

    :param method: the HTTP method. (templated)
    :param path: the path relative to the API base URL, such as ``/workers/123``. (templated)
    :param query: query parameters. (templated)
    :param json: the request body. (templated)
    :param ontrack_conn_id: the ON!Track connection. (templated)
    """

    template_fields: Sequence[str] = ("method", "path", "query", "json", "ontrack_conn_id")
    template_fields_renderers = {"json": "json", "query": "json"}

    def __init__(
        self,
        *,
        method: str,
        path: str,
        query: dict[str, Any] | None = None,
        json: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(resource="", **kwargs)
        self.method = method
        self.path = path
        self.query = query
        self.json = json

    def execute(self, context: Context) -> Any:
        answer = self.hook.request(self.method, self.path, params=self.query, json=self.json)
        self.log.info("%s %s answered", self.method.upper(), self.path)
        return answer

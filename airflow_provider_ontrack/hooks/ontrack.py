"""The Airflow hook of ON!Track Unite: the connection type, tokens, and reading and writing records."""

from __future__ import annotations

import datetime as dt
import posixpath
from dataclasses import replace
from functools import cached_property
from typing import Any, Iterator, Mapping
from urllib.parse import unquote

from airflow.sdk import BaseHook

from airflow_provider_ontrack.client import (
    OnTrackApiError,
    OnTrackAuthError,
    OnTrackClient,
    OnTrackConfigError,
    OnTrackError,
    OnTrackSettings,
    OnTrackUnsupportedOperationError,
)
from airflow_provider_ontrack.client.records import SERVER_FIELDS
from airflow_provider_ontrack.client.records import record_path_id as _record_path_id
from airflow_provider_ontrack.client.settings import DEFAULT_CONN_ID
from airflow_provider_ontrack.client.windows import api_query, api_time, change_windows
from airflow_provider_ontrack.get_provider_info import CONN_FIELDS, UI_FIELD_BEHAVIOUR
from airflow_provider_ontrack.hooks._http import HTTP_SESSION_OPTIONS, HttpOperatorSupport


class OnTrackHook(HttpOperatorSupport, BaseHook):
    """Reads and writes ON!Track records over the Unite API with one cached, shared token.

    The connection holds the API base URL as host, the technical user as login with its generated
    password, and the client ID and client secret as extras. Every hook of the same connection in a
    process shares one token, renewed shortly before it expires, and one pacer that keeps calls at
    or under the connection's ``calls_per_second``. Secrets and tokens are registered with Airflow's
    secret masker as soon as they are known.

    .. seealso::
        The connection guide in ``docs/connection.md`` lists every setting and its default.

    Airflow's ``HttpOperator`` pointed at an ON!Track connection gets this hook and calls its
    :meth:`run`, which sends the call with the connection's token (see ``docs/http-operator.md``).

    :param ontrack_conn_id: the Airflow connection of the ON!Track tenant.
    :param method: the HTTP method of :meth:`run`, as ``HttpOperator`` hands it over.
    :param auth_type: ignored with a warning: ON!Track calls carry the connection's OAuth token.
    """

    conn_name_attr = "ontrack_conn_id"
    default_conn_name = DEFAULT_CONN_ID
    conn_type = "ontrack"
    hook_name = "Hilti ON!Track Unite"

    def __init__(
        self,
        ontrack_conn_id: str = default_conn_name,
        *,
        method: str = "GET",
        auth_type: Any = None,
        **kwargs: Any,
    ) -> None:
        # HttpOperator hands every connection's hook the options of HttpHook's own session.
        super().__init__(**{name: kwargs[name] for name in kwargs if name not in HTTP_SESSION_OPTIONS})
        self.ontrack_conn_id = ontrack_conn_id
        self.method = method.upper()
        if auth_type is not None:
            self.log.warning(
                "auth_type %s is ignored: ON!Track calls carry the OAuth token of connection %r",
                getattr(auth_type, "__name__", auth_type),
                ontrack_conn_id,
            )

    @cached_property
    def settings(self) -> OnTrackSettings:
        """The connection's settings, checked; a bad one raises before any network call."""
        conn = self.get_connection(self.ontrack_conn_id)
        try:
            settings = OnTrackSettings.from_connection_fields(
                host=conn.host,
                login=conn.login,
                password=conn.password,
                extra=conn.extra_dejson,
                port=conn.port,
                schema=conn.schema,
            )
        except OnTrackConfigError as exc:
            raise OnTrackConfigError(
                exc.field, f"{exc.message} (connection {self.ontrack_conn_id!r})"
            ) from None

        for secret in settings.secrets:
            _mask(secret)
        return settings

    @cached_property
    def client(self) -> OnTrackClient:
        """The HTTP client of this hook, built on first use."""
        return OnTrackClient(self.settings, on_secret=_mask, log=self.log)

    def get_conn(self) -> OnTrackClient:
        """Return the underlying :class:`~airflow_provider_ontrack.client.OnTrackClient`."""
        return self.client

    def get_token(self) -> str:
        """Return a valid access token, requesting one only when the cached one runs out."""
        return self.client.tokens.get()

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
    ) -> Any:
        """Call the API and return the decoded JSON answer.

        :param method: the HTTP method.
        :param path: the path relative to the API base URL, such as ``/assets/123``.
        :param params: query parameters; datetimes are sent as UTC ISO 8601 with a ``Z``.
        :param json: the request body.
        """
        return self.client.request(method, self.api_path(method, path), params=api_query(params), json=json)

    def api_path(self, method: str, path: str) -> str:
        """The normalised path of a call; refuses the calls the API does not allow before sending them."""
        # Normalised first, so that "/./workers/1" or "/locations/../workers/1" is seen for what it is;
        # the check also sees through escapes and letter case, which a server may not care about.
        path = posixpath.normpath("/" + path.lstrip("/"))
        plain = posixpath.normpath("/" + unquote(path).lstrip("/")).casefold()
        if method.upper() == "DELETE" and plain.startswith(self.settings.workers_path.casefold() + "/"):
            raise OnTrackUnsupportedOperationError(
                "ON!Track does not allow deleting workers through its API; deactivate them in the app"
            )
        return path

    def paginate(
        self,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        page_size: int | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Yield every record of a list path, reading one page at a time.

        :param path: the list path, such as ``/assets``.
        :param params: filters such as ``startDate`` and ``endDate``.
        :param page_size: records to ask for per page; the connection's ``page_size`` by default.
        """
        label = path.strip("/").split("/")[-1] or "records"
        return self.client.paginate(path, params=api_query(params), page_size=page_size, label=label)

    def iter_records(self, resource: str, *, page_size: int | None = None, **params: Any) -> Iterator[dict]:
        """Yield every record of ``workers``, ``locations`` or ``assets`` that matches ``params``."""
        return self.paginate(self.settings.path_for(resource), params=params, page_size=page_size)

    def iter_changes(
        self,
        resource: str,
        start: dt.datetime,
        end: dt.datetime,
        *,
        page_size: int | None = None,
        **params: Any,
    ) -> Iterator[dict[str, Any]]:
        """Yield the records of a resource changed in ``[start, end)``, whatever the span's length.

        The API answers change windows of at most 90 days, so a longer span is read window by
        window. A record changed during the read may come twice, once per window it falls in.

        :param resource: ``workers``, ``locations`` or ``assets``.
        :param start: the first moment of the span; must carry a time zone.
        :param end: the moment after the span; must carry a time zone.
        """
        windows = change_windows(start, end)
        for number, (window_start, window_end) in enumerate(windows, 1):
            self.log.info(
                "Reading %s changed from %s to %s (window %d of %d)",
                resource,
                api_time(window_start),
                api_time(window_end),
                number,
                len(windows),
            )
            query = {**params, "startDate": api_time(window_start), "endDate": api_time(window_end)}
            yield from self.iter_records(resource, page_size=page_size, **query)

    def find_by_external_id(self, resource: str, external_id: str) -> dict[str, Any] | None:
        """Return the record whose ``externalId`` is ``external_id``, or ``None``.

        The API offers no look-up by ``externalId``, so this reads the resource page by page
        (one call per 500 records) and stops at the first match.
        """
        for record in self.iter_records(resource, page_size=self.settings.max_page_size):
            if record.get("externalId") == external_id:
                return record
        return None

    def get_record(self, resource: str, record_id: str) -> dict[str, Any]:
        """Read one record by its ON!Track id."""
        path = f"{self.settings.path_for(resource)}/{_record_path_id(record_id)}"
        return _expect_record(self.request("GET", path), "GET", path)

    def create_record(self, resource: str, record: Mapping[str, Any]) -> dict[str, Any]:
        """Create one record and return it as stored, with the id ON!Track gave it.

        A create is not repeated after a timeout or a dropped connection, because ON!Track may have
        stored it; :class:`~airflow_provider_ontrack.client.OnTrackAmbiguousWriteError` says so.
        """
        path = self.settings.path_for(resource)
        return _expect_record(self.request("POST", path, json=_record_body(record)), "POST", path)

    def update_record(self, resource: str, record_id: str, record: Mapping[str, Any]) -> dict[str, Any]:
        """Update one record and return it as stored."""
        body = _record_body(record)
        path_id = _record_path_id(record_id)
        if body.get("id") not in (None, record_id.strip()):
            raise OnTrackConfigError("id", f"the record's id {body['id']!r} differs from {record_id!r}")
        path = f"{self.settings.path_for(resource)}/{path_id}"
        return _expect_record(self.request("PUT", path, json=body), "PUT", path)

    def iter_assets(self, *, page_size: int | None = None, **params: Any) -> Iterator[dict[str, Any]]:
        """Yield every ON!Track asset that matches ``params`` (for example a change window)."""
        return self.iter_records("assets", page_size=page_size, **params)

    def get_asset(self, asset_id: str) -> dict[str, Any]:
        """Read one ON!Track asset."""
        return self.get_record("assets", asset_id)

    def create_asset(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """Create one ON!Track asset; it needs at least ``name`` and ``currentLocationId``."""
        return self.create_record("assets", record)

    def update_asset(self, asset_id: str, record: Mapping[str, Any]) -> dict[str, Any]:
        """Update one ON!Track asset."""
        return self.update_record("assets", asset_id, record)

    def iter_locations(self, *, page_size: int | None = None, **params: Any) -> Iterator[dict[str, Any]]:
        """Yield every location (jobsite or warehouse) that matches ``params``."""
        return self.iter_records("locations", page_size=page_size, **params)

    def get_location(self, location_id: str) -> dict[str, Any]:
        """Read one location."""
        return self.get_record("locations", location_id)

    def create_location(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """Create one top-level location; it needs ``name``, ``type`` and a ``managerId`` worker."""
        return self.create_record("locations", record)

    def update_location(self, location_id: str, record: Mapping[str, Any]) -> dict[str, Any]:
        """Update one location."""
        return self.update_record("locations", location_id, record)

    def iter_workers(self, *, page_size: int | None = None, **params: Any) -> Iterator[dict[str, Any]]:
        """Yield every worker that matches ``params``."""
        return self.iter_records("workers", page_size=page_size, **params)

    def get_worker(self, worker_id: str) -> dict[str, Any]:
        """Read one worker."""
        return self.get_record("workers", worker_id)

    def create_worker(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """Create one worker; it needs ``firstName`` and ``lastName``."""
        return self.create_record("workers", record)

    def update_worker(self, worker_id: str, record: Mapping[str, Any]) -> dict[str, Any]:
        """Update one worker; ``isUser``, ``roleId`` and ``email`` together make it an app user."""
        return self.update_record("workers", worker_id, record)

    def activate_worker_user(self, worker_id: str, *, email: str, role_id: str) -> dict[str, Any]:
        """Give a worker access to the ON!Track app, with the role ``role_id``.

        .. note::
            Hilti allows this in productive accounts only; a testing account refuses it.
        """
        if not isinstance(email, str) or "@" not in email:
            raise OnTrackConfigError("email", f"must be an e-mail address, got {email!r}")
        if not isinstance(role_id, str) or not role_id.strip():
            raise OnTrackConfigError("role_id", f"must name an ON!Track role, got {role_id!r}")
        # Whether the API's PUT replaces a record or merges fields is not documented; sending the
        # whole worker keeps its name either way.
        worker = {key: value for key, value in self.get_worker(worker_id).items() if key not in SERVER_FIELDS}
        worker.update({"isUser": True, "roleId": role_id.strip(), "email": email.strip()})
        return self.update_worker(worker_id, worker)

    def delete_worker(self, worker_id: str) -> None:
        """Refuse: the ON!Track API offers no way to delete a worker."""
        raise OnTrackUnsupportedOperationError(
            f"ON!Track does not allow deleting workers through its API (worker {worker_id!r}); "
            "deactivate them in the app"
        )

    def create_transfer(
        self,
        asset_ids: list[str],
        *,
        to_location_id: str | None = None,
        to_worker_id: str | None = None,
        to_storage_asset_id: str | None = None,
        transfer_date: dt.datetime | None = None,
        note: str | None = None,
    ) -> dict[str, Any]:
        """Move assets to a location, to a worker or into a storage asset; exactly one target.

        A transfer is a create: it is not repeated after a timeout or a dropped connection, since
        ON!Track may have recorded it; ``OnTrackAmbiguousWriteError`` says so.

        :return: the transfer as ON!Track answers it, with ``transferId`` and ``status``.
        """
        if (
            isinstance(asset_ids, str)
            or not asset_ids
            or not all(isinstance(asset_id, str) and asset_id.strip() for asset_id in asset_ids)
        ):
            raise OnTrackConfigError("asset_ids", f"must be a non-empty list of asset ids, got {asset_ids!r}")
        targets = {
            "toLocationId": to_location_id,
            "toWorkerId": to_worker_id,
            "toStorageAssetId": to_storage_asset_id,
        }
        given = {
            key: value.strip() for key, value in targets.items() if isinstance(value, str) and value.strip()
        }
        if len(given) != 1:
            raise OnTrackConfigError(
                "to_location_id",
                f"give exactly one of to_location_id, to_worker_id and to_storage_asset_id, got {len(given)}",
            )

        body: dict[str, Any] = {"assetIds": list(asset_ids), **given}
        if transfer_date is not None:
            body["transferDate"] = api_query({"transferDate": transfer_date})["transferDate"]
        if note:
            body["note"] = note
        path = self.settings.transfers_path
        return _expect_record(self.request("POST", path, json=body), "POST", path)

    def get_transfer(self, transfer_id: str) -> dict[str, Any]:
        """Read one transfer, for example to see whether it is still ``IN_TRANSIT``."""
        path = f"{self.settings.transfers_path}/{_record_path_id(transfer_id)}"
        return _expect_record(self.request("GET", path), "GET", path)

    def test_connection(self) -> tuple[bool, str]:
        """Get a token and read one location; say in plain words which step failed."""
        try:
            settings = self.settings
        except OnTrackError as exc:
            return False, f"The connection settings are invalid: {exc}"

        # Someone is waiting for the answer in the UI: one retry and a short timeout, not the patience
        # a nightly sync deserves.
        probe = OnTrackClient(
            replace(settings, max_retries=1, timeout=min(settings.timeout, 15.0)),
            on_secret=_mask,
            log=self.log,
        )
        try:
            probe.tokens.get()
        except OnTrackAuthError as exc:
            if exc.status is None:
                return False, f"The token endpoint could not be reached: {exc}"
            return False, f"Getting a token failed: {exc}"

        try:
            probe.request(
                "GET", settings.locations_path, params={settings.page_param: 1, settings.page_size_param: 1}
            )
        except OnTrackApiError as exc:
            return False, f"A token was issued, but the API at {settings.base_url} failed: {exc}"
        return True, f"Token issued for {settings.username} and the API at {settings.base_url} answered."

    @classmethod
    def get_connection_form_widgets(cls) -> dict[str, Any]:
        """Return the extra fields of the connection form, for Airflow versions before 3.2."""
        from flask_appbuilder.fieldwidgets import BS3PasswordFieldWidget, BS3TextFieldWidget
        from flask_babel import lazy_gettext
        from wtforms import IntegerField, PasswordField, StringField

        widgets: dict[str, Any] = {}
        for name, spec in CONN_FIELDS.items():
            schema = spec["schema"]
            label = lazy_gettext(spec["label"])
            if schema.get("format") == "password":
                widgets[name] = PasswordField(
                    label, widget=BS3PasswordFieldWidget(), description=spec["description"]
                )
            elif "integer" in schema["type"]:
                widgets[name] = IntegerField(
                    label,
                    widget=BS3TextFieldWidget(),
                    default=schema.get("default"),
                    description=spec["description"],
                )
            else:
                default = schema.get("default")
                widgets[name] = StringField(
                    label,
                    widget=BS3TextFieldWidget(),
                    default=None if default is None else str(default),
                    description=spec["description"],
                )
        return widgets

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """Return how the standard fields are shown, for Airflow versions before 3.2."""
        return {key.replace("-", "_"): value for key, value in UI_FIELD_BEHAVIOUR.items()}


def _mask(secret: str) -> None:
    from airflow.sdk.log import mask_secret

    mask_secret(secret)


def _expect_record(answer: Any, method: str, path: str) -> dict[str, Any]:
    if not isinstance(answer, dict):
        raise OnTrackApiError(
            f"expected a record, got {type(answer).__name__}",
            status=None,
            method=method,
            path=path,
            body=None,
        )
    return answer


def _record_body(record: Any) -> dict[str, Any]:
    if not isinstance(record, Mapping):
        raise OnTrackConfigError(
            "record", f"must be a mapping of field names to values, got {type(record).__name__}"
        )
    return dict(record)

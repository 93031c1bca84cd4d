"""Sensors that wait for an ON!Track asset to reach a state, for changes, or for a transfer to complete.

Each sensor pokes with one API call and can run in Airflow's ``poke`` and ``reschedule`` modes, or,
with ``deferrable=True``, hand the waiting to a trigger in the triggerer so that no worker slot is
held. The hook and the HTTP stack are imported on first use only: Airflow imports this module each
time it parses a DAG file.
"""

from __future__ import annotations

import datetime as dt
import enum
import time
from collections.abc import Callable, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseSensorOperator, PokeReturnValue

from airflow_provider_ontrack.client.errors import OnTrackConfigError, OnTrackError
from airflow_provider_ontrack.client.records import TransferStatus, check_change_resource, record_path_id
from airflow_provider_ontrack.client.settings import DEFAULT_CONN_ID

if TYPE_CHECKING:
    from airflow.sdk import Context
    from airflow.triggers.base import BaseTrigger

    from airflow_provider_ontrack.hooks.ontrack import OnTrackHook

try:
    from airflow.sdk.configuration import conf as _conf

    DEFAULT_DEFERRABLE = _conf.getboolean("operators", "default_deferrable", fallback=False)
except ImportError:
    DEFAULT_DEFERRABLE = False

try:
    from airflow.sdk.exceptions import AirflowSensorTimeout, AirflowSkipException
except ImportError:
    from airflow.exceptions import AirflowSensorTimeout, AirflowSkipException

# The sensor's argument names and the asset fields they compare.
ASSET_FIELDS = {
    "status": "status",
    "location_id": "currentLocationId",
    "responsible_worker_id": "responsibleWorkerId",
}


class _OnTrackSensor(BaseSensorOperator):
    """Shared parts of the ON!Track sensors: the connection, the hook and the deferrable path."""

    ui_color = "#d2051e"
    ui_fgcolor = "#ffffff"

    def __init__(
        self,
        *,
        ontrack_conn_id: str = DEFAULT_CONN_ID,
        deferrable: bool = DEFAULT_DEFERRABLE,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.ontrack_conn_id = ontrack_conn_id
        self.deferrable = deferrable

    @cached_property
    def hook(self) -> OnTrackHook:
        """The hook of the task's ON!Track connection."""
        from airflow_provider_ontrack.hooks.ontrack import OnTrackHook

        return OnTrackHook(ontrack_conn_id=self.ontrack_conn_id)

    def execute(self, context: Context) -> Any:
        # In every mode, and before deferring: a trigger would only find out in the triggerer.
        self._check_arguments(context)
        if not self.deferrable:
            return super().execute(context)

        trigger, details = self._trigger(context, end_time=time.time() + self.timeout)
        self.log.info("Deferring to %s for at most %s s", type(trigger).__name__, self.timeout)
        self.defer(trigger=trigger, method_name="execute_complete", kwargs={"details": details})

    def _check_arguments(self, context: Context) -> None:
        """Refuse rendered arguments that could never work, naming the argument, before any call."""
        raise NotImplementedError

    def _trigger(self, context: Context, *, end_time: float) -> tuple[BaseTrigger, dict[str, Any]]:
        """The trigger that waits in the triggerer, and details to add to its success event."""
        raise NotImplementedError

    def execute_complete(
        self, context: Context, event: dict[str, Any] | None = None, details: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Return the trigger's details when the wait succeeded; raise when it timed out or failed.

        :param event: the payload of the trigger's event.
        :param details: what the sensor itself adds to the result, such as the ``since`` it waited from.
        """
        if not isinstance(event, dict):
            raise OnTrackError(f"the trigger sent no event payload, got {event!r}")

        status = event.get("status")
        message = event.get("message") or f"the trigger ended with status {status!r}"
        if status == "success":
            result = {**(details or {}), **{key: value for key, value in event.items() if key != "status"}}
            self.log.info("Success criteria met: %s", result)
            return result
        if status == "timeout":
            # soft_fail and never_fail are honoured by BaseSensorOperator.resume_execution for this one.
            raise AirflowSensorTimeout(message)
        if self.never_fail:
            # In poke mode never_fail skips on any error; the same here, where the error came by event.
            raise AirflowSkipException(f"Skipping due to never_fail is set to True: {message}")
        raise OnTrackError(message)


class OnTrackAssetSensor(_OnTrackSensor):
    """Wait until an ON!Track asset has a given status, location or responsible worker.

    The sensor is done when the asset matches every field given, and ``condition`` returns true if
    one is given; at least one of them is required. Each poke reads the asset once.

    ``condition`` cannot be combined with ``deferrable=True``: a Python function cannot travel to
    the triggerer.

    :param asset_id: the asset's ON!Track id. (templated)
    :param status: the asset status to wait for, such as ``ACTIVE`` or ``IN_REPAIR``. (templated)
    :param location_id: the id of the location the asset must be at (``currentLocationId``). (templated)
    :param responsible_worker_id: the id of the worker responsible for the asset
        (``responsibleWorkerId``). (templated)
    :param condition: a function of the asset record that returns true when the wait is over.
    :param ontrack_conn_id: the ON!Track connection. (templated)
    :param deferrable: wait in the triggerer instead of a worker slot; the default comes from
        Airflow's ``[operators] default_deferrable``.
    :return: ``{"asset_id": ..., "matched": {field: value}}``, pushed to XCom.
    """

    template_fields: Sequence[str] = (
        "asset_id",
        "status",
        "location_id",
        "responsible_worker_id",
        "ontrack_conn_id",
    )

    def __init__(
        self,
        *,
        asset_id: str,
        status: str | None = None,
        location_id: str | None = None,
        responsible_worker_id: str | None = None,
        condition: Callable[[dict[str, Any]], bool] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.asset_id = asset_id
        self.status = status
        self.location_id = location_id
        self.responsible_worker_id = responsible_worker_id
        self.condition = condition

        given = [name for name in ASSET_FIELDS if getattr(self, name) is not None]
        if not given and condition is None:
            raise OnTrackConfigError(
                "status", "give at least one of status, location_id, responsible_worker_id or condition"
            )
        if condition is not None and not callable(condition):
            raise OnTrackConfigError("condition", f"must be a function of the asset, got {condition!r}")
        if condition is not None and self.deferrable:
            raise OnTrackConfigError(
                "condition",
                "cannot be used with deferrable=True, because a function cannot be sent to the triggerer; "
                "use status, location_id or responsible_worker_id, or run the sensor without deferrable",
            )

    def _expected(self) -> dict[str, str]:
        """The asset fields to match, from the rendered arguments; a blank value is refused."""
        expected = {}
        for name, field in ASSET_FIELDS.items():
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, enum.Enum):
                value = value.value
            if not isinstance(value, str) or not value.strip():
                raise OnTrackConfigError(name, f"must be a non-empty text, got {value!r}")
            expected[field] = value.strip()
        return expected

    def _check_arguments(self, context: Context) -> None:
        record_path_id(self.asset_id, "asset_id")
        self._expected()

    def poke(self, context: Context) -> bool | PokeReturnValue:
        expected = self._expected()
        asset = self.hook.get_asset(self.asset_id)
        differing = {
            field: asset.get(field) for field, value in expected.items() if asset.get(field) != value
        }
        if differing:
            self.log.info(
                "Asset %s does not match yet: %s, waiting for %s", self.asset_id, differing, expected
            )
            return False
        if self.condition is not None and not self.condition(asset):
            self.log.info("Asset %s: the condition is not met yet", self.asset_id)
            return False

        self.log.info("Asset %s matches %s", self.asset_id, expected or "the condition")
        return PokeReturnValue(is_done=True, xcom_value={"asset_id": self.asset_id, "matched": expected})

    def _trigger(self, context: Context, *, end_time: float) -> tuple[BaseTrigger, dict[str, Any]]:
        from airflow_provider_ontrack.triggers.ontrack import OnTrackAssetTrigger

        trigger = OnTrackAssetTrigger(
            ontrack_conn_id=self.ontrack_conn_id,
            asset_id=self.asset_id,
            expected=self._expected(),
            poll_interval=self.poke_interval,
            end_time=end_time,
        )
        return trigger, {"asset_id": self.asset_id}


class OnTrackChangesSensor(_OnTrackSensor):
    """Wait until at least one ON!Track worker, location or asset has changed since a moment.

    Each poke asks for one record of the change window from ``since`` to now, which is one API call
    as long as ``since`` lies within the last 90 days (the API reads longer spans window by window).

    :param resource: ``workers``, ``locations`` or ``assets``. (templated)
    :param since: the moment from which changes count, as a datetime with a time zone or ISO 8601
        text such as ``2025-01-31T06:00:00Z``; the run's ``data_interval_start`` by default. (templated)
    :param ontrack_conn_id: the ON!Track connection. (templated)
    :param deferrable: wait in the triggerer instead of a worker slot; the default comes from
        Airflow's ``[operators] default_deferrable``.
    :return: ``{"resource": ..., "since": ...}`` (and the trigger's ``count`` when deferred), pushed to
        XCom.
    """

    template_fields: Sequence[str] = ("resource", "since", "ontrack_conn_id")

    def __init__(self, *, resource: str, since: dt.datetime | str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.resource = resource
        self.since = since

    def _since(self, context: Context) -> dt.datetime:
        """The rendered ``since`` as an aware datetime, or the run's data interval start."""
        from airflow_provider_ontrack.operators._sync import _unwrap

        value = self.since
        if value is None or (isinstance(value, str) and value.strip() in ("", "None")):
            value = _unwrap(context.get("data_interval_start"))
            if value is None:
                raise OnTrackConfigError(
                    "since", "is needed when the DAG run has no data interval (no schedule)"
                )
        if isinstance(value, str):
            text = value.strip()
            try:
                # Python 3.10's fromisoformat does not read the "Z" the API writes.
                value = dt.datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
            except ValueError:
                raise OnTrackConfigError("since", f"must be an ISO 8601 date-time, got {text!r}") from None
        if not isinstance(value, dt.datetime):
            raise OnTrackConfigError("since", f"must be a datetime or ISO 8601 text, got {value!r}")
        if value.tzinfo is None or value.utcoffset() is None:
            raise OnTrackConfigError("since", f"needs a time zone, got {value.isoformat()} without one")
        return value

    def _check_arguments(self, context: Context) -> None:
        check_change_resource(self.resource)
        self._since(context)

    def poke(self, context: Context) -> bool | PokeReturnValue:
        from airflow_provider_ontrack.client.windows import api_time

        since = self._since(context)
        now = dt.datetime.now(dt.timezone.utc)
        first = next(iter(self.hook.iter_changes(self.resource, since, now, page_size=1)), None)
        if first is None:
            self.log.info("No %s changed since %s yet", self.resource, api_time(since))
            return False

        self.log.info(
            "%s changed since %s, %s among them",
            self.resource,
            api_time(since),
            first.get("id") if isinstance(first, dict) else first,
        )
        return PokeReturnValue(is_done=True, xcom_value={"resource": self.resource, "since": api_time(since)})

    def _trigger(self, context: Context, *, end_time: float) -> tuple[BaseTrigger, dict[str, Any]]:
        from airflow_provider_ontrack.client.windows import api_time
        from airflow_provider_ontrack.triggers.ontrack import OnTrackChangesTrigger

        since = api_time(self._since(context))
        trigger = OnTrackChangesTrigger(
            ontrack_conn_id=self.ontrack_conn_id,
            resource=self.resource,
            since=since,
            poll_interval=self.poke_interval,
            end_time=end_time,
        )
        return trigger, {"resource": self.resource, "since": since}


class OnTrackTransferSensor(_OnTrackSensor):
    """Wait until an ON!Track transfer is ``COMPLETED``, no longer ``IN_TRANSIT``.

    Each poke reads the transfer once. A transfer id that does not exist fails the task: it will
    not appear later.

    :param transfer_id: the transfer's id, the ``transferId`` that creating it returned. (templated)
    :param ontrack_conn_id: the ON!Track connection. (templated)
    :param deferrable: wait in the triggerer instead of a worker slot; the default comes from
        Airflow's ``[operators] default_deferrable``.
    :return: ``{"transfer_id": ..., "transfer_status": "COMPLETED"}``, pushed to XCom.
    """

    template_fields: Sequence[str] = ("transfer_id", "ontrack_conn_id")

    def __init__(self, *, transfer_id: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.transfer_id = transfer_id

    def _check_arguments(self, context: Context) -> None:
        record_path_id(self.transfer_id, "transfer_id")

    def poke(self, context: Context) -> bool | PokeReturnValue:
        status = self.hook.get_transfer(self.transfer_id).get("status")
        if status != TransferStatus.COMPLETED.value:
            self.log.info("Transfer %s is %s", self.transfer_id, status)
            return False

        self.log.info("Transfer %s is %s", self.transfer_id, status)
        return PokeReturnValue(
            is_done=True, xcom_value={"transfer_id": self.transfer_id, "transfer_status": status}
        )

    def _trigger(self, context: Context, *, end_time: float) -> tuple[BaseTrigger, dict[str, Any]]:
        from airflow_provider_ontrack.triggers.ontrack import OnTrackTransferTrigger

        trigger = OnTrackTransferTrigger(
            ontrack_conn_id=self.ontrack_conn_id,
            transfer_id=self.transfer_id,
            poll_interval=self.poke_interval,
            end_time=end_time,
        )
        return trigger, {"transfer_id": self.transfer_id}

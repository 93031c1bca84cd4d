"""What the provider knows about ON!Track records: enums, fields required on create, and checks.

These follow the working contract of the API; Hilti documents only some of them (first and last
name of a worker, for one), so the checks stay lenient: they refuse what could never work and
let the server judge the rest.
"""

from __future__ import annotations

import enum
import math
from typing import Any
from urllib.parse import quote

from airflow_provider_ontrack.client.errors import OnTrackConfigError


class OnTrackAssetStatus(str, enum.Enum):
    """The status of an ON!Track asset."""

    ACTIVE = "ACTIVE"
    DISPOSED = "DISPOSED"
    LOST = "LOST"
    IN_REPAIR = "IN_REPAIR"


class TransferStatus(str, enum.Enum):
    """The state of a transfer; only ``COMPLETED`` is final."""

    IN_TRANSIT = "IN_TRANSIT"
    COMPLETED = "COMPLETED"

    def is_terminal(self) -> bool:
        return self is TransferStatus.COMPLETED


# The resources whose records the API lists by change window; transfers are read one by one only.
CHANGE_RESOURCES = ("workers", "locations", "assets")

REQUIRED_ON_CREATE = {
    "workers": ("firstName", "lastName"),
    "locations": ("name", "type", "managerId"),
    "assets": ("name", "currentLocationId"),
}

ENUMS = {
    "workers": {"contractType": ("FULL_TIME", "TEMPORARY", "AGENCY")},
    "locations": {"type": ("JOBSITE", "WAREHOUSE"), "locationState": ("ACTIVE", "INACTIVE")},
    "assets": {
        "status": tuple(status.value for status in OnTrackAssetStatus),
        "assetType": ("ASSET", "STORAGE_ASSET"),
        "ownershipType": ("OWNED", "RENTED", "LEASED", "FLEET"),
    },
}

BOOLEAN_FIELDS = frozenset({"isUser"})
NUMBER_FIELDS = frozenset({"purchasePrice"})
LIST_FIELDS = frozenset({"labels"})

# Fields an ERP export can use to name a related record by its own key; each becomes the ON!Track id.
REFERENCES = {
    "workers": {},
    "locations": {"managerExternalId": ("managerId", "workers")},
    "assets": {
        "currentLocationExternalId": ("currentLocationId", "locations"),
        "responsibleWorkerExternalId": ("responsibleWorkerId", "workers"),
        "parentAssetExternalId": ("parentAssetId", "assets"),
    },
}

_SINGULAR = {"workers": "a worker", "locations": "a location", "assets": "an asset"}

# Set by the server; never sent back in an update.
SERVER_FIELDS = frozenset({"id", "lastModifiedDate", "ontrackId", "origin"})


def problems(resource: str, record: dict[str, Any], *, creating: bool) -> list[str]:
    """Say what is wrong with a record before it is sent, one sentence per field; empty if nothing."""
    found = []
    if creating:
        for field in REQUIRED_ON_CREATE[resource]:
            if record.get(field) in (None, ""):
                found.append(f"{field}: required to create {_SINGULAR[resource]}")

    for field, allowed in ENUMS[resource].items():
        value = record.get(field)
        if value is not None and value not in allowed:
            found.append(f"{field}: must be one of {', '.join(allowed)}, got {value!r}")

    for field, value in record.items():
        if value is None:
            continue
        if field in BOOLEAN_FIELDS and not isinstance(value, bool):
            found.append(f"{field}: must be true or false, got {value!r}")
        elif field in NUMBER_FIELDS and not _is_finite_number(value):
            found.append(f"{field}: must be a finite number, got {value!r}")
        elif field in LIST_FIELDS and not _is_text_list(value):
            found.append(f"{field}: must be a list of texts, got {value!r}")

    email = record.get("email")
    if email is not None and (not isinstance(email, str) or "@" not in email):
        found.append(f"email: must be an e-mail address, got {email!r}")
    if record.get("isUser") is True:
        for field in ("email", "roleId"):
            if record.get(field) in (None, ""):
                found.append(f"{field}: required when isUser is true")
    return found


def _is_text_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def _is_finite_number(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and math.isfinite(value))


def record_path_id(record_id: Any, name: str = "id") -> str:
    """Turn an ON!Track id into one escaped path segment.

    Ids are opaque, so every character that means something in a URL is escaped: an id can never
    add a query or step up the path.

    :param record_id: the id as the caller gave it; surrounding spaces are dropped.
    :param name: the argument that held it, for the error when it is no usable id.
    """
    text = record_id.strip() if isinstance(record_id, str) else ""
    if text in ("", ".", ".."):
        raise OnTrackConfigError(name, f"must be a non-empty ON!Track id, got {record_id!r}")
    return quote(text, safe="")


def check_change_resource(resource: Any, name: str = "resource") -> str:
    """Return ``resource`` if the API reads its changes (``workers``, ``locations`` or ``assets``)."""
    if resource not in CHANGE_RESOURCES:
        raise OnTrackConfigError(name, f"must be one of {', '.join(CHANGE_RESOURCES)}, got {resource!r}")
    return resource

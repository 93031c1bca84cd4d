"""Static description of the provider that Airflow reads at discovery; it imports nothing on purpose."""

from __future__ import annotations


def _text(label: str, description: str, default: str | None = None, fmt: str | None = None) -> dict:
    schema: dict = {"type": ["string", "null"]}
    if default is not None:
        schema["default"] = default
    if fmt is not None:
        schema["format"] = fmt
    return {"label": label, "description": description, "schema": schema}


def _number(label: str, description: str, default: float, kind: str = "number", minimum: float = 0) -> dict:
    return {
        "label": label,
        "description": description,
        "schema": {"type": [kind, "null"], "default": default, "minimum": minimum},
    }


_ASSUMED = "Assumed name; change it if your tenant's API uses another."

CONN_FIELDS = {
    "client_id": _text(
        "Client ID", "The client ID Hilti sent with the API credentials (same for all technical users)."
    ),
    "client_secret": _text(
        "Client secret", "The client secret Hilti sent with the client ID.", fmt="password"
    ),
    "auth_url": _text(
        "Token URL", "The OAuth 2.0 token endpoint.", default="https://cloudsso.hilti.com/hc/token", fmt="url"
    ),
    "scope": _text("Scope", "The scope requested with each token.", default="HC.Request.AllScopes"),
    "calls_per_second": _number(
        "Calls per second", "Most API calls per second across all tasks' hooks in one process.", 2
    ),
    "page_size": _number("Page size", "Records per page when reading lists.", 100, "integer", 1),
    "max_page_size": _number(
        "Largest page size",
        "The largest page the API serves (500 is assumed); syncs ask for this much.",
        500,
        "integer",
        1,
    ),
    "timeout": _number("Timeout (seconds)", "Timeout of each HTTP call.", 30),
    "max_retries": _number(
        "Retries", "Retries of a call that failed with 429, 5xx or a timeout.", 5, "integer"
    ),
    "retry_delay": _number("Retry delay (seconds)", "First back-off delay; it doubles on each retry.", 1),
    "max_retry_delay": _number(
        "Longest retry delay (seconds)", "Cap of back-off delays and of an accepted Retry-After.", 60
    ),
    "page_param": _text("Page parameter", "Query parameter of the page number. " + _ASSUMED, "page"),
    "page_size_param": _text(
        "Page size parameter", "Query parameter of the page size. " + _ASSUMED, "pageSize"
    ),
    "result_key": _text("Records key", "Envelope key of a list's records.", "result"),
    "page_number_key": _text("Page number key", "Envelope key of the page number. " + _ASSUMED, "pageNumber"),
    "page_size_key": _text("Page size key", "Envelope key of the served page size. " + _ASSUMED, "pageSize"),
    "total_key": _text("Total key", "Envelope key of the total record count. " + _ASSUMED, "totalRecords"),
    "workers_path": _text("Workers path", "Path of the workers resource. " + _ASSUMED, "/workers"),
    "locations_path": _text("Locations path", "Path of the locations resource.", "/locations"),
    "assets_path": _text("Assets path", "Path of the assets resource. " + _ASSUMED, "/assets"),
    "transfers_path": _text("Transfers path", "Path of the transfers resource. " + _ASSUMED, "/transfers"),
}

UI_FIELD_BEHAVIOUR = {
    "hidden-fields": ["schema", "port", "extra"],
    "relabeling": {"host": "API base URL", "login": "Technical user", "password": "Technical user password"},
    "placeholders": {
        "host": "https://cloudapis.hilti.com/ts/ontrack/unite/v1",
        "login": "techuser-...@api-user.hilti.cloud",
        "password": "generated password of the technical user",
    },
}


def get_provider_info() -> dict:
    """Return the provider's metadata for Airflow's providers manager."""
    return {
        "package-name": "airflow-provider-ontrack",
        "name": "Hilti ON!Track",
        "description": "Hilti ON!Track Unite (ON!Track 3): sync workers, locations and assets, "
        "write records back.",
        "versions": ["0.1.0"],
        "integrations": [
            {
                "integration-name": "Hilti ON!Track",
                "external-doc-url": "https://unite.ontrack3.hilti.com/",
                "tags": ["service"],
            }
        ],
        "hooks": [
            {
                "integration-name": "Hilti ON!Track",
                "python-modules": ["airflow_provider_ontrack.hooks.ontrack"],
            }
        ],
        "operators": [
            {
                "integration-name": "Hilti ON!Track",
                "python-modules": [
                    "airflow_provider_ontrack.operators.ontrack",
                    "airflow_provider_ontrack.operators.sql",
                    "airflow_provider_ontrack.operators.files",
                    "airflow_provider_ontrack.operators.writeback",
                ],
            }
        ],
        "sensors": [
            {
                "integration-name": "Hilti ON!Track",
                "python-modules": ["airflow_provider_ontrack.sensors.ontrack"],
            }
        ],
        "triggers": [
            {
                "integration-name": "Hilti ON!Track",
                "python-modules": ["airflow_provider_ontrack.triggers.ontrack"],
            }
        ],
        "connection-types": [
            {
                "connection-type": "ontrack",
                "hook-class-name": "airflow_provider_ontrack.hooks.ontrack.OnTrackHook",
                "hook-name": "Hilti ON!Track Unite",
                "conn-fields": CONN_FIELDS,
                "ui-field-behaviour": UI_FIELD_BEHAVIOUR,
            }
        ],
    }

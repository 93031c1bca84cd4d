"""Local sandbox of the Hilti ON!Track Unite API and its token endpoint, for tests and demos.

Standard library only, so importing it adds no dependency and stays fast::

    with OnTrackSandbox(seed=7) as sb:
        requests.post(sb.token_url, ...)
"""

from __future__ import annotations

from airflow_provider_ontrack.sandbox.server import (
    BASE_PATH,
    GRANTED_SCOPE,
    SANDBOX_CLIENT_ID,
    SANDBOX_CLIENT_SECRET,
    SANDBOX_PASSWORD,
    SANDBOX_USERNAME,
    TOKEN_PATH,
    OnTrackSandbox,
)
from airflow_provider_ontrack.sandbox.tenant import NotFoundError, Tenant, ValidationError

__all__ = [
    "BASE_PATH",
    "GRANTED_SCOPE",
    "SANDBOX_CLIENT_ID",
    "SANDBOX_CLIENT_SECRET",
    "SANDBOX_PASSWORD",
    "SANDBOX_USERNAME",
    "TOKEN_PATH",
    "NotFoundError",
    "OnTrackSandbox",
    "Tenant",
    "ValidationError",
]

"""A small ON!Track Unite client with no Airflow in it: settings, tokens, pacing, calls and paging."""

from __future__ import annotations

from airflow_provider_ontrack.client.core import OnTrackClient
from airflow_provider_ontrack.client.errors import (
    OnTrackAmbiguousWriteError,
    OnTrackApiError,
    OnTrackAuthError,
    OnTrackConfigError,
    OnTrackError,
    OnTrackNotFoundError,
    OnTrackRateLimitError,
    OnTrackTransportError,
    OnTrackUnauthorizedError,
    OnTrackUnsupportedOperationError,
)
from airflow_provider_ontrack.client.settings import OnTrackSettings

__all__ = [
    "OnTrackAmbiguousWriteError",
    "OnTrackApiError",
    "OnTrackAuthError",
    "OnTrackClient",
    "OnTrackConfigError",
    "OnTrackError",
    "OnTrackNotFoundError",
    "OnTrackRateLimitError",
    "OnTrackSettings",
    "OnTrackTransportError",
    "OnTrackUnauthorizedError",
    "OnTrackUnsupportedOperationError",
]

"""A small ON!Track Unite client with no Airflow in it: settings, tokens, pacing, calls and paging.

Names are loaded on first use, so that importing the errors or the settings (as operator modules
do while Airflow parses DAG files) does not pull in the HTTP stack.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "OnTrackClient": "core",
    "OnTrackSettings": "settings",
    "OnTrackAmbiguousWriteError": "errors",
    "OnTrackApiError": "errors",
    "OnTrackAuthError": "errors",
    "OnTrackConfigError": "errors",
    "OnTrackError": "errors",
    "OnTrackNotFoundError": "errors",
    "OnTrackRateLimitError": "errors",
    "OnTrackTransportError": "errors",
    "OnTrackUnauthorizedError": "errors",
    "OnTrackUnsupportedOperationError": "errors",
}

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

if TYPE_CHECKING:
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


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)

"""The one family of exceptions that every part of the provider raises."""

from __future__ import annotations

import json
from typing import Any

# An error message shows this much of a response body; enough for an HTML error page's title and the
# first lines of a JSON error, short enough to keep task logs readable.
BODY_EXCERPT_CHARS = 500


def body_excerpt(body: Any) -> str:
    """Render a decoded or raw response body as one short line for an error message."""
    if body is None or body == "":
        return "(empty body)"

    text = body if isinstance(body, str) else json.dumps(body, ensure_ascii=False, default=str)
    text = " ".join(text.split())
    if len(text) > BODY_EXCERPT_CHARS:
        text = text[:BODY_EXCERPT_CHARS] + "..."
    return text


# Like Airflow's secret masker, leave values this short alone: replacing every "s" of a message
# because a test connection's secret is "s" would hide more than it protects.
MIN_REDACTED_LENGTH = 5


def redact(value: Any, secrets: tuple[str, ...]) -> Any:
    """Return ``value`` with every secret inside its text replaced by ``***``, however deeply nested."""
    if isinstance(value, str):
        for secret in secrets:
            if len(secret) >= MIN_REDACTED_LENGTH:
                value = value.replace(secret, "***")
        return value
    if isinstance(value, dict):
        return {redact(key, secrets): redact(item, secrets) for key, item in value.items()}
    if isinstance(value, list):
        return [redact(item, secrets) for item in value]
    return value


class OnTrackError(Exception):
    """Base class of every error raised by the ON!Track provider."""


class OnTrackConfigError(OnTrackError, ValueError):
    """A connection setting or an argument is missing or malformed; raised before any network call.

    :param field: the name of the offending setting, as the user wrote it.
    """

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


class OnTrackAuthError(OnTrackError):
    """The token endpoint refused to issue a token, or answered something that is not a token."""

    def __init__(self, message: str, *, status: int | None = None, error: str | None = None) -> None:
        self.status = status
        self.error = error
        super().__init__(message)


class OnTrackApiError(OnTrackError):
    """An ON!Track API call failed.

    :param status: the HTTP status code, or ``None`` when no response arrived.
    :param method: the HTTP method of the call.
    :param path: the path of the call relative to the API base URL.
    :param body: the decoded JSON body, or the start of the raw body when it was not JSON.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None,
        method: str,
        path: str,
        body: Any = None,
    ) -> None:
        self.status = status
        self.method = method
        self.path = path
        self.body = body
        self.message = message
        super().__init__(self._describe())

    def _describe(self) -> str:
        where = f"{self.method} {self.path}"
        if self.status is None:
            return f"{where}: {self.message}"
        return f"{where} answered {self.status}: {self.message}; body: {body_excerpt(self.body)}"

    @property
    def field_errors(self) -> dict[str, str]:
        """Map each field the server rejected to its message, when the body lists them."""
        details = self.body.get("details") if isinstance(self.body, dict) else None
        if not isinstance(details, list):
            return {}

        return {
            str(item.get("field")): str(item.get("message"))
            for item in details
            if isinstance(item, dict) and item.get("field")
        }


class OnTrackNotFoundError(OnTrackApiError):
    """The record or path does not exist (``404``)."""


class OnTrackUnauthorizedError(OnTrackApiError):
    """The API refused a freshly issued token (``401`` twice in a row)."""


class OnTrackRateLimitError(OnTrackApiError):
    """The API kept answering ``429 Too Many Requests`` after every retry."""


class OnTrackTransportError(OnTrackApiError):
    """No usable answer arrived: a timeout or a dropped connection, after every retry."""


class OnTrackAmbiguousWriteError(OnTrackTransportError):
    """A create call failed in a way that leaves open whether ON!Track stored the record.

    The call is not repeated, since repeating it could create the record twice. Look the record up
    by its ``externalId`` before writing it again.
    """


class OnTrackUnsupportedOperationError(OnTrackError):
    """The ON!Track API does not offer this operation (for example deleting a worker)."""

"""Connection settings of an ON!Track tenant, read and checked before any network call."""

from __future__ import annotations

import base64
import html
import ipaddress
import math
import re
from dataclasses import dataclass, field, fields
from typing import Any, Mapping
from urllib.parse import quote, quote_plus, urlsplit

from airflow_provider_ontrack.client.errors import OnTrackConfigError

DEFAULT_CONN_ID = "ontrack_default"
DEFAULT_BASE_URL = "https://cloudapis.hilti.com/ts/ontrack/unite/v1"
DEFAULT_AUTH_URL = "https://cloudsso.hilti.com/hc/token"
DEFAULT_SCOPE = "HC.Request.AllScopes"

RESOURCES = ("workers", "locations", "assets", "transfers")


@dataclass(frozen=True)
class OnTrackSettings:
    """Everything the client needs to reach one ON!Track tenant as one technical user.

    Names marked as assumed in the docs (paging parameters, envelope keys, paths other than
    ``/locations``) are settings too, so that a difference in production is a connection change,
    not a code change.
    """

    base_url: str
    client_id: str
    client_secret: str = field(repr=False)
    username: str
    password: str = field(repr=False)
    auth_url: str = DEFAULT_AUTH_URL
    scope: str = DEFAULT_SCOPE
    calls_per_second: float = 2.0
    page_size: int = 100
    max_page_size: int = 500
    timeout: float = 30.0
    max_retries: int = 5
    retry_delay: float = 1.0
    max_retry_delay: float = 60.0
    page_param: str = "page"
    page_size_param: str = "pageSize"
    result_key: str = "result"
    page_number_key: str = "pageNumber"
    page_size_key: str = "pageSize"
    total_key: str = "totalRecords"
    workers_path: str = "/workers"
    locations_path: str = "/locations"
    assets_path: str = "/assets"
    transfers_path: str = "/transfers"

    @property
    def secrets(self) -> tuple[str, ...]:
        """The values that must never appear in a log line, an exception or an XCom."""
        return tuple(value for value in (self.client_secret, self.password) if value)

    @property
    def secret_forms(self) -> tuple[str, ...]:
        """The secrets and the encoded forms in which a server could echo them back.

        A token endpoint that repeats its request shows the password URL-encoded and the client
        credentials as the Base64 of a Basic authorization header; an HTML error page shows them
        HTML-escaped.
        """
        basic = base64.b64encode(f"{self.client_id}:{self.client_secret}".encode()).decode()
        forms = {basic}
        for secret in self.secrets:
            forms.update((secret, quote_plus(secret), quote(secret, safe=""), html.escape(secret)))
        # Longest first, so that a form containing another is replaced whole.
        return tuple(sorted(forms, key=len, reverse=True))

    def path_for(self, resource: str) -> str:
        """Return the collection path of ``workers``, ``locations``, ``assets`` or ``transfers``."""
        if resource not in RESOURCES:
            raise OnTrackConfigError("resource", f"must be one of {', '.join(RESOURCES)}, got {resource!r}")
        return getattr(self, f"{resource}_path")

    @classmethod
    def from_connection_fields(
        cls,
        *,
        host: str | None,
        login: str | None,
        password: str | None,
        extra: Mapping[str, Any] | None,
        port: int | None = None,
        schema: str | None = None,
    ) -> OnTrackSettings:
        """Build settings from the parts of an Airflow connection, naming the field of any problem.

        The host is the whole base URL. A connection written as a URI
        (``ontrack://user:password@cloudapis.hilti.com/ts/ontrack/unite/v1?client_id=...``) arrives
        split into host, port and schema; they are put back together. Extras may use the plain
        name (``client_id``) or the legacy prefixed one (``extra__ontrack__client_id``).
        """
        if extra is None:
            extra = {}
        if not isinstance(extra, Mapping):
            # Only the type is named: the value may well hold the client secret.
            raise OnTrackConfigError(
                "extra",
                'must be a JSON object of settings such as {"client_id": "..."}, '
                f"got {type(extra).__name__}",
            )
        extras = _plain_extras(extra)
        unknown = sorted(set(extras) - _EXTRA_NAMES)
        if unknown:
            raise OnTrackConfigError(
                unknown[0],
                "is not a setting of an ON!Track connection; known extras are "
                + ", ".join(sorted(_EXTRA_NAMES)),
            )

        values: dict[str, Any] = {
            "base_url": _base_url(host, port, schema),
            "username": _required_text("login", login, "the technical user's name"),
            "password": _required_text(
                "password", password, "the technical user's generated password", secret=True
            ),
            "client_id": _required_text("client_id", extras.get("client_id"), "the client ID Hilti issued"),
            "client_secret": _required_text(
                "client_secret", extras.get("client_secret"), "the client secret Hilti issued", secret=True
            ),
        }
        if _present(extras.get("auth_url")):
            values["auth_url"] = _url("auth_url", extras["auth_url"])
        for name in _TEXT_EXTRAS:
            if _present(extras.get(name)):
                values[name] = _text(name, extras[name])
        for name in _PATH_EXTRAS:
            if _present(extras.get(name)):
                values[name] = _path(name, extras[name])
        for name, (kind, low, high) in _NUMBER_EXTRAS.items():
            if _present(extras.get(name)):
                values[name] = _number(name, extras[name], kind, low, high)

        settings = cls(**values)
        if settings.page_size > settings.max_page_size:
            # Asking for more than the server serves is harmless, but it reads as a mistake: say so.
            raise OnTrackConfigError(
                "page_size",
                f"{settings.page_size} is above max_page_size {settings.max_page_size}; raise max_page_size "
                "if your tenant serves larger pages",
            )
        return settings


_TEXT_EXTRAS = (
    "scope",
    "page_param",
    "page_size_param",
    "result_key",
    "page_number_key",
    "page_size_key",
    "total_key",
)
_PATH_EXTRAS = ("workers_path", "locations_path", "assets_path", "transfers_path")
# name: (type, smallest allowed, largest allowed)
_NUMBER_EXTRAS: dict[str, tuple[type, float, float]] = {
    "calls_per_second": (float, 0.01, 1000.0),
    "page_size": (int, 1, 100_000),
    "max_page_size": (int, 1, 100_000),
    "timeout": (float, 0.1, 3600.0),
    "max_retries": (int, 0, 20),
    "retry_delay": (float, 0.0, 600.0),
    "max_retry_delay": (float, 0.0, 3600.0),
}
_EXTRA_NAMES = frozenset(
    {"client_id", "client_secret", "auth_url", *_TEXT_EXTRAS, *_PATH_EXTRAS, *_NUMBER_EXTRAS}
)
_LEGACY_PREFIX = "extra__ontrack__"
SETTING_NAMES = frozenset(f.name for f in fields(OnTrackSettings))


def _plain_extras(extra: Mapping[str, Any]) -> dict[str, Any]:
    plain: dict[str, Any] = {}
    for key, value in extra.items():
        name = key[len(_LEGACY_PREFIX) :] if key.startswith(_LEGACY_PREFIX) else key
        # A plain key wins over its legacy twin, which older connection forms may have left behind,
        # unless it is empty: a form may save every field, filled or not.
        if name not in plain or (key == name and _present(value)) or not _present(plain[name]):
            plain[name] = value
    return plain


def _present(value: Any) -> bool:
    return value is not None and not (isinstance(value, str) and not value.strip())


def _text(name: str, value: Any, *, strip: bool = True) -> str:
    if not isinstance(value, str):
        raise OnTrackConfigError(name, f"must be text, got {type(value).__name__}")
    return value.strip() if strip else value


def _required_text(name: str, value: Any, what: str, *, secret: bool = False) -> str:
    if not _present(value):
        raise OnTrackConfigError(name, f"is missing; set it to {what}")
    # A secret is used exactly as given: a space may be part of it.
    return _text(name, value, strip=not secret)


def _path(name: str, value: Any) -> str:
    text = _text(name, value)
    if "://" in text or "?" in text or " " in text:
        raise OnTrackConfigError(name, f"must be a path such as /assets, got {text!r}")
    return "/" + text.strip("/")


def _number(name: str, value: Any, kind: type, low: float, high: float) -> int | float:
    try:
        if isinstance(value, bool):
            raise ValueError
        number = float(value)
        if kind is int and not number.is_integer():
            raise ValueError
    except (TypeError, ValueError, OverflowError):
        wanted = "a whole number" if kind is int else "a number"
        raise OnTrackConfigError(name, f"must be {wanted}, got {value!r}") from None

    if math.isnan(number) or not low <= number <= high:
        raise OnTrackConfigError(name, f"must be between {low:g} and {high:g}, got {value!r}")
    return int(number) if kind is int else number


def _base_url(host: str | None, port: int | None, schema: str | None) -> str:
    if not _present(host):
        if port or _present(schema):
            raise OnTrackConfigError(
                "host", "is missing, but a port or schema is set; give the whole base URL"
            )
        return DEFAULT_BASE_URL

    base = _url("host", host)
    parts = urlsplit(base)
    netloc, path = parts.netloc, parts.path
    if port:
        if parts.port not in (None, port):
            raise OnTrackConfigError("port", f"{port} differs from the port in the host URL {base!r}")
        netloc = f"{parts.hostname if ':' not in parts.hostname else f'[{parts.hostname}]'}:{port}"
    if _present(schema):
        wanted = "/" + _text("schema", schema).strip("/")
        if path not in ("", "/", wanted):
            raise OnTrackConfigError("schema", f"{wanted!r} differs from the path in the host URL {base!r}")
        path = wanted
    return _url("host", f"{parts.scheme}://{netloc}{path}")


def _url(name: str, value: Any) -> str:
    text = _text(name, value)
    if re.search(r"\s", text):
        raise OnTrackConfigError(name, "must not contain spaces or other whitespace")
    if "://" not in text:
        if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:/", text):
            raise OnTrackConfigError(name, f"is not a valid URL: {text!r}")
        text = "https://" + text

    parts = urlsplit(text)
    if "@" in parts.netloc:
        raise OnTrackConfigError(name, "must not carry a user name or password; use the connection's fields")
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise OnTrackConfigError(name, f"must be an https:// URL, got {text!r}")
    if "?" in text or "#" in text:
        raise OnTrackConfigError(name, f"must not have a query or fragment, got {text!r}")
    try:
        _ = parts.port  # urllib checks the port only when asked for it
    except ValueError:
        raise OnTrackConfigError(name, f"has an invalid port: {text!r}") from None
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        raise OnTrackConfigError(
            name, f"must use https://; plain http:// is accepted only for loopback hosts, got {text!r}"
        )
    return text.rstrip("/")


def is_loopback(hostname: str) -> bool:
    """Tell whether a host name points at this machine, the only place plain HTTP is allowed."""
    if hostname.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(hostname.strip("[]")).is_loopback
    except ValueError:
        return False

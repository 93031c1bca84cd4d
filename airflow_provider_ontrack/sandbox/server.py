"""The sandbox's HTTP server: token endpoint, ON!Track Unite API, behaviour settings, faults and stats.

``OnTrackSandbox`` owns a ``Tenant`` and serves it over HTTP from a daemon thread. Everything a test may
want to provoke (expiring or revoked tokens, rate limiting, sloppy token answers, injected failures) can be
set from Python or over the ``/_sandbox/`` admin endpoints.
"""

from __future__ import annotations

import base64
import contextlib
import email.utils
import json
import math
import secrets
import socket
import sys
import threading
import time
import traceback
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from airflow_provider_ontrack.sandbox.tenant import (
    RESOURCES,
    NotFoundError,
    Tenant,
    ValidationError,
    parse_timestamp,
)

SANDBOX_CLIENT_ID = "sandbox-client-id"
SANDBOX_CLIENT_SECRET = "sandbox-client-secret-7f3a9c"
SANDBOX_USERNAME = "techuser-sandbox@api-user.hilti.cloud"
SANDBOX_PASSWORD = "sandbox-password-2b8e41"

BASE_PATH = "/ts/ontrack/unite/v1"
TOKEN_PATH = "/hc/token"
ADMIN_PATH = "/_sandbox"

DEFAULT_SCOPE = "HC.Request.AllScopes"
GRANTED_SCOPE = (
    "openid profile HC.Request.AllScopes TS.ONTrack.Unite.Assets.Read TS.ONTrack.Unite.Assets.Write "
    "TS.ONTrack.Unite.Locations.Read TS.ONTrack.Unite.Locations.Write TS.ONTrack.Unite.Workers.Read "
    "TS.ONTrack.Unite.Workers.Write"
)
_KNOWN_SCOPES = frozenset(scope.lower() for scope in GRANTED_SCOPE.split())

TOKEN_STYLES = ("standard", "string_expiry", "no_expiry", "lowercase_type")
RETRY_AFTER_FORMATS = ("seconds", "http-date")
MAX_WINDOW = timedelta(days=90)
JSON_TYPE = "application/json; charset=utf-8"

DEFAULT_CONFIG: dict[str, Any] = {
    "token_lifetime": 3600.0,
    "rate_limit": 0.0,
    "token_style": "standard",
    "transfer_completion_delay": 0.0,
    "retry_after_format": "seconds",
    "max_page_size": 500,
}

_MAX_BODY = 32 * 1024 * 1024
# How many API calls ``call_log()`` remembers; older ones drop out so a long-running sandbox stays small.
CALL_LOG_SIZE = 100_000
_FAULT_FIELDS = frozenset(
    ("method", "path", "status", "count", "body", "content_type", "headers", "delay", "drop", "after_effect")
)


# ---------------------------------------------------------------------------------------------------------
# Replies and faults
# ---------------------------------------------------------------------------------------------------------


@dataclass
class _Reply:
    """What the handler sends: status, headers, body, and how to misbehave (delay, drop)."""

    status: int
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)
    delay: float = 0.0
    drop: bool = False


def _encode(payload: Any) -> bytes:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _json_reply(status: int, payload: Any, headers: list[tuple[str, str]] | None = None) -> _Reply:
    return _Reply(status, _encode(payload), [("Content-Type", JSON_TYPE), *(headers or [])])


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _error(
    status: int,
    message: str,
    details: list[dict[str, str]] | None = None,
    headers: list[tuple[str, str]] | None = None,
) -> _Reply:
    payload: dict[str, Any] = {"status": status, "error": _phrase(status), "message": message}
    if details is not None:
        payload["details"] = details
    return _json_reply(status, payload, headers)


def _oauth_error(
    status: int, code: str, description: str, headers: list[tuple[str, str]] | None = None
) -> _Reply:
    extra = [("Cache-Control", "no-store"), ("Pragma", "no-cache"), *(headers or [])]
    return _json_reply(status, {"error": code, "error_description": description}, extra)


def _normalize_path(path: str) -> str:
    """A fault path relative to the API base (``/assets``); the token path stays ``/hc/token``."""
    path = path.strip()
    if path.startswith(BASE_PATH):
        path = path[len(BASE_PATH) :]
    path = "/" + path.strip("/")
    return path


@dataclass
class _Fault:
    """A queued misbehaviour for the next ``remaining`` requests matching ``method`` and ``path``."""

    fault_id: str
    method: str | None
    path: str
    status: int | None
    remaining: int
    body: bytes
    content_type: str
    headers: dict[str, str]
    delay: float
    drop: bool
    after_effect: bool

    def matches(self, method: str, path: str, template: str) -> bool:
        if self.method not in (None, "*", method):
            return False
        return self.path in (path, template)

    def reply(self) -> _Reply:
        headers = [("Content-Type", self.content_type)]
        headers = [pair for pair in headers if pair[0].lower() not in {k.lower() for k in self.headers}]
        headers.extend(self.headers.items())
        return _Reply(self.status or 500, self.body, headers, self.delay, self.drop)

    def describe(self) -> dict[str, Any]:
        return {
            "id": self.fault_id,
            "method": self.method,
            "path": self.path,
            "status": self.status,
            "count": self.remaining,
            "content_type": self.content_type,
            "headers": dict(self.headers),
            "delay": self.delay,
            "drop": self.drop,
            "after_effect": self.after_effect,
        }


def _build_fault(spec: Mapping[str, Any]) -> _Fault:
    """Check a fault description (as JSON or keyword arguments) and turn it into a ``_Fault``."""
    unknown = sorted(set(spec) - _FAULT_FIELDS)
    if unknown:
        raise ValueError(f"unknown fault field(s): {', '.join(unknown)}")

    path = spec.get("path")
    if not isinstance(path, str) or not path.strip():
        raise ValueError("path must be a non-empty string such as '/assets' or '/assets/{id}'")

    method = spec.get("method")
    if method is not None and not isinstance(method, str):
        raise ValueError("method must be a string")

    # An explicit null status lets the request through normally, only delayed or dropped.
    status = spec.get("status", 500)
    bad_status = isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599
    if status is not None and bad_status:
        raise ValueError("status must be an integer from 100 to 599, or null")

    count = spec.get("count", 1)
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError("count must be a positive integer")

    delay = spec.get("delay", 0) or 0
    if isinstance(delay, bool) or not isinstance(delay, (int, float)) or not 0 <= delay <= 600:
        raise ValueError("delay must be a number of seconds from 0 to 600")

    headers = spec.get("headers") or {}
    if not isinstance(headers, dict):
        raise ValueError("headers must be an object")
    headers = {str(name): str(value) for name, value in headers.items()}

    body = spec.get("body")
    content_type = spec.get("content_type")
    if body is None:
        code = status or 500
        raw = _encode({"status": code, "error": _phrase(code), "message": "Fault injected by the sandbox"})
        content_type = content_type or JSON_TYPE
    elif isinstance(body, str):
        raw = body.encode("utf-8")
        content_type = content_type or "text/plain; charset=utf-8"
    else:
        raw = _encode(body)
        content_type = content_type or JSON_TYPE

    return _Fault(
        fault_id=str(uuid.uuid4()),
        method=method.upper() if method else None,
        path=_normalize_path(path),
        status=status,
        remaining=count,
        body=raw,
        content_type=str(content_type),
        headers=headers,
        delay=float(delay),
        drop=bool(spec.get("drop", False)),
        after_effect=bool(spec.get("after_effect", False)),
    )


def _check_config(changes: Mapping[str, Any]) -> list[dict[str, str]]:
    """Problems with a settings change, as ``{"field", "message"}`` details."""
    details: list[dict[str, str]] = []

    def is_number(value: Any) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)

    for key, value in changes.items():
        if key not in DEFAULT_CONFIG:
            details.append({"field": key, "message": "unknown setting"})
        elif key == "token_lifetime" and not (is_number(value) and value > 0):
            details.append({"field": key, "message": "must be a number of seconds above 0"})
        elif key in ("rate_limit", "transfer_completion_delay") and not (is_number(value) and value >= 0):
            details.append({"field": key, "message": "must be a number of at least 0"})
        elif key == "token_style" and value not in TOKEN_STYLES:
            details.append({"field": key, "message": f"must be one of {', '.join(TOKEN_STYLES)}"})
        elif key == "retry_after_format" and value not in RETRY_AFTER_FORMATS:
            details.append({"field": key, "message": f"must be one of {', '.join(RETRY_AFTER_FORMATS)}"})
        elif key == "max_page_size" and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            details.append({"field": key, "message": "must be an integer of at least 1"})

    return details


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _json_body(body: bytes) -> Any:
    """The parsed request body; raises ``ValidationError`` when it is missing or not JSON."""
    if not body.strip():
        raise ValidationError("Request body is required")

    try:
        return json.loads(body.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ValidationError(f"Malformed JSON request body: {exc}") from None


def _template(segments: list[str]) -> str:
    """The path with ids replaced, e.g. ``/assets/{id}``: how calls are counted and faults matched."""
    if not segments:
        return "/"
    return "/" + "/".join([segments[0]] + ["{id}"] * (len(segments) - 1))


# ---------------------------------------------------------------------------------------------------------
# The sandbox
# ---------------------------------------------------------------------------------------------------------


class OnTrackSandbox:
    """A local stand-in for Hilti's token endpoint and the ON!Track Unite API, on loopback only.

    Use ``start()``/``stop()`` or a ``with`` block. ``port=0`` picks a free port.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        seed: int = 7,
        token_lifetime: float = 3600,
        rate_limit: float = 0,
        now: datetime | str | None = None,
        *,
        client_id: str = SANDBOX_CLIENT_ID,
        client_secret: str = SANDBOX_CLIENT_SECRET,
        username: str = SANDBOX_USERNAME,
        password: str = SANDBOX_PASSWORD,
        worker_count: int = 25,
        location_count: int = 12,
        asset_count: int = 1500,
        token_style: str = "standard",
        transfer_completion_delay: float = 0,
        retry_after_format: str = "seconds",
        max_page_size: int = 500,
        verbose: bool = False,
    ) -> None:
        self.host = host
        self.client_id = client_id
        self.client_secret = client_secret
        self.username = username
        self.password = password
        self.verbose = verbose
        self._requested_port = port
        self._port: int | None = port or None

        self._lock = threading.Lock()
        self._config = dict(DEFAULT_CONFIG)
        self._accepted: deque[float] = deque()
        self.set_config(
            token_lifetime=token_lifetime,
            rate_limit=rate_limit,
            token_style=token_style,
            transfer_completion_delay=transfer_completion_delay,
            retry_after_format=retry_after_format,
            max_page_size=max_page_size,
        )

        self.tenant = Tenant(
            seed=seed,
            now=now,
            worker_count=worker_count,
            location_count=location_count,
            asset_count=asset_count,
        )
        self._tokens: dict[str, list[Any]] = {}
        self._faults: list[_Fault] = []
        self._zero_counters()

        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- life cycle -----------------------------------------------------------------------------------------

    def start(self) -> OnTrackSandbox:
        """Bind (to ``host`` only) and serve from a daemon thread; returns ``self``."""
        if self._server is not None:
            return self

        self._server = _Server((self.host, self._requested_port), self)
        self._port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name="ontrack-sandbox",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close every open connection."""
        server, thread = self._server, self._thread
        if server is None:
            return

        self._server = None
        server.shutdown()
        server.close_connections()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> OnTrackSandbox:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = self.url if self._port else "not started"
        return f"OnTrackSandbox({where}, seed={self.tenant.seed})"

    # -- addresses ------------------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The bound port (known after ``start()`` when port 0 was asked for)."""
        if self._port is None:
            raise RuntimeError("the sandbox has not been started yet, so its port is not known")
        return self._port

    @property
    def url(self) -> str:
        """``http://host:port``."""
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """Root of the ON!Track Unite API."""
        return self.url + BASE_PATH

    @property
    def token_url(self) -> str:
        """The OAuth token endpoint."""
        return self.url + TOKEN_PATH

    # -- settings, tokens, faults, stats --------------------------------------------------------------------

    @property
    def config(self) -> dict[str, Any]:
        """A copy of the current behaviour settings."""
        with self._lock:
            return dict(self._config)

    def set_config(self, **changes: Any) -> dict[str, Any]:
        """Change behaviour settings at run time; returns the new settings. Raises ``ValueError``."""
        details = _check_config(changes)
        if details:
            raise ValueError("; ".join(f"{item['field']}: {item['message']}" for item in details))

        with self._lock:
            for key, value in changes.items():
                self._config[key] = float(value) if isinstance(DEFAULT_CONFIG[key], float) else value

            # A new limit starts with an empty window, so its effect is predictable from the first call.
            if "rate_limit" in changes:
                self._accepted.clear()
            return dict(self._config)

    def grant_token(self) -> str:
        """A valid access token without going through HTTP (not counted in stats)."""
        with self._lock:
            return self._new_token()

    def issued_tokens(self) -> list[str]:
        """Every access token handed out so far (live, expired or revoked), oldest first.

        Meant for tests that check no token leaks into logs; tokens dead for over an hour may be forgotten
        once more than 10,000 have been handed out.
        """
        with self._lock:
            return list(self._tokens)

    def revoke_tokens(self) -> int:
        """Invalidate every token handed out so far; returns how many were still valid."""
        now = time.monotonic()
        with self._lock:
            live = 0
            for entry in self._tokens.values():
                if not entry[1] and entry[0] > now:
                    live += 1
                entry[1] = True
            return live

    def add_fault(self, **spec: Any) -> dict[str, Any]:
        """Queue a fault (see the ``/_sandbox/faults`` description); returns it. Raises ``ValueError``."""
        fault = _build_fault(spec)
        with self._lock:
            self._faults.append(fault)
        return fault.describe()

    def faults(self) -> list[dict[str, Any]]:
        """The faults still queued."""
        with self._lock:
            return [fault.describe() for fault in self._faults]

    def clear_faults(self) -> int:
        """Drop every queued fault; returns how many there were."""
        with self._lock:
            count = len(self._faults)
            self._faults.clear()
            return count

    def stats(self) -> dict[str, Any]:
        """Token requests, API calls per method and path template, and rate-limit rejections."""
        with self._lock:
            return {
                "token_requests": self._token_requests,
                "token_failures": self._token_failures,
                "calls": dict(sorted(self._calls.items())),
                "total_calls": self._total_calls,
                "rejected_429": self._rejected,
            }

    def call_log(self) -> list[dict[str, Any]]:
        """The API calls since the counters were last zeroed, in the order they were answered.

        Each entry has ``at`` (``time.monotonic()`` in this process when the call arrived, the clock
        the rate limit counts with), ``method``, ``path`` (below the API base, such as
        ``/assets/<id>``), ``template`` (``/assets/{id}``) and the ``status`` answered. A test in the
        same process can thus count calls per time window or per record. Token requests and admin
        calls are not in it; only the last ``CALL_LOG_SIZE`` calls are kept.
        """
        with self._lock:
            return [
                {"at": at, "method": method, "path": path, "template": template, "status": status}
                for at, method, path, template, status in self._call_log
            ]

    def reset_stats(self) -> None:
        """Zero every counter and empty the call log."""
        with self._lock:
            self._zero_counters()

    def reset(self) -> None:
        """Restore the seeded tenant and clear faults; settings, tokens and counters stay."""
        self.tenant.reset()
        self.clear_faults()

    def _zero_counters(self) -> None:
        self._token_requests = 0
        self._token_failures = 0
        self._calls: dict[str, int] = {}
        self._total_calls = 0
        self._rejected = 0
        self._call_log: deque[tuple[float, str, str, str, int]] = deque(maxlen=CALL_LOG_SIZE)

    def _take_fault(self, method: str, path: str, template: str) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.matches(method, path, template):
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self._faults.remove(fault)
                    return fault
        return None

    @staticmethod
    def _with_fault(fault: _Fault | None, run: Callable[[], _Reply], on_skip: Callable[[], None]) -> _Reply:
        """Answer a request under ``fault``: instead of, after, or (status null) around normal handling."""
        if fault is None:
            return run()

        if fault.status is None:
            reply = run()
            reply.delay, reply.drop = fault.delay, fault.drop
            return reply

        if fault.after_effect:
            run()
        else:
            on_skip()
        return fault.reply()

    # -- request entry point --------------------------------------------------------------------------------

    def handle(self, method: str, path: str, query: str, headers: Mapping[str, str], body: bytes) -> _Reply:
        """Answer one HTTP request (called by the handler threads)."""
        if path.rstrip("/") == TOKEN_PATH:
            fault = self._take_fault(method, TOKEN_PATH, TOKEN_PATH)
            return self._with_fault(
                fault, lambda: self._serve_token(method, headers, body), lambda: self._count_token(False)
            )

        if path == BASE_PATH or path.startswith(BASE_PATH + "/"):
            segments = [unquote(part) for part in path[len(BASE_PATH) :].split("/") if part]
            template = _template(segments)
            arrived = time.monotonic()
            with self._lock:
                key = f"{method} {template}"
                self._calls[key] = self._calls.get(key, 0) + 1
                self._total_calls += 1

            api_path = "/" + "/".join(segments)
            fault = self._take_fault(method, api_path, template)
            reply = self._with_fault(
                fault, lambda: self._serve_api(method, segments, query, headers, body), lambda: None
            )
            with self._lock:
                self._call_log.append((arrived, method, api_path, template, reply.status))
            return reply

        if path == ADMIN_PATH or path.startswith(ADMIN_PATH + "/"):
            return self._serve_admin(method, "/" + path[len(ADMIN_PATH) :].strip("/"), body)

        return _error(404, f"No endpoint {method} {path}")

    # -- token endpoint -------------------------------------------------------------------------------------

    def _count_token(self, success: bool) -> None:
        with self._lock:
            if success:
                self._token_requests += 1
            else:
                self._token_failures += 1

    def _new_token(self) -> str:
        token = "sbx." + secrets.token_urlsafe(32)
        now = time.monotonic()
        self._tokens[token] = [now + self._config["token_lifetime"], False]

        # Forget long-dead tokens so a long-running sandbox does not grow without bound.
        if len(self._tokens) > 10_000:
            cutoff = now - 3600
            for old in [key for key, entry in self._tokens.items() if entry[0] < cutoff]:
                del self._tokens[old]

        return token

    def _client_ok(self, headers: Mapping[str, str]) -> bool:
        scheme, _, encoded = (headers.get("Authorization") or "").strip().partition(" ")
        if scheme.lower() != "basic":
            return False

        try:
            decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            return False

        client_id, sep, client_secret = decoded.partition(":")
        if not sep:
            return False

        # Clients that form-encode the credentials first (as RFC 6749 asks) must work too.
        pairs = {(client_id, client_secret), (unquote(client_id), unquote(client_secret))}
        return any(
            secrets.compare_digest(cid.encode(), self.client_id.encode())
            and secrets.compare_digest(secret.encode(), self.client_secret.encode())
            for cid, secret in pairs
        )

    def _serve_token(self, method: str, headers: Mapping[str, str], body: bytes) -> _Reply:
        reply = self._token_reply(method, headers, body)
        self._count_token(reply.status == 200)
        return reply

    def _token_reply(self, method: str, headers: Mapping[str, str], body: bytes) -> _Reply:
        if method != "POST":
            allow = [("Allow", "POST")]
            return _oauth_error(405, "invalid_request", "The token endpoint only accepts POST", allow)

        if not self._client_ok(headers):
            return _oauth_error(
                401,
                "invalid_client",
                "Unknown client or wrong client secret",
                [("WWW-Authenticate", 'Basic realm="hc"')],
            )

        content_type = (headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if content_type != "application/x-www-form-urlencoded":
            return _oauth_error(
                400, "invalid_request", "The body must be application/x-www-form-urlencoded form data"
            )

        try:
            parsed = parse_qs(body.decode("utf-8"), keep_blank_values=True)
            form = {key: values[0] for key, values in parsed.items()}
        except (UnicodeDecodeError, ValueError):
            return _oauth_error(400, "invalid_request", "The form body could not be read")

        grant_type = form.get("grant_type")
        if not grant_type:
            return _oauth_error(400, "invalid_request", "Missing parameter: grant_type")
        if grant_type != "password":
            return _oauth_error(400, "unsupported_grant_type", f"Grant type '{grant_type}' is not supported")

        for name in ("username", "password"):
            if not form.get(name):
                return _oauth_error(400, "invalid_request", f"Missing parameter: {name}")

        requested = form.get("scope") or DEFAULT_SCOPE
        unknown = [scope for scope in requested.split() if scope.lower() not in _KNOWN_SCOPES]
        if unknown:
            return _oauth_error(400, "invalid_scope", f"Unknown scope: {' '.join(unknown)}")

        user_ok = form["username"].strip().lower() == self.username.lower()
        password_ok = secrets.compare_digest(form["password"].encode(), self.password.encode())
        if not (user_ok and password_ok):
            return _oauth_error(403, "invalid_grant", "Wrong email or password.")

        with self._lock:
            token = self._new_token()
            lifetime = self._config["token_lifetime"]
            style = self._config["token_style"]

        seconds = max(1, int(lifetime))
        payload: dict[str, Any] = {
            "access_token": token,
            "token_type": "bearer" if style == "lowercase_type" else "Bearer",
            "expires_in": str(seconds) if style == "string_expiry" else seconds,
            "scope": GRANTED_SCOPE,
        }
        if style == "no_expiry":
            del payload["expires_in"]

        return _json_reply(200, payload, [("Cache-Control", "no-store"), ("Pragma", "no-cache")])

    # -- API ------------------------------------------------------------------------------------------------

    def _admit(self) -> _Reply | None:
        """Apply the rate limit: ``None`` when the request may go on, else the 429 answer."""
        with self._lock:
            now = time.monotonic()
            while self._accepted and self._accepted[0] <= now - 1.0:
                self._accepted.popleft()

            limit = self._config["rate_limit"]
            if limit > 0 and len(self._accepted) >= limit:
                self._rejected += 1
                style = self._config["retry_after_format"]
            else:
                self._accepted.append(now)
                return None

        if style == "http-date":
            retry_after = email.utils.formatdate(math.ceil(time.time()) + 1, usegmt=True)
        else:
            retry_after = "1"
        message = f"Rate limit of {limit:g} requests per second exceeded"
        return _error(429, message, headers=[("Retry-After", retry_after)])

    def _authorize(self, headers: Mapping[str, str]) -> _Reply | None:
        """``None`` for a live bearer token, else the 401 answer (which never repeats the token)."""
        scheme, _, token = (headers.get("Authorization") or "").strip().partition(" ")
        token = token.strip()
        challenge = [("WWW-Authenticate", 'Bearer realm="ontrack", error="invalid_token"')]
        if scheme.lower() != "bearer" or not token:
            message = "Full authentication is required: send an Authorization: Bearer header"
            return _error(401, message, headers=[("WWW-Authenticate", 'Bearer realm="ontrack"')])

        with self._lock:
            entry = self._tokens.get(token)
            expires_at, revoked = entry if entry else (0.0, False)

        if entry is None:
            return _error(401, "The access token is invalid", headers=challenge)
        if revoked:
            return _error(401, "The access token is invalid: it has been revoked", headers=challenge)
        if time.monotonic() >= expires_at:
            return _error(401, "The access token has expired", headers=challenge)
        return None

    def _serve_api(
        self, method: str, segments: list[str], query: str, headers: Mapping[str, str], body: bytes
    ) -> _Reply:
        refused = self._admit() or self._authorize(headers)
        if refused is not None:
            return refused

        try:
            return self._route(method, segments, query, body)
        except ValidationError as exc:
            return _error(400, exc.message, exc.details)
        except NotFoundError as exc:
            return _error(404, exc.message)

    def _route(self, method: str, segments: list[str], query: str, body: bytes) -> _Reply:
        path = "/" + "/".join(segments)
        resource = segments[0] if segments else ""

        if resource in RESOURCES and len(segments) == 1:
            if method == "GET":
                return self._list(resource, query)
            if method == "POST":
                return self._create(resource, body)
            return _error(405, f"{method} is not supported on {path}", headers=[("Allow", "GET, POST")])

        if resource in RESOURCES and len(segments) == 2:
            record_id = segments[1]
            if method == "GET":
                record = self.tenant.get(resource, record_id)
                if record is None:
                    raise NotFoundError(f"{resource[:-1].capitalize()} {record_id} not found")
                return _json_reply(200, record)
            if method == "PUT":
                return _json_reply(200, self.tenant.update(resource, record_id, _json_body(body)))
            if method == "DELETE":
                message = f"{resource.capitalize()} cannot be deleted"
                return _error(405, message, headers=[("Allow", "GET, PUT")])
            return _error(405, f"{method} is not supported on {path}", headers=[("Allow", "GET, PUT")])

        if resource == "transfers" and len(segments) == 1:
            if method != "POST":
                return _error(405, f"{method} is not supported on {path}", headers=[("Allow", "POST")])
            with self._lock:
                delay = self._config["transfer_completion_delay"]
            done = self.tenant.transfer(_json_body(body), completion_delay=delay)
            answer = {key: done[key] for key in ("transferId", "status", "assetIds")}
            return _json_reply(201, answer, [("Location", f"{BASE_PATH}/transfers/{done['transferId']}")])

        if resource == "transfers" and len(segments) == 2:
            if method != "GET":
                return _error(405, f"{method} is not supported on {path}", headers=[("Allow", "GET")])
            found = self.tenant.get_transfer(segments[1])
            if found is None:
                raise NotFoundError(f"Transfer {segments[1]} not found")
            return _json_reply(200, found)

        return _error(404, f"No endpoint {method} {path}")

    def _create(self, resource: str, body: bytes) -> _Reply:
        record = self.tenant.create(resource, _json_body(body))
        return _json_reply(201, record, [("Location", f"{BASE_PATH}/{resource}/{record['id']}")])

    def _list(self, resource: str, query: str) -> _Reply:
        params = {key: values[0] for key, values in parse_qs(query, keep_blank_values=True).items()}
        details: list[dict[str, str]] = []

        page = _positive_int(params, "page", 1, details)
        size = _positive_int(params, "pageSize", 100, details)
        start, end, too_long = self._change_window(params, details)
        if details:
            message = "The change window may span at most 90 days" if too_long else "Invalid query parameters"
            raise ValidationError(message, details)

        with self._lock:
            served = min(size, self._config["max_page_size"])
        records, total = self.tenant.list_page(resource, page, served, start, end)
        return _json_reply(
            200, {"result": records, "pageNumber": page, "pageSize": served, "totalRecords": total}
        )

    def _change_window(
        self, params: dict[str, str], details: list[dict[str, str]]
    ) -> tuple[datetime | None, datetime | None, bool]:
        """Read startDate/endDate or daysSinceLastModified into ``(start, end, window_too_long)``."""
        start_text = params.get("startDate")
        end_text = params.get("endDate")
        days_text = params.get("daysSinceLastModified")
        now = self.tenant.clock()

        if days_text is not None:
            if start_text is not None or end_text is not None:
                message = "cannot be combined with startDate or endDate"
                details.append({"field": "daysSinceLastModified", "message": message})
                return None, None, False
            try:
                days = int(days_text)
            except ValueError:
                days = 0
            if not 1 <= days <= 90:
                message = "must be an integer from 1 to 90"
                details.append({"field": "daysSinceLastModified", "message": message})
                return None, None, False
            return now - timedelta(days=days), None, False

        if start_text is None and end_text is None:
            return None, None, False

        if start_text is None:
            details.append({"field": "startDate", "message": "is required when endDate is given"})
            return None, None, False

        moments: dict[str, datetime] = {}
        for name, text in (("startDate", start_text), ("endDate", end_text)):
            if text is None:
                continue
            try:
                moments[name] = parse_timestamp(text)
            except ValueError:
                details.append({"field": name, "message": "must be an ISO 8601 date or date-time"})
        if details:
            return None, None, False

        start = moments["startDate"]
        end = moments.get("endDate")
        if start > (end or now):
            details.append({"field": "startDate", "message": "must not be after endDate"})
            return None, None, False
        if (end or now) - start > MAX_WINDOW:
            message = "must be at most 90 days before endDate (or now)"
            details.append({"field": "startDate", "message": message})
            return None, None, True

        return start, end, False

    # -- admin endpoints ------------------------------------------------------------------------------------

    def _serve_admin(self, method: str, path: str, body: bytes) -> _Reply:
        try:
            return self._admin_route(method, path, body)
        except ValidationError as exc:
            return _error(400, exc.message, exc.details)
        except ValueError as exc:
            return _error(400, str(exc))

    def _admin_route(self, method: str, path: str, body: bytes) -> _Reply:
        routes: dict[str, dict[str, Callable[[], _Reply]]] = {
            "/stats": {"GET": lambda: _json_reply(200, self.stats())},
            "/stats/reset": {"POST": lambda: (self.reset_stats(), _json_reply(200, self.stats()))[1]},
            "/config": {
                "GET": lambda: _json_reply(200, self.config),
                "POST": lambda: self._admin_config(body),
            },
            "/tokens/revoke": {"POST": lambda: _json_reply(200, {"revoked": self.revoke_tokens()})},
            "/faults": {
                "GET": lambda: _json_reply(200, {"faults": self.faults()}),
                "POST": lambda: self._admin_fault(body),
                "DELETE": lambda: _json_reply(200, {"cleared": self.clear_faults()}),
            },
            "/reset": {"POST": lambda: (self.reset(), _json_reply(200, self.tenant.counts()))[1]},
            "/tenant": {"GET": lambda: _json_reply(200, self.tenant.counts())},
        }

        methods = routes.get(path)
        if methods is None:
            return _error(404, f"No sandbox endpoint {path}")
        if method not in methods:
            return _error(
                405,
                f"{method} is not supported on {ADMIN_PATH}{path}",
                headers=[("Allow", ", ".join(methods))],
            )
        return methods[method]()

    def _admin_config(self, body: bytes) -> _Reply:
        changes = _json_body(body)
        if not isinstance(changes, dict):
            raise ValidationError("Request body must be a JSON object")

        details = _check_config(changes)
        if details:
            raise ValidationError("Invalid sandbox settings", details)
        return _json_reply(200, self.set_config(**changes))

    def _admin_fault(self, body: bytes) -> _Reply:
        spec = _json_body(body)
        if not isinstance(spec, dict):
            raise ValidationError("Request body must be a JSON object")
        return _json_reply(201, self.add_fault(**spec))


def _positive_int(params: dict[str, str], name: str, default: int, details: list[dict[str, str]]) -> int:
    text = params.get(name)
    if text is None:
        return default

    try:
        value = int(text)
    except ValueError:
        details.append({"field": name, "message": "must be an integer"})
        return default

    if value < 1:
        details.append({"field": name, "message": "must be at least 1"})
        return default
    return value


# ---------------------------------------------------------------------------------------------------------
# HTTP plumbing
# ---------------------------------------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    """Threaded HTTP server that knows its sandbox and can cut its open connections on shutdown."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], sandbox: OnTrackSandbox) -> None:
        self.sandbox = sandbox
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Wake keep-alive handler threads so that a stopped sandbox answers nothing more."""
        with self._open_lock:
            open_now = list(self._open)
        for request in open_now:
            with contextlib.suppress(OSError):
                request.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that time out and hang up are part of the game here, not worth a traceback.
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    """Reads a request, lets the sandbox answer it, and sends (or withholds) the reply."""

    protocol_version = "HTTP/1.1"
    server_version = "OnTrackSandbox/1.0"
    timeout = 120
    server: _Server

    def do_GET(self) -> None:  # noqa: N802 - name fixed by BaseHTTPRequestHandler
        self._dispatch()

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch()

    def do_PUT(self) -> None:  # noqa: N802
        self._dispatch()

    def do_DELETE(self) -> None:  # noqa: N802
        self._dispatch()

    def do_PATCH(self) -> None:  # noqa: N802
        self._dispatch()

    def _dispatch(self) -> None:
        try:
            body = self._read_body()
        except ValueError as exc:
            self.close_connection = True
            self._send(_error(400, str(exc)))
            return

        parts = urlsplit(self.path)
        try:
            reply = self.server.sandbox.handle(self.command, parts.path, parts.query, self.headers, body)
        except Exception:  # noqa: BLE001 - a sandbox bug must still produce an answer
            traceback.print_exc(file=sys.stderr)
            reply = _error(500, "Internal sandbox error")

        if reply.delay > 0:
            time.sleep(reply.delay)

        if reply.drop:
            self.close_connection = True
            self._log_line("dropped")
            return

        self._send(reply)

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            return self._read_chunked()

        length_text = self.headers.get("Content-Length")
        if not length_text:
            return b""

        try:
            length = int(length_text)
        except ValueError:
            raise ValueError("Invalid Content-Length header") from None
        if not 0 <= length <= _MAX_BODY:
            raise ValueError("Content-Length out of range")
        return self.rfile.read(length)

    def _read_chunked(self) -> bytes:
        chunks: list[bytes] = []
        total = 0
        while True:
            size_line = self.rfile.readline(1024).split(b";")[0].strip()
            try:
                size = int(size_line, 16)
            except ValueError:
                raise ValueError("Malformed chunked body") from None

            if size == 0:
                while self.rfile.readline(1024).strip():
                    pass
                return b"".join(chunks)

            total += size
            if total > _MAX_BODY:
                raise ValueError("Request body too large")
            chunks.append(self.rfile.read(size))
            self.rfile.readline(8)

    def _send(self, reply: _Reply) -> None:
        self.send_response(reply.status)
        for name, value in reply.headers:
            if name.lower() != "content-length":
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(reply.body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(reply.body)

    def version_string(self) -> str:
        return self.server_version

    def _log_line(self, outcome: object) -> None:
        if self.server.sandbox.verbose:
            # Only method, path and outcome: queries and headers may carry secrets.
            path = urlsplit(self.path).path if hasattr(self, "path") else "-"
            sys.stderr.write(f"{self.command} {path} {outcome}\n")

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        self._log_line(code)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - signature of the base class
        if self.server.sandbox.verbose:
            sys.stderr.write("sandbox: " + (format % args) + "\n")

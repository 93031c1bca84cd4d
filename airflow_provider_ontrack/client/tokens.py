"""Access tokens of the OAuth 2.0 password grant, cached per tenant and technical user.

The grant request is built with oauthlib, which requests-oauthlib is built on, but sent with a plain
``requests`` session rather than ``OAuth2Session.fetch_token``: that method logs the whole token
response at DEBUG level, before any secret masker could learn the new token, and it refuses plain
HTTP even towards a local sandbox.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import math
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import requests
from oauthlib.oauth2 import LegacyApplicationClient

from airflow_provider_ontrack.client.errors import OnTrackAuthError, body_excerpt, redact
from airflow_provider_ontrack.client.pacing import backoff_delay, parse_retry_after
from airflow_provider_ontrack.client.settings import OnTrackSettings
from airflow_provider_ontrack.client.transport import proxies_for, read_body

# When the token endpoint gives no lifetime and the token is no readable JWT, assume a short one; a
# `401` renews it earlier if the guess was too long.
FALLBACK_LIFETIME = 300.0
# Renew this long before expiry, so that a token never runs out between the check and the call.
MAX_RENEWAL_MARGIN = 120.0
# A lifetime shorter than this is taken as this, so that a server announcing a tiny one cannot make
# every call request a new token; a token that really expires sooner is renewed on its 401.
MIN_LIFETIME = 1.0
RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})
# The most of a token endpoint's answer that is read: a token answer is a few KiB at most.
TOKEN_BODY_BYTES = 2**20
# The characters of a bearer token (RFC 6750); anything else could not travel in a header.
_BEARER_TOKEN = re.compile(r"^[A-Za-z0-9\-._~+/]+=*$")


@dataclass
class AccessToken:
    """A bearer token and the monotonic time at which it stops being used."""

    value: str = field(repr=False)
    lifetime: float
    renew_at: float


@dataclass
class _TokenSlot:
    """The token of one tenant and technical user, shared by every client of the process."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    token: AccessToken | None = None
    requests_made: int = 0


_slots: dict[str, _TokenSlot] = {}
_slots_lock = threading.Lock()


def _slot_for(key: str) -> _TokenSlot:
    with _slots_lock:
        return _slots.setdefault(key, _TokenSlot())


def forget_cached_tokens() -> None:
    """Drop every cached token of this process; the next call requests a new one."""
    with _slots_lock:
        _slots.clear()


class TokenManager:
    """Hands out a valid access token, requesting a new one only when the cached one runs out.

    One token serves every client of the same token endpoint, client, technical user and scope in
    the process. When many threads need a token at once, one of them requests it and the others
    wait for it.

    :param settings: the tenant's connection settings.
    :param session: the HTTP session to send the token request with.
    :param on_secret: called with every new access token, before it is used or logged anywhere.
    :param log: where to report token requests and their retries.
    """

    def __init__(
        self,
        settings: OnTrackSettings,
        *,
        session: requests.Session,
        on_secret: Callable[[str], None] = lambda value: None,
        log: logging.Logger | logging.LoggerAdapter | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings = settings
        self._session = session
        self._on_secret = on_secret
        self._log = log or logging.getLogger(__name__)
        self._clock = clock
        self._sleep = sleep

        # A changed password gets a token of its own.
        self._slot = _slot_for(cache_key(settings))

    @property
    def requests_made(self) -> int:
        """How many token requests this process sent for this tenant and user so far."""
        return self._slot.requests_made

    def known_secrets(self) -> tuple[str, ...]:
        """Every form of a secret an answer could echo, and the current token, for scrubbing errors."""
        token = self._slot.token
        return self.settings.secret_forms + ((token.value,) if token is not None else ())

    def get(self) -> str:
        """Return a token that stays valid for at least the renewal margin."""
        with self._slot.lock:
            token = self._slot.token
            if token is None or self._clock() >= token.renew_at:
                token = self._slot.token = self._request()
            return token.value

    def discard(self, rejected: str) -> None:
        """Forget ``rejected`` after the API refused it, unless another thread already replaced it."""
        with self._slot.lock:
            if self._slot.token is not None and self._slot.token.value == rejected:
                self._slot.token = None

    def _request(self) -> AccessToken:
        settings = self.settings
        body = token_request_body(settings)

        attempt = 0
        while True:
            self._slot.requests_made += 1
            try:
                response = self._session.post(
                    settings.auth_url,
                    data=body,
                    auth=(settings.client_id, settings.client_secret),
                    headers={
                        "Content-Type": "application/x-www-form-urlencoded",
                        "Accept": "application/json",
                    },
                    timeout=settings.timeout,
                    allow_redirects=False,
                    stream=True,
                    proxies=proxies_for(settings.auth_url),
                )
                with response:
                    # A huge or endless answer is cut, not read into memory whole.
                    content, larger = read_body(
                        response, limit=TOKEN_BODY_BYTES, deadline=time.monotonic() + settings.timeout
                    )
                response._content = content
            except requests.exceptions.SSLError as exc:
                raise OnTrackAuthError(
                    f"TLS verification of the token endpoint {settings.auth_url} failed: "
                    f"{' '.join(str(getattr(exc.args[0], 'reason', exc)).split())[:300]}"
                ) from None
            except requests.RequestException as exc:
                problem = f"no usable answer ({type(exc).__name__})"
                wait = None
            else:
                if response.status_code == 200 and larger:
                    raise OnTrackAuthError(
                        f"The token endpoint {settings.auth_url} answered more than "
                        f"{TOKEN_BODY_BYTES // 2**20} MiB, which is not a token answer",
                        status=200,
                    )
                if response.status_code == 200:
                    return self._accept(response)
                if response.status_code not in RETRYABLE_STATUSES:
                    raise self._refusal(response)
                problem = f"status {response.status_code}"
                wait = parse_retry_after(response.headers.get("Retry-After"))

            if attempt >= settings.max_retries:
                raise OnTrackAuthError(
                    f"The token endpoint {settings.auth_url} gave {problem} on {attempt + 1} tries; "
                    "no token could be obtained"
                )
            if wait is None:
                wait = backoff_delay(attempt, settings.retry_delay, settings.max_retry_delay)
            elif wait > settings.max_retry_delay:
                raise OnTrackAuthError(
                    f"The token endpoint asked to wait {wait:.0f} s, longer than max_retry_delay "
                    f"({settings.max_retry_delay:g} s)",
                    status=429,
                )
            self._log.warning(
                "Token request got %s; retrying in %.1f s (retry %d of %d)",
                problem,
                wait,
                attempt + 1,
                settings.max_retries,
            )
            self._sleep(wait)
            attempt += 1

    def _accept(self, response: requests.Response) -> AccessToken:
        try:
            payload = response.json()
        except (ValueError, RecursionError):
            payload = None
        value, lifetime = accept_token(
            self.settings, payload, response.headers.get("Content-Type"), self._on_secret, self._log
        )
        margin = min(MAX_RENEWAL_MARGIN, lifetime / 10)
        return AccessToken(value=value, lifetime=lifetime, renew_at=self._clock() + lifetime - margin)

    def _refusal(self, response: requests.Response) -> OnTrackAuthError:
        try:
            payload: Any = response.json()
        except (ValueError, RecursionError):
            # Whole (the read is bounded): refusal() scrubs secrets before it shortens the text.
            payload = response.text
        return refusal(self.settings, response.status_code, payload)


def accept_token(
    settings: OnTrackSettings,
    payload: Any,
    content_type: str | None,
    on_secret: Callable[[str], None],
    log: logging.Logger | logging.LoggerAdapter,
) -> tuple[str, float]:
    """Check a ``200`` answer of the token endpoint; return the token and its lifetime in seconds."""
    if not isinstance(payload, dict) or not isinstance(payload.get("access_token"), str):
        raise OnTrackAuthError(
            f"The token endpoint {settings.auth_url} answered 200 without an access_token "
            f"(content type {content_type or 'none'!r})",
            status=200,
        )

    value = payload["access_token"]
    if not _BEARER_TOKEN.fullmatch(value):
        raise OnTrackAuthError(
            f"The token endpoint {settings.auth_url} issued an access token that is empty or "
            "holds characters a bearer token cannot have",
            status=200,
        )
    on_secret(value)

    token_type = payload.get("token_type")
    if token_type is not None and str(token_type).lower() != "bearer":
        raise OnTrackAuthError(
            f"The token endpoint issued a token of type {token_type!r}; only Bearer tokens are supported",
            status=200,
        )

    lifetime = _lifetime(payload.get("expires_in"), value)
    if lifetime is None:
        lifetime = FALLBACK_LIFETIME
        log.info("The token response gave no lifetime; assuming %.0f s and renewing on a 401", lifetime)
    lifetime = max(lifetime, MIN_LIFETIME)
    log.info("Obtained an ON!Track token for %s, valid for %.0f s", settings.username, lifetime)
    return value, lifetime


def refusal(settings: OnTrackSettings, status: int, payload: Any) -> OnTrackAuthError:
    """Explain a refusal of the token endpoint in words that say which setting to check."""
    error = payload.get("error") if isinstance(payload, dict) else None
    # Scrub before rendering: rendering escapes quotes and squeezes spaces, which would change how
    # a secret inside the body is spelled and let it slip past.
    described = body_excerpt(redact(payload, settings.secret_forms))

    if error == "invalid_client" or (status == 401 and error is None):
        advice = "the client ID or client secret was refused; check the extras client_id and client_secret"
    elif error == "invalid_grant" or (status == 403 and error is None):
        advice = "the technical user or its password was refused; check the connection's login and password"
    else:
        advice = "the token request was refused"
    return OnTrackAuthError(
        f"Token endpoint {settings.auth_url} answered {status}: {advice}. Body: {described}",
        status=status,
        error=error,
    )


def token_request_body(settings: OnTrackSettings) -> str:
    """The form body of the password grant (the client authenticates with HTTP Basic, not here)."""
    return LegacyApplicationClient(settings.client_id).prepare_request_body(
        username=settings.username, password=settings.password, scope=settings.scope
    )


def cache_key(settings: OnTrackSettings) -> str:
    """The key of a token in a cache: a digest, so that the cache never holds a secret readably."""
    identity = "\n".join(
        (
            settings.auth_url,
            settings.client_id,
            settings.client_secret,
            settings.username,
            settings.password,
            settings.scope,
        )
    )
    return hashlib.sha256(identity.encode()).hexdigest()


def _lifetime(expires_in: Any, token: str) -> float | None:
    """Seconds a token lives: from ``expires_in`` (number or text), else from a JWT's claims."""
    try:
        if expires_in is not None and not isinstance(expires_in, bool):
            seconds = float(expires_in)
            if 0 < seconds < math.inf:
                return seconds
    except (TypeError, ValueError):
        pass

    claims = _jwt_claims(token)
    exp, iat = claims.get("exp"), claims.get("iat")
    if isinstance(exp, (int, float)):
        # The token's own clock is the issuer's; take the lifetime it states rather than trusting
        # that this machine's clock agrees.
        remaining = exp - iat if isinstance(iat, (int, float)) else exp - time.time()
        if remaining > 0:
            return float(remaining)
    return None


def _jwt_claims(token: str) -> dict[str, Any]:
    """Read a JWT's payload without checking its signature; the API checks it, not the client."""
    parts = token.split(".")
    if len(parts) != 3:
        return {}
    try:
        padded = parts[1] + "=" * (-len(parts[1]) % 4)
        claims = json.loads(base64.urlsafe_b64decode(padded))
    except (binascii.Error, ValueError, RecursionError):
        return {}
    return claims if isinstance(claims, dict) else {}

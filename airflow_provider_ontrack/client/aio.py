"""An asynchronous ON!Track client for triggers: the same tokens, pacing and errors as the sync one.

Triggers share one event loop with many others, so everything here awaits instead of blocking. A
trigger fetches its own token from the connection; tokens and pacers are shared by every trigger
of the same tenant and technical user in the triggerer process.
"""

from __future__ import annotations

import asyncio
import base64
import codecs
import json
import logging
import time
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable
from urllib.parse import urlsplit

import aiohttp

from airflow_provider_ontrack.client import core, tokens
from airflow_provider_ontrack.client.errors import (
    OnTrackApiError,
    OnTrackAuthError,
    OnTrackTransportError,
    redact,
)
from airflow_provider_ontrack.client.pacing import SPACING_MARGIN, parse_retry_after
from airflow_provider_ontrack.client.settings import OnTrackSettings, is_loopback
from airflow_provider_ontrack.client.tokens import (
    MAX_RENEWAL_MARGIN,
    AccessToken,
    accept_token,
    cache_key,
    refusal,
    token_request_body,
)

# Answers after which waiting and asking again may succeed.
TRANSIENT_STATUSES = frozenset({429, 500, 502, 503, 504})
# Pieces in which a body is read; the size limits themselves are the sync client's, read from its
# modules at each call so that both clients always apply the same ones.
READ_CHUNK_BYTES = 64 * 1024


@dataclass
class _AsyncSlot:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    token: AccessToken | None = None
    requests_made: int = 0


@dataclass
class _AsyncPacer:
    interval: float
    next_slot: float = 0.0

    async def wait_for_slot(self) -> None:
        # One event loop runs all triggers, so booking the slot needs no lock: nothing runs between
        # reading and writing next_slot.
        now = time.monotonic()
        slot = max(now, self.next_slot)
        self.next_slot = slot + self.interval
        if slot > now:
            await asyncio.sleep(slot - now)


# Keyed by event loop too: asyncio locks belong to the loop they were first used in.
_slots: dict[tuple[str, int], _AsyncSlot] = {}
_pacers: dict[tuple[Any, ...], _AsyncPacer] = {}


def forget_async_state() -> None:
    """Drop cached tokens and pacers of this process (for tests)."""
    _slots.clear()
    _pacers.clear()


class AsyncOnTrackClient:
    """Reads from the ON!Track Unite API without blocking the event loop.

    Use it as ``async with AsyncOnTrackClient(settings) as client: await client.request(...)``.
    A ``401`` renews the token once; every other failure is raised at once, with ``transient`` set
    when waiting and asking again may help, so that a trigger can keep waiting instead of failing.
    Answers are read within the sync client's size limits, since all triggers share one process.

    :param settings: the tenant's connection settings.
    :param on_secret: awaited with every new access token, before it is used.
    :param log: where token requests are reported.
    """

    def __init__(
        self,
        settings: OnTrackSettings,
        *,
        on_secret: Callable[[str], Awaitable[None]] | None = None,
        log: logging.Logger | logging.LoggerAdapter | None = None,
    ) -> None:
        self.settings = settings
        self.log = log or logging.getLogger(__name__)
        self._on_secret = on_secret
        self._session: aiohttp.ClientSession | None = None
        loop = id(asyncio.get_running_loop())
        self._slot = _slots.setdefault((cache_key(settings), loop), _AsyncSlot())
        pacer_key = (settings.base_url, settings.client_id, settings.username, loop)
        interval = SPACING_MARGIN / settings.calls_per_second
        self._pacer = _pacers.setdefault(pacer_key, _AsyncPacer(interval))
        self._pacer.interval = max(self._pacer.interval, interval)
        self.calls_made = 0

    async def __aenter__(self) -> AsyncOnTrackClient:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.settings.timeout),
            headers={"Accept": "application/json"},
        )
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._session is not None:
            await self._session.close()

    async def token(self) -> str:
        """Return a valid access token, requesting one only when the shared one runs out."""
        async with self._slot.lock:
            token = self._slot.token
            if token is None or time.monotonic() >= token.renew_at:
                token = self._slot.token = await self._request_token()
            return token.value

    async def request(self, method: str, path: str, *, params: dict[str, Any] | None = None) -> Any:
        """Send one call and return its decoded JSON; raise ``OnTrackApiError`` on failure."""
        assert self._session is not None, "use the client as an async context manager"
        path = "/" + path.lstrip("/")
        renewed = False
        while True:
            await self._pacer.wait_for_slot()
            token = await self.token()
            self.calls_made += 1
            try:
                async with self._session.request(
                    method,
                    self.settings.base_url + path,
                    params={key: str(value) for key, value in (params or {}).items()},
                    headers={"Authorization": f"Bearer {token}"},
                    allow_redirects=False,
                    proxy=proxy_for(self.settings.base_url),
                ) as response:
                    status = response.status
                    content_type = response.headers.get("Content-Type")
                    retry_after = parse_retry_after(response.headers.get("Retry-After"))
                    # A successful answer is read whole; of an error or a redirect, the start explains it.
                    limit = core.MAX_BODY_BYTES if status < 300 else core.ERROR_BODY_BYTES
                    text, larger = await _read_text(response, limit, keep_start=status >= 300)
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                error = OnTrackTransportError(
                    f"no usable answer ({type(exc).__name__})", status=None, method=method, path=path
                )
                error.transient, error.retry_after = True, None
                raise error from None

            if status == 401 and not renewed:
                async with self._slot.lock:
                    if self._slot.token is not None and self._slot.token.value == token:
                        self._slot.token = None
                renewed = True
                continue
            if larger and status < 300:
                # Permanent: the triggers read one record or a one-record page, which is never this
                # large, so polling again would only fetch the same runaway answer again.
                error = OnTrackApiError(
                    f"the answer is larger than {_size(core.MAX_BODY_BYTES)}, more than any record or "
                    "page the triggers ask for",
                    status=status,
                    method=method,
                    path=path,
                )
                error.transient, error.retry_after = False, None
                raise error
            return self._answer(status, text, retry_after, content_type, method, path)

    def redact(self, value: Any) -> Any:
        """Return ``value`` with every secret of the connection and the current token replaced."""
        token = self._slot.token
        return redact(value, self.settings.secret_forms + ((token.value,) if token is not None else ()))

    def _answer(
        self,
        status: int,
        text: str,
        retry_after: float | None,
        content_type: str | None,
        method: str,
        path: str,
    ) -> Any:
        try:
            body: Any = json.loads(text) if text else None
        except (ValueError, RecursionError):
            # Scrubbed before it is cut: a cut through a secret would leave its start readable.
            body = self.redact(text)[: core.RAW_BODY_CHARS]
        if 200 <= status < 300 and not isinstance(body, str):
            return body

        message = body.get("message") if isinstance(body, dict) else None
        if not message:
            if status < 300:
                message = f"expected JSON, got {content_type or 'no content type'}"
            else:
                message = "request failed"
        message = self.redact(str(message))
        if len(message) > core.MESSAGE_CHARS:
            message = message[: core.MESSAGE_CHARS] + "..."
        error = OnTrackApiError(message, status=status, method=method, path=path, body=self.redact(body))
        error.transient = status in TRANSIENT_STATUSES
        error.retry_after = retry_after
        raise error

    async def _request_token(self) -> AccessToken:
        assert self._session is not None
        settings = self.settings
        # Built by hand: aiohttp's BasicAuth helper is on its way out, and its successor is new.
        basic = base64.b64encode(f"{settings.client_id}:{settings.client_secret}".encode()).decode()
        self._slot.requests_made += 1
        try:
            async with self._session.post(
                settings.auth_url,
                data=token_request_body(settings),
                headers={
                    "Content-Type": "application/x-www-form-urlencoded",
                    "Authorization": f"Basic {basic}",
                },
                allow_redirects=False,
                proxy=proxy_for(settings.auth_url),
            ) as response:
                status = response.status
                content_type = response.headers.get("Content-Type")
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
                text, larger = await _read_text(response, tokens.TOKEN_BODY_BYTES, keep_start=status != 200)
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            error = OnTrackTransportError(
                f"the token endpoint gave no usable answer ({type(exc).__name__})",
                status=None,
                method="POST",
                path=settings.auth_url,
            )
            error.transient, error.retry_after = True, None
            raise error from None

        if status == 200 and larger:
            raise OnTrackAuthError(
                f"The token endpoint {settings.auth_url} answered more than "
                f"{_size(tokens.TOKEN_BODY_BYTES)}, which is not a token answer",
                status=200,
            )
        try:
            payload: Any = json.loads(text)
        except (ValueError, RecursionError):
            # Whole (the read is bounded): refusal() scrubs the secrets before it shortens the text.
            payload = None if status == 200 else text
        if status != 200:
            error = refusal(settings, status, payload)
            error.transient = status in TRANSIENT_STATUSES
            error.retry_after = retry_after
            raise error

        value, lifetime = accept_token(settings, payload, content_type, lambda value: None, self.log)
        if self._on_secret is not None:
            await self._on_secret(value)
        margin = min(MAX_RENEWAL_MARGIN, lifetime / 10)
        return AccessToken(value=value, lifetime=lifetime, renew_at=time.monotonic() + lifetime - margin)


async def _read_text(response: aiohttp.ClientResponse, limit: int, *, keep_start: bool) -> tuple[str, bool]:
    """Read at most ``limit`` bytes of the body, decompressed, and decode them.

    Returns the text and whether the body went on beyond the limit. Of a body beyond the limit,
    the start is decoded only with ``keep_start``; otherwise the caller refuses the answer, and
    decoding up to the limit would only double the memory it takes. The session's overall timeout
    bounds the whole read, however slowly the body arrives.
    """
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(READ_CHUNK_BYTES):
        if size + len(chunk) > limit:
            if not keep_start:
                return "", True
            chunks.append(chunk[: limit - size])
            return _decode(response, b"".join(chunks)), True
        chunks.append(chunk)
        size += len(chunk)
    return _decode(response, b"".join(chunks)), False


def _decode(response: aiohttp.ClientResponse, content: bytes) -> str:
    try:
        encoding = codecs.lookup(response.charset or "utf-8").name
    except LookupError:
        encoding = "utf-8"
    return content.decode(encoding, errors="replace")


def _size(limit: int) -> str:
    """A byte count as people say it: ``64 MiB``, ``1 MiB``, or bytes below a MiB."""
    if limit >= 2**20 and limit % 2**20 == 0:
        return f"{limit // 2**20} MiB"
    return f"{limit:,} bytes"


def proxy_for(url: str) -> str | None:
    """The proxy that the environment names for ``url``, chosen as the sync client chooses it.

    aiohttp is left to its default of ignoring the environment, since it would then also take
    credentials from ``~/.netrc``; the proxy is handed to each call instead. Loopback hosts, such
    as the sandbox, are always reached directly.
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    if is_loopback(host) or urllib.request.proxy_bypass_environment(host):
        return None
    proxies = urllib.request.getproxies_environment()
    return proxies.get(parts.scheme) or proxies.get("all")

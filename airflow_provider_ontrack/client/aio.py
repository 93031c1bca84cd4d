"""An asynchronous ON!Track client for triggers: the same tokens, pacing and errors as the sync one.

Triggers share one event loop with many others, so everything here awaits instead of blocking. A
trigger fetches its own token from the connection; tokens and pacers are shared by every trigger
of the same tenant and technical user in the triggerer process.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

import aiohttp

from airflow_provider_ontrack.client.errors import OnTrackApiError, OnTrackTransportError, redact
from airflow_provider_ontrack.client.pacing import SPACING_MARGIN, parse_retry_after
from airflow_provider_ontrack.client.settings import OnTrackSettings
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
                ) as response:
                    status = response.status
                    text = await response.text(errors="replace")
                    retry_after = parse_retry_after(response.headers.get("Retry-After"))
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
            return self._answer(status, text, retry_after, method, path)

    def _answer(self, status: int, text: str, retry_after: float | None, method: str, path: str) -> Any:
        try:
            body: Any = json.loads(text) if text else None
        except (ValueError, RecursionError):
            body = text[:2000]
        secrets = self.settings.secret_forms + ((self._slot.token.value,) if self._slot.token else ())
        if 200 <= status < 300 and not isinstance(body, str):
            return body

        message = body.get("message") if isinstance(body, dict) else None
        error = OnTrackApiError(
            redact(str(message or ("expected JSON" if status < 300 else "request failed"))[:500], secrets),
            status=status,
            method=method,
            path=path,
            body=redact(body, secrets),
        )
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
            ) as response:
                status = response.status
                content_type = response.headers.get("Content-Type")
                text = await response.text(errors="replace")
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            error = OnTrackTransportError(
                f"the token endpoint gave no usable answer ({type(exc).__name__})",
                status=None,
                method="POST",
                path=settings.auth_url,
            )
            error.transient, error.retry_after = True, None
            raise error from None

        try:
            payload: Any = json.loads(text)
        except (ValueError, RecursionError):
            payload = None if status == 200 else text[:2000]
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

"""The transport of the ON!Track client: authenticated, paced and retried calls, and paging."""

from __future__ import annotations

import logging
import math
import time
from typing import Any, Callable, Iterator

import requests
from urllib3.exceptions import NewConnectionError

from airflow_provider_ontrack import __version__
from airflow_provider_ontrack.client.errors import (
    OnTrackAmbiguousWriteError,
    OnTrackApiError,
    OnTrackConfigError,
    OnTrackNotFoundError,
    OnTrackRateLimitError,
    OnTrackTransportError,
    OnTrackUnauthorizedError,
    redact,
)
from airflow_provider_ontrack.client.pacing import backoff_delay, parse_retry_after, shared_pacer
from airflow_provider_ontrack.client.settings import OnTrackSettings
from airflow_provider_ontrack.client.tokens import TokenManager
from airflow_provider_ontrack.client.transport import ApiSession, proxies_for, read_body

RETRYABLE_STATUSES = frozenset({429, 502, 503, 504})
# Methods whose repetition cannot create a second record.
REPEATABLE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
# The start of a non-JSON body that an error keeps; an HTML error page's title fits in it.
RAW_BODY_CHARS = 2000
# Largest answer read: a page of 500 records is about 1 MiB, so this leaves room without letting a
# runaway (or compressed) answer fill the worker's memory.
MAX_BODY_BYTES = 64 * 2**20
ERROR_BODY_BYTES = 64 * 1024
# Longest error message taken from a server's answer.
MESSAGE_CHARS = 500


class OnTrackClient:
    """Calls the ON!Track Unite API for one tenant and technical user.

    Tokens, pacing and retries follow the API's rules: one token per token lifetime shared by all
    clients of the process, at most ``calls_per_second`` calls per second across those clients, a
    single renewal on ``401``, and bounded retries with back-off on ``429``, ``502``, ``503``,
    ``504``, timeouts and dropped connections. A create (``POST``) is repeated only when the server
    certainly did not receive it.

    :param settings: the tenant's connection settings.
    :param on_secret: called with every secret as soon as it is known (for log masking).
    :param log: where progress and retries are reported.
    """

    def __init__(
        self,
        settings: OnTrackSettings,
        *,
        on_secret: Callable[[str], None] = lambda value: None,
        log: logging.Logger | logging.LoggerAdapter | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings = settings
        self.log = log or logging.getLogger(__name__)
        self._sleep = sleep

        self.session = ApiSession()
        self.session.headers.update(
            {"Accept": "application/json", "User-Agent": f"airflow-provider-ontrack/{__version__}"}
        )
        self._proxies = proxies_for(settings.base_url)

        self.tokens = TokenManager(
            settings, session=self.session, on_secret=on_secret, log=self.log, sleep=sleep
        )
        self.pacer = shared_pacer(
            (settings.base_url, settings.client_id, settings.username), settings.calls_per_second
        )
        self.calls_made = 0

    def close(self) -> None:
        """Release the HTTP connections; the cached token stays for other clients."""
        self.session.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
    ) -> Any:
        """Send one API call and return its decoded JSON body (``None`` for an empty body).

        :param method: the HTTP method.
        :param path: the path relative to the API base URL, such as ``/assets/123``.
        :param params: query parameters.
        :param json: the request body, sent as JSON.
        :raises OnTrackApiError: or one of its subclasses, carrying status, method, path and body.
        """
        response = self.send(method, path, params=params, json=json)
        return self._decode(response, method.upper(), "/" + path.lstrip("/"))

    def send(
        self,
        method: str,
        path: str,
        *,
        params: Any = None,
        json: Any = None,
        data: Any = None,
        headers: dict[str, str] | None = None,
        raise_for_status: bool = True,
    ) -> requests.Response:
        """Send one API call with the token, pacing and retries, and return the response, body read.

        :param method: the HTTP method.
        :param path: the path relative to the API base URL, such as ``/assets/123``.
        :param params: query parameters.
        :param json: the request body, sent as JSON.
        :param data: a request body sent as it is (text, bytes, or a form as a dict), instead of ``json``.
        :param headers: further headers; the ``Authorization`` header is always the token's.
        :param raise_for_status: when false, an answer of ``300`` or above that is not retried (or
            that is still failing once the retries run out) is returned instead of raised.
        :raises OnTrackApiError: or one of its subclasses, carrying status, method, path and body.
        """
        method = method.upper()
        path = "/" + path.lstrip("/")
        url = self.settings.base_url + path
        repeatable = method in REPEATABLE_METHODS
        renewed = False
        retry = 0

        def refuse(response: requests.Response, note: str = "") -> requests.Response:
            if raise_for_status:
                raise self._error(response, method, path, note)
            return response

        while True:
            # Wait for the slot first: a token taken before a long wait in the queue could expire in it.
            self.pacer.wait_for_slot()
            token = self.tokens.get()
            self.calls_made += 1
            try:
                response = self._send(method, url, params, json, token, data=data, headers=headers)
            except requests.exceptions.InvalidJSONError:
                # Nothing was sent: the body itself cannot be written as JSON (NaN, say).
                raise OnTrackConfigError(
                    "json", f"the body of {method} {path} cannot be sent as JSON (NaN or an infinite number?)"
                ) from None
            except requests.exceptions.SSLError as exc:
                # A certificate that fails verification will fail again; retrying only hides why.
                raise OnTrackTransportError(
                    f"TLS verification failed: {_tls_reason(exc)}", status=None, method=method, path=path
                ) from None
            except requests.RequestException as exc:
                problem = _describe_failure(exc, self.settings.timeout)
                if not (repeatable or _never_reached_server(exc)):
                    raise OnTrackAmbiguousWriteError(
                        f"{problem}; not repeated, since the record may have been stored",
                        status=None,
                        method=method,
                        path=path,
                    ) from None
                if retry >= self.settings.max_retries:
                    raise OnTrackTransportError(
                        f"{problem} on {retry + 1} tries", status=None, method=method, path=path
                    ) from None
                wait = backoff_delay(retry, self.settings.retry_delay, self.settings.max_retry_delay)
                self._announce_retry(method, path, problem, wait, retry)
                retry += 1
                continue

            status = response.status_code
            if status == 401 and not renewed:
                # An expired or revoked token: renew once and repeat once. Nothing was written.
                self.log.info("%s %s answered 401; renewing the token and repeating the call", method, path)
                self.tokens.discard(token)
                renewed = True
                continue

            if status in RETRYABLE_STATUSES and (repeatable or status == 429):
                wait = parse_retry_after(response.headers.get("Retry-After"))
                if retry >= self.settings.max_retries:
                    return refuse(response, f"still failing after {retry + 1} tries")
                if wait is not None and wait > self.settings.max_retry_delay:
                    return refuse(
                        response,
                        f"the server asked to wait {wait:.0f} s, longer than max_retry_delay "
                        f"({self.settings.max_retry_delay:g} s)",
                    )
                if wait is None:
                    wait = backoff_delay(retry, self.settings.retry_delay, self.settings.max_retry_delay)
                self._announce_retry(method, path, f"status {status}", wait, retry)
                retry += 1
                continue

            if 300 <= status < 400:
                # Redirects are not followed: the bearer token must not travel to another address.
                return refuse(response, f"unexpected redirect to {response.headers.get('Location')!r}")
            if status >= 400:
                return refuse(response)
            return response

    def _send(
        self,
        method: str,
        url: str,
        params: Any,
        json: Any,
        token: str,
        *,
        data: Any = None,
        headers: dict[str, str] | None = None,
    ) -> requests.Response:
        """Send one request and read its body within the timeout and the size limit."""
        deadline = time.monotonic() + self.settings.timeout
        response = self.session.request(
            method,
            url,
            params=params,
            json=json,
            data=data,
            headers={**(headers or {}), "Authorization": f"Bearer {token}"},
            timeout=self.settings.timeout,
            allow_redirects=False,
            stream=True,
            proxies=self._proxies,
        )
        with response:
            # A successful page is read whole; of an error or a redirect, the start explains it.
            limit = MAX_BODY_BYTES if response.status_code < 300 else ERROR_BODY_BYTES
            content, larger = read_body(response, limit=limit, deadline=deadline)
            if larger and response.status_code < 300:
                raise OnTrackApiError(
                    f"the answer is larger than {limit // 2**20} MiB; lower page_size",
                    status=response.status_code,
                    method=method,
                    path=url[len(self.settings.base_url) :],
                )
            response._content = content
        return response

    def paginate(
        self,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        page_size: int | None = None,
        label: str = "records",
    ) -> Iterator[dict[str, Any]]:
        """Yield every record of a list endpoint, one page in memory at a time.

        The page size the server reports is the one that counts: a server that caps the size asked
        for still gets read to the end. A record that moved onto the next page because records were
        created meanwhile is yielded once.

        :param path: the list path, such as ``/assets``.
        :param params: filters such as ``startDate`` and ``endDate``.
        :param page_size: the page size to ask for; the connection's ``page_size`` when not given.
        :param label: the word for the records in progress messages.
        """
        settings = self.settings
        query = dict(params or {})
        asked = page_size or settings.page_size
        page = 1
        served: int | None = None
        previous_ids: set[Any] = set()
        seen = 0
        received = 0
        started = time.monotonic()

        while True:
            query[settings.page_param] = page
            query[settings.page_size_param] = asked
            envelope = self.request("GET", path, params=query)
            records = self._records_of(envelope, path)

            reported = envelope.get(settings.page_size_key)
            if _is_count(reported) and reported > 0:
                served = reported
            elif served is None:
                # With no size in the envelope, the first page's length is the best evidence of it.
                served = len(records) or asked
            total = envelope.get(settings.total_key)
            total = total if _is_count(total) else None

            keys = [_identity(record) for record in records]
            if records and None not in keys and previous_ids.issuperset(keys):
                raise OnTrackApiError(
                    f"page {page} repeats page {page - 1}; the server seems to ignore the page parameter "
                    f"{settings.page_param!r} (set the connection extra page_param to the name it reads)",
                    status=200,
                    method="GET",
                    path=path,
                )
            current_ids: set[Any] = set()
            for key, record in zip(keys, records, strict=True):
                if key is not None and key in previous_ids:
                    continue
                current_ids.add(key)
                seen += 1
                yield record

            if total == 0:
                self.log.info("Read %s: no %s", path, label)
            else:
                pages = math.ceil(total / served) if total is not None else None
                self.log.info(
                    "Read %s page %d of %s, %s of %s %s",
                    path,
                    page,
                    pages if pages is not None else "?",
                    f"{seen:,}",
                    f"{total:,}" if total is not None else "?",
                    label,
                )
            # With a total, a short page proves nothing (the server may cap pages below the size it
            # reports); without one, a short page is the last.
            received += len(records)
            if not records:
                break
            if total is not None and received >= total:
                break
            if total is None and len(records) < served:
                break

            previous_ids = current_ids
            page += 1

        self.log.info("Read %s %s from %s in %.1f s", f"{seen:,}", label, path, time.monotonic() - started)

    def _records_of(self, envelope: Any, path: str) -> list[Any]:
        key = self.settings.result_key
        records = envelope.get(key) if isinstance(envelope, dict) else None
        if not isinstance(records, list):
            raise OnTrackApiError(
                f"the list envelope has no {key!r} list (set the connection extra result_key if your "
                "tenant names it differently)",
                status=200,
                method="GET",
                path=path,
                body=self._redact(_shorten(envelope)),
            )
        return records

    def _announce_retry(self, method: str, path: str, problem: str, wait: float, retry: int) -> None:
        self.log.warning(
            "%s %s: %s; retrying in %.1f s (retry %d of %d)",
            method,
            path,
            problem,
            wait,
            retry + 1,
            self.settings.max_retries,
        )
        self._sleep(wait)

    def _decode(self, response: requests.Response, method: str, path: str) -> Any:
        if not response.content:
            return None
        try:
            return response.json()
        except (ValueError, RecursionError):
            raise OnTrackApiError(
                f"expected JSON, got {response.headers.get('Content-Type', 'no content type')}",
                status=response.status_code,
                method=method,
                path=path,
                body=self._raw_body(response),
            ) from None

    def _error(self, response: requests.Response, method: str, path: str, note: str = "") -> OnTrackApiError:
        status = response.status_code
        try:
            body: Any = response.json()
        except (ValueError, RecursionError):
            body = self._raw_body(response)

        message = note or (response.reason or "request failed")
        if isinstance(body, dict) and isinstance(body.get("message"), str) and not note:
            message = body["message"]
        # Scrubbed before it is cut: a cut through a secret would leave its start unscrubbed.
        message = self._redact(message)
        if len(message) > MESSAGE_CHARS:
            message = message[:MESSAGE_CHARS] + "..."

        kind = {401: OnTrackUnauthorizedError, 404: OnTrackNotFoundError, 429: OnTrackRateLimitError}
        return kind.get(status, OnTrackApiError)(
            message, status=status, method=method, path=path, body=self._redact(body)
        )

    def _raw_body(self, response: requests.Response) -> str:
        # Scrubbed before it is cut, with room for a secret that runs across the cut.
        start = response.content[:ERROR_BODY_BYTES].decode(response.encoding or "utf-8", errors="replace")
        return self._redact(start)[:RAW_BODY_CHARS]

    def _redact(self, value: Any) -> Any:
        # A server may echo what it was sent; an error must not carry it into logs or XCom.
        return redact(value, self.tokens.known_secrets())


def _describe_failure(exc: requests.RequestException, timeout: float) -> str:
    """Say in words what went wrong with a call that got no usable answer."""
    if isinstance(exc, requests.Timeout):
        return f"no answer within {timeout:g} s ({type(exc).__name__})"
    if isinstance(exc, (requests.exceptions.ChunkedEncodingError, requests.exceptions.ContentDecodingError)):
        return f"the answer broke off or could not be decoded ({type(exc).__name__})"
    if isinstance(exc, requests.ConnectionError):
        return f"connection failed ({type(exc).__name__})"
    # Whatever else requests raises (an invalid header, say) may quote the request; name only its kind.
    return f"the call could not be sent ({type(exc).__name__})"


def _tls_reason(exc: requests.exceptions.SSLError) -> str:
    wrapped = exc.args[0] if exc.args else exc
    reason = getattr(wrapped, "reason", wrapped)
    return " ".join(str(reason).split())[:300]


def _never_reached_server(exc: Exception) -> bool:
    """Tell whether a failed call certainly never reached the server, so that it is safe to repeat."""
    if isinstance(exc, requests.ConnectTimeout):
        return True

    # requests wraps urllib3's MaxRetryError, whose reason says whether a connection was ever made.
    wrapped = exc.args[0] if exc.args else None
    return isinstance(getattr(wrapped, "reason", wrapped), NewConnectionError)


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _identity(record: Any) -> Any:
    """A hashable key for a record's id, whatever JSON type the server used for it."""
    record_id = record.get("id") if isinstance(record, dict) else None
    if record_id is None or isinstance(record_id, (str, int, float)):
        return record_id
    return repr(record_id)


def _shorten(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: ("[...]" if isinstance(item, list) else item) for key, item in value.items()}
    return value

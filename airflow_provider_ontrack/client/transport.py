"""The HTTP session of the sync client and how it reads answers: bounded in size and in time.

Both the API calls and the token requests go through here, so that neither can be made to follow
a redirect, to pick up credentials from ``~/.netrc``, or to read an answer without end.
"""

from __future__ import annotations

import time
from typing import Iterator
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3 import exceptions as urllib3_errors

from airflow_provider_ontrack.client.settings import is_loopback

# Proxy settings that send a call straight to its host, whatever the environment says.
_DIRECT = {"http": None, "https": None}


class ApiSession(requests.Session):
    """A ``requests`` session for one tenant: TLS verified, no redirects, no ``~/.netrc``."""

    def __init__(self) -> None:
        super().__init__()
        self.verify = True
        # Proxies from the environment stay usable; the credentials of ~/.netrc must not, since
        # requests would put them in place of the bearer token. Any auth set here turns them off.
        self.trust_env = True
        self.auth = _keep_authorization
        # The pacer already spaces calls; a small pool is enough and keeps idle sockets few.
        for scheme in ("https://", "http://"):
            self.mount(scheme, HTTPAdapter(pool_connections=1, pool_maxsize=4, max_retries=0))

    def get_redirect_target(self, resp: requests.Response) -> str | None:
        # Redirects are never followed (the token would travel with them), and with a target
        # requests reads the whole redirect body, unbounded, before it returns. Without one the
        # body is left to read_body and its limits.
        return None


def proxies_for(url: str) -> dict[str, None] | None:
    """No proxy for a loopback host (plain HTTP is allowed there only); the environment's otherwise."""
    return _DIRECT if is_loopback(urlsplit(url).hostname or "") else None


def read_body(response: requests.Response, *, limit: int, deadline: float) -> tuple[bytes, bool]:
    """Read a streamed answer's body: at most ``limit`` bytes, and only until ``deadline``.

    :return: the body, cut to ``limit`` bytes, and whether there was more.
    :raises requests.ReadTimeout: when the body is still arriving at ``deadline``.
    """
    chunks: list[bytes] = []
    size = 0
    for chunk in body_chunks(response):
        chunks.append(chunk)
        size += len(chunk)
        if time.monotonic() > deadline:
            # The timeout of requests bounds each read, not the whole answer; a server that
            # trickles its body byte by byte must not hold a worker slot for ever.
            raise requests.ReadTimeout("the answer did not arrive within the timeout")
        if size > limit:
            break
    return b"".join(chunks)[:limit], size > limit


def body_chunks(response: requests.Response) -> Iterator[bytes]:
    """Yield the body as it arrives, decoded, in pieces of at most 64 KiB.

    Unlike ``iter_content``, which waits until a whole piece (or the declared length) is there,
    ``read1`` returns whatever has arrived, so the caller can check its deadline between reads.
    urllib3's errors are turned into the requests errors they stand for.
    """
    raw = response.raw
    if not hasattr(raw, "read1"):  # urllib3 before 2.3
        yield from response.iter_content(64 * 1024)
        return

    while True:
        try:
            chunk = raw.read1(64 * 1024, decode_content=True)
        except urllib3_errors.ReadTimeoutError as exc:
            raise requests.ReadTimeout(exc) from None
        except urllib3_errors.DecodeError as exc:
            raise requests.exceptions.ContentDecodingError(exc) from None
        except (urllib3_errors.ProtocolError, urllib3_errors.SSLError) as exc:
            raise requests.exceptions.ChunkedEncodingError(exc) from None
        if not chunk:
            return
        yield chunk


def _keep_authorization(request: requests.PreparedRequest) -> requests.PreparedRequest:
    """Leave the request's own Authorization header alone."""
    return request

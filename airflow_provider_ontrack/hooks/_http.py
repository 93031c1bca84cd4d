"""The part of ``HttpHook``'s interface that Airflow's ``HttpOperator`` calls on a connection's hook.

``HttpOperator`` asks the connection for its hook (``Connection.get_hook``) and calls ``run`` on it,
so pointed at an ON!Track connection it gets :class:`~airflow_provider_ontrack.hooks.ontrack.OnTrackHook`.
These methods give it what ``HttpHook.run`` would, a ``requests.Response``, but sent the way the
ON!Track API wants: with the connection's OAuth token (renewed on ``401``), paced, retried on
``429`` and gateway errors, and never with a connection extra as a header.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode

from airflow_provider_ontrack.client.errors import OnTrackConfigError
from airflow_provider_ontrack.client.windows import api_query

if TYPE_CHECKING:
    import requests

# What HttpOperator hands every connection's hook for HttpHook's own HTTP session; the provider's
# session pools and keeps its connections alive by itself.
HTTP_SESSION_OPTIONS = frozenset(
    {"tcp_keep_alive", "tcp_keep_alive_idle", "tcp_keep_alive_count", "tcp_keep_alive_interval", "adapter"}
)
# A header name or an HTTP method (RFC 9110's "token"), and a URL with a host in it.
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_ABSOLUTE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*:)?//")


class HttpOperatorSupport:
    """``run``, ``run_with_advanced_retry`` and ``url_from_endpoint`` as ``HttpHook`` has them.

    The class using it provides ``method``, ``settings``, ``client``, ``log`` and ``api_path``.
    """

    method: str

    def run(
        self,
        endpoint: str | None = None,
        data: Any = None,
        headers: Mapping[str, str] | None = None,
        extra_options: Mapping[str, Any] | None = None,
        **request_kwargs: Any,
    ) -> requests.Response:
        """Send one call as ``HttpHook.run`` does and return the response.

        :param endpoint: the path relative to the API base URL, with or without a query string, such
            as ``assets?pageSize=500``; a full URL is accepted only when it starts with the base URL.
        :param data: for ``GET``, query parameters; for other methods the body: a dict or list is sent
            as JSON, text or bytes as they are (as JSON unless ``headers`` names a Content-Type).
        :param headers: further headers; ``Authorization`` is the connection's token and cannot be set.
        :param extra_options: ``check_response`` (default true: an answer of ``300`` or more raises
            :class:`~airflow_provider_ontrack.client.OnTrackApiError`); ``verify`` may only be true.
        :param request_kwargs: ``json``, a body to send as JSON.
        """
        method = self.method.upper()
        if not _TOKEN.match(method):
            raise OnTrackConfigError("method", f"must be an HTTP method such as GET or POST, got {method!r}")
        path, query = self._split_endpoint(endpoint)
        check_response = _check_options(extra_options or {})
        unknown = sorted(set(request_kwargs) - {"json"})
        if unknown:
            raise OnTrackConfigError(
                unknown[0], "is not supported on an ON!Track connection; of request_kwargs only json is"
            )
        headers = _checked_headers(headers)

        json_body = request_kwargs.get("json")
        body = None
        if method == "GET":
            query += _pairs(data)
        elif method != "HEAD" and data not in (None, "", {}, []):
            if json_body is not None:
                raise OnTrackConfigError("data", "give the body either as data or as json, not both")
            if isinstance(data, (dict, list)):
                # The API reads JSON bodies only, so a dict is sent as JSON rather than as a form.
                json_body = data
                _check_json("data", data)
            elif isinstance(data, (str, bytes)):
                body = data
                if not any(name.lower() == "content-type" for name in headers):
                    headers["Content-Type"] = "application/json"
            else:
                # A stream or a generator could be read once only, and a call may have to be repeated.
                raise OnTrackConfigError(
                    "data", f"must be text, bytes, a dict or a list for {method}, got {type(data).__name__}"
                )
        if json_body is not None:
            _check_json("json", json_body)

        self.log.debug("Sending %s %s through the ON!Track client", method, path)
        return self.client.send(
            method,
            self.api_path(method, path),
            params=query or None,
            json=json_body,
            data=body,
            headers=headers,
            raise_for_status=check_response,
        )

    def run_with_advanced_retry(self, _retry_args: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        """Call :meth:`run` under ``tenacity.Retrying(**_retry_args)``, as ``HttpHook`` does.

        The client already retries ``429``, gateway errors and timeouts; these retries come on top.
        """
        import tenacity

        if self.method.upper() in ("POST", "PATCH"):
            # The client repeats a create only when the server certainly did not get it; retries
            # on any error would make a second record after a timeout.
            raise OnTrackConfigError(
                "retry_args", f"a {self.method.upper()} is not retried on top of the provider's own retries"
            )
        return tenacity.Retrying(**_retry_args)(self.run, *args, **kwargs)

    def url_from_endpoint(self, endpoint: str | None) -> str:
        """The full URL of an endpoint, as the call would go to."""
        path, query = self._split_endpoint(endpoint)
        url = self.settings.base_url + "/" + path.lstrip("/")
        if query:
            url += "?" + urlencode(query)
        return url

    def _split_endpoint(self, endpoint: str | None) -> tuple[str, list[tuple[str, Any]]]:
        """The path and the query pairs of an endpoint, which must lie under the API base URL."""
        text = endpoint or ""
        base = self.settings.base_url
        if text == base or text.startswith(base + "/") or text.startswith(base + "?"):
            text = text[len(base) :]

        if _ABSOLUTE.match(text):
            # Every call goes to the base URL with the token; a URL elsewhere is a mistake to say.
            raise OnTrackConfigError(
                "endpoint", f"must be a path under the connection's API base URL {base}, got {endpoint!r}"
            )
        path, _, query = text.partition("?")
        return path or "/", parse_qsl(query.partition("#")[0], keep_blank_values=True)


def _check_options(extra_options: Mapping[str, Any]) -> bool:
    """Whether to raise on an error answer; refuse options this connection does not honour."""
    check_response = True
    for name, value in extra_options.items():
        if name == "check_response":
            check_response = bool(value)
        elif name in ("verify", "verify_ssl"):
            if value is not True:
                raise OnTrackConfigError(name, "TLS verification of the ON!Track API cannot be turned off")
        elif name == "timeout":
            raise OnTrackConfigError(name, "set the timeout extra of the ON!Track connection instead")
        else:
            raise OnTrackConfigError(
                name, "is not supported on an ON!Track connection; check_response and verify are"
            )
    return check_response


def _checked_headers(headers: Mapping[str, Any] | None) -> dict[str, str]:
    """The caller's headers, checked before anything is sent; ``Authorization`` is refused."""
    checked: dict[str, str] = {}
    for name, value in (headers or {}).items():
        if not isinstance(name, str) or not _TOKEN.match(name):
            raise OnTrackConfigError("headers", f"{name!r} is not a valid header name")
        if name.lower() == "authorization":
            raise OnTrackConfigError(
                "headers", "Authorization is set from the connection's OAuth token and cannot be given"
            )
        if not isinstance(value, str) or any(char in value for char in "\r\n\0"):
            raise OnTrackConfigError("headers", f"the value of {name} must be text on one line")
        checked[name] = value
    return checked


def _check_json(field: str, body: Any) -> None:
    """Refuse a body that cannot be written as JSON, naming the argument, before any call."""
    try:
        json.dumps(body, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise OnTrackConfigError(field, f"cannot be sent as JSON: {exc}") from None


def _pairs(data: Any) -> list[tuple[str, Any]]:
    """Query pairs from ``data`` as HttpHook accepts it for a GET: a dict, pairs, or a query string."""
    if data in (None, "", {}):
        return []
    if isinstance(data, (str, bytes)):
        text = data.decode() if isinstance(data, bytes) else data
        return parse_qsl(text.lstrip("?"), keep_blank_values=True)
    if isinstance(data, Mapping):
        return list((api_query(data) or {}).items())
    try:
        return [(str(name), value) for name, value in data]
    except (TypeError, ValueError):
        raise OnTrackConfigError(
            "data", f"must be a dict, a list of pairs or a query string for GET, got {type(data).__name__}"
        ) from None

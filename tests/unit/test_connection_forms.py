"""Connections written in each form Airflow accepts, and failures a connection test must explain."""

from __future__ import annotations

import datetime as dt
import http.server
import json
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from airflow_provider_ontrack.client.errors import OnTrackAuthError, OnTrackConfigError
from airflow_provider_ontrack.client.settings import OnTrackSettings

FIELDS = {"login": "techuser@api-user.hilti.cloud", "password": "generated-password"}
EXTRA = {"client_id": "client-id", "client_secret": "client-secret-value"}


def settings_of(**parts) -> OnTrackSettings:
    return OnTrackSettings.from_connection_fields(**FIELDS, extra=EXTRA, **parts)


class TestUriForm:
    @pytest.mark.parametrize(
        ("host", "port", "schema", "base_url"),
        [
            (
                "cloudapis.hilti.com",
                None,
                "ts/ontrack/unite/v1",
                "https://cloudapis.hilti.com/ts/ontrack/unite/v1",
            ),
            (
                "cloudapis.hilti.com",
                8443,
                "/ts/ontrack/unite/v1/",
                "https://cloudapis.hilti.com:8443/ts/ontrack/unite/v1",
            ),
            ("http://127.0.0.1", 8090, "ts/ontrack/unite/v1", "http://127.0.0.1:8090/ts/ontrack/unite/v1"),
            (
                "https://cloudapis.hilti.com/ts/ontrack/unite/v1",
                None,
                "",
                "https://cloudapis.hilti.com/ts/ontrack/unite/v1",
            ),
            (
                "https://cloudapis.hilti.com/ts/ontrack/unite/v1",
                443,
                None,
                "https://cloudapis.hilti.com:443/ts/ontrack/unite/v1",
            ),
            (None, None, None, "https://cloudapis.hilti.com/ts/ontrack/unite/v1"),
        ],
    )
    def test_host_port_and_schema_make_the_base_url(self, host, port, schema, base_url):
        assert settings_of(host=host, port=port, schema=schema).base_url == base_url

    @pytest.mark.parametrize(
        ("host", "port", "schema", "field"),
        [
            ("https://cloudapis.hilti.com:8443/x", 9443, None, "port"),
            ("https://cloudapis.hilti.com/ts/ontrack/unite/v1", None, "other/path", "schema"),
            (None, 8090, None, "host"),
            ("http://10.0.0.8", 8090, None, "host"),
        ],
    )
    def test_contradictions_name_the_field(self, host, port, schema, field):
        with pytest.raises(OnTrackConfigError) as raised:
            settings_of(host=host, port=port, schema=schema)

        assert raised.value.field == field

    def test_airflow_parses_the_documented_uri(self):
        from airflow.sdk import Connection

        conn = Connection.from_uri(
            "ontrack://techuser%40api-user.hilti.cloud:pw%2Bx@cloudapis.hilti.com/ts/ontrack/unite/v1"
            "?client_id=cid&client_secret=csecret",
            conn_id="ontrack_uri",
        )

        settings = OnTrackSettings.from_connection_fields(
            host=conn.host,
            login=conn.login,
            password=conn.password,
            extra=conn.extra_dejson,
            port=conn.port,
            schema=conn.schema,
        )
        assert settings.base_url == "https://cloudapis.hilti.com/ts/ontrack/unite/v1"
        assert (settings.username, settings.password) == ("techuser@api-user.hilti.cloud", "pw+x")
        assert (settings.client_id, settings.client_secret) == ("cid", "csecret")


@pytest.fixture
def untrusted_https_server(tmp_path: Path) -> Iterator[str]:
    """An HTTPS server on 127.0.0.1 whose certificate no trust store knows."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )

    hits: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the name http.server calls
            hits.append(self.path)
            body = json.dumps({"access_token": "never-seen", "expires_in": 3600}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"https://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    assert hits == [], "no request may complete against a certificate that failed verification"


class TestConnectionFailures:
    def test_untrusted_certificate_fails_at_once_with_the_reason(self, untrusted_https_server, monkeypatch):
        from airflow_provider_ontrack.hooks.ontrack import OnTrackHook

        monkeypatch.setenv(
            "AIRFLOW_CONN_ONTRACK_TLS",
            json.dumps(
                {
                    "conn_type": "ontrack",
                    "host": f"{untrusted_https_server}/ts/ontrack/unite/v1",
                    **FIELDS,
                    "extra": {**EXTRA, "auth_url": f"{untrusted_https_server}/hc/token", "retry_delay": 1},
                }
            ),
        )
        hook = OnTrackHook(ontrack_conn_id="ontrack_tls")

        started = time.monotonic()
        with pytest.raises(OnTrackAuthError) as raised:
            hook.get_token()

        assert time.monotonic() - started < 5  # not retried: a retry with a one-second delay would show
        assert "TLS verification" in str(raised.value)
        assert "CERTIFICATE_VERIFY_FAILED" in str(raised.value)

    def test_connection_test_names_an_unreachable_token_endpoint(self, monkeypatch):
        from airflow_provider_ontrack.hooks.ontrack import OnTrackHook

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            closed_port = sock.getsockname()[1]
        monkeypatch.setenv(
            "AIRFLOW_CONN_ONTRACK_DOWN",
            json.dumps(
                {
                    "conn_type": "ontrack",
                    "host": f"http://127.0.0.1:{closed_port}/ts/ontrack/unite/v1",
                    **FIELDS,
                    "extra": {
                        **EXTRA,
                        "auth_url": f"http://127.0.0.1:{closed_port}/hc/token",
                        "retry_delay": 0.01,
                    },
                }
            ),
        )

        ok, message = OnTrackHook(ontrack_conn_id="ontrack_down").test_connection()

        assert not ok
        assert message.startswith("The token endpoint could not be reached")
        assert f"http://127.0.0.1:{closed_port}/hc/token" in message
        assert "on 2 tries" in message  # a connection test retries once, not five times

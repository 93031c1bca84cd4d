"""The ``ontrack-sandbox`` console command: serve a seeded sandbox until Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any

from airflow_provider_ontrack.sandbox.server import (
    RETRY_AFTER_FORMATS,
    SANDBOX_CLIENT_ID,
    SANDBOX_CLIENT_SECRET,
    SANDBOX_PASSWORD,
    SANDBOX_USERNAME,
    TOKEN_STYLES,
    OnTrackSandbox,
)


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The command-line options."""
    parser = argparse.ArgumentParser(
        prog="ontrack-sandbox",
        description="Serve a local, seeded sandbox of the Hilti ON!Track Unite API and its token endpoint.",
        epilog=(
            "Admin endpoints, no token needed: GET /_sandbox/stats, POST /_sandbox/stats/reset, "
            "GET|POST /_sandbox/config, POST /_sandbox/tokens/revoke, GET|POST|DELETE /_sandbox/faults, "
            "POST /_sandbox/reset, GET /_sandbox/tenant. See docs/sandbox.md."
        ),
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8090, help="port to bind, 0 = any free (default: 8090)")
    parser.add_argument("--seed", type=int, default=7, help="seed of the generated tenant (default: 7)")
    parser.add_argument("--now", default=None, help="fixed 'now' of the tenant, e.g. 2026-06-01T00:00:00Z")
    parser.add_argument("--token-lifetime", type=float, default=3600, help="token lifetime in seconds")
    parser.add_argument("--rate-limit", type=float, default=0, help="API calls per second, 0 = unlimited")
    parser.add_argument(
        "--token-style",
        choices=TOKEN_STYLES,
        default="standard",
        help="shape of token responses, to imitate sloppy servers (default: standard)",
    )
    parser.add_argument(
        "--retry-after-format",
        choices=RETRY_AFTER_FORMATS,
        default="seconds",
        help="how a 429 states its Retry-After (default: seconds)",
    )
    parser.add_argument(
        "--transfer-completion-delay",
        type=float,
        default=0,
        help="seconds a new transfer stays IN_TRANSIT (default: 0)",
    )
    parser.add_argument("--workers", type=_count, default=25, help="seeded workers (default: 25)")
    parser.add_argument("--locations", type=_count, default=12, help="seeded locations (default: 12)")
    parser.add_argument("--assets", type=_count, default=1500, help="seeded assets (default: 1500)")
    parser.add_argument("--client-id", default=SANDBOX_CLIENT_ID, help="client ID the token endpoint accepts")
    parser.add_argument(
        "--client-secret", default=SANDBOX_CLIENT_SECRET, help="client secret the token endpoint accepts"
    )
    parser.add_argument(
        "--username", default=SANDBOX_USERNAME, help="technical user the token endpoint accepts"
    )
    parser.add_argument("--password", default=SANDBOX_PASSWORD, help="password of that technical user")
    parser.add_argument("--verbose", action="store_true", help="log method, path and status of each request")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Start the sandbox, print where it is, and serve until interrupted. Returns the exit status."""
    args = build_parser().parse_args(argv)

    try:
        sandbox = OnTrackSandbox(
            host=args.host,
            port=args.port,
            seed=args.seed,
            token_lifetime=args.token_lifetime,
            rate_limit=args.rate_limit,
            now=args.now,
            client_id=args.client_id,
            client_secret=args.client_secret,
            username=args.username,
            password=args.password,
            worker_count=args.workers,
            location_count=args.locations,
            asset_count=args.assets,
            token_style=args.token_style,
            retry_after_format=args.retry_after_format,
            transfer_completion_delay=args.transfer_completion_delay,
            verbose=args.verbose,
        ).start()
    except (OSError, ValueError) as exc:
        print(f"ontrack-sandbox: cannot start: {exc}", file=sys.stderr)
        return 1

    stop = threading.Event()

    def request_stop(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)

    connection = {
        "conn_type": "ontrack",
        "host": sandbox.base_url,
        "login": args.username,
        "password": args.password,
        "extra": {
            "client_id": args.client_id,
            "client_secret": args.client_secret,
            "auth_url": sandbox.token_url,
        },
    }
    # These are the sandbox's own made-up credentials, printed so that they can be pasted.
    print(
        f"ON!Track sandbox serving {sandbox.base_url} | token URL {sandbox.token_url} | "
        f"client {args.client_id} / {args.client_secret} | user {args.username} / {args.password}\n"
        f"Connection for Airflow:\nexport AIRFLOW_CONN_ONTRACK_DEFAULT='{json.dumps(connection)}'",
        flush=True,
    )

    # A timed wait keeps the main thread responsive to signals on every platform.
    while not stop.wait(0.5):
        pass

    sandbox.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

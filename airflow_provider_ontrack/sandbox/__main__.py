"""Lets ``python -m airflow_provider_ontrack.sandbox`` run the sandbox like ``ontrack-sandbox``."""

from __future__ import annotations

from airflow_provider_ontrack.sandbox.cli import main

if __name__ == "__main__":
    raise SystemExit(main())

"""Apache Airflow provider for Hilti ON!Track Unite, the REST API of ON!Track 3."""

from __future__ import annotations

__version__ = "0.1.0"

"""Shared fixtures: quiet structlog (tests read events with capture_logs)."""

from __future__ import annotations

import structlog


def pytest_configure() -> None:
    structlog.configure(
        processors=[structlog.processors.add_log_level],
        logger_factory=structlog.ReturnLoggerFactory(),
        cache_logger_on_first_use=False,
    )

"""Optional OpenTelemetry spans: one per handled message (``metrics.tracing``).

The span of a message has the sender's current span as its parent (the
asker's, for an ask; the sending handler's, for a tell from a handler), so a
trace follows a request through every actor it reaches. Spans go to the
global tracer provider the application configured (``opentelemetry-sdk``
and an exporter); with the API alone they are no-ops.
"""

from __future__ import annotations

import importlib.util
from typing import Any

__all__ = ["context_now", "make_tracer", "tracing_unavailable"]


def tracing_unavailable() -> str | None:
    """Why tracing cannot be turned on here, or None if it can."""
    if importlib.util.find_spec("opentelemetry") is None:
        return "needs the opentelemetry-api package (pip install opentelemetry-api)"
    return None


def make_tracer() -> Any:
    from opentelemetry import trace  # noqa: PLC0415 (optional)

    return trace.get_tracer("runtime")


def context_now() -> Any:
    """The sender's OpenTelemetry context, to parent the receiver's span."""
    from opentelemetry.context import get_current  # noqa: PLC0415 (optional)

    return get_current()

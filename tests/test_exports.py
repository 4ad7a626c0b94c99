"""The public API is exactly what the docs name; nothing becomes API by accident."""

from __future__ import annotations

import runtime
import runtime.errors

PUBLIC = {
    "Actor",
    "ActorContext",
    "ActorRef",
    "ActorStatistics",
    "ActorSystem",
    "BackoffSpec",
    "BreakerSpec",
    "BudgetSpec",
    "BudgetStatistics",
    "CheckpointStatistics",
    "CheckpointStore",
    "ChildSpec",
    "DeadLetter",
    "HeldLock",
    "Lease",
    "Limiter",
    "LimiterStatistics",
    "LockStatistics",
    "MailboxSpec",
    "MemoryStore",
    "MetricsSpec",
    "PoolSpec",
    "PoolStatistics",
    "PostgresStore",
    "Progress",
    "RateSpec",
    "Resource",
    "ResourceSpec",
    "ResourceStatistics",
    "RetrySpec",
    "SqliteStore",
    "SupervisorSpec",
    "Topology",
    "TreeNode",
    "UsageStatistics",
    "add_correlation_id",
    "correlation_id",
    "errors",
    "handler",
    "load_topology",
    "open_store",
    "open_system",
    "parse_topology",
}

ERRORS = {
    "ActorFailed",
    "ActorNotFound",
    "ActorStopped",
    "ActorSystemError",
    "AskTimeout",
    "BudgetExceeded",
    "CheckpointConflict",
    "CircuitOpen",
    "LockHeld",
    "LockLost",
    "MailboxFull",
    "ResourceError",
    "StartFailed",
    "StoreUnavailable",
    "StateError",
    "SupervisorGaveUp",
    "TopologyError",
    "UnknownMessage",
}


def test_public_names() -> None:
    """runtime.__all__ is sorted and equals the documented public names."""
    assert runtime.__all__ == sorted(runtime.__all__)
    assert set(runtime.__all__) == PUBLIC
    for name in PUBLIC:
        assert hasattr(runtime, name)


def test_error_hierarchy() -> None:
    """Every error descends from ActorSystemError and the builtin it stands for."""
    assert set(runtime.errors.__all__) == ERRORS
    for name in ERRORS:
        assert issubclass(getattr(runtime.errors, name), runtime.errors.ActorSystemError)
    assert issubclass(runtime.errors.AskTimeout, TimeoutError)
    assert issubclass(runtime.errors.ActorNotFound, LookupError)
    assert issubclass(runtime.errors.UnknownMessage, TypeError)
    assert issubclass(runtime.errors.TopologyError, ValueError)
    assert issubclass(runtime.errors.StateError, ValueError)
    assert issubclass(runtime.errors.SupervisorGaveUp, runtime.errors.ActorFailed)
    assert issubclass(runtime.errors.StartFailed, runtime.errors.ActorFailed)
    assert issubclass(runtime.errors.StoreUnavailable, ConnectionError)
    assert issubclass(runtime.errors.LockHeld, TimeoutError)

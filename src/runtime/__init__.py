"""A supervised actor runtime for LLM agents, on trio structured concurrency."""

from . import errors as errors
from ._actor import Actor as Actor
from ._actor import handler as handler
from ._budget import BudgetStatistics as BudgetStatistics
from ._budget import UsageStatistics as UsageStatistics
from ._checkpoint import CheckpointStatistics as CheckpointStatistics
from ._checkpoint import CheckpointStore as CheckpointStore
from ._checkpoint import MemoryStore as MemoryStore
from ._checkpoint import PostgresStore as PostgresStore
from ._checkpoint import SqliteStore as SqliteStore
from ._checkpoint import open_store as open_store
from ._context import ActorContext as ActorContext
from ._correlation import add_correlation_id as add_correlation_id
from ._correlation import correlation_id as correlation_id
from ._limiter import Limiter as Limiter
from ._limiter import LimiterStatistics as LimiterStatistics
from ._locks import HeldLock as HeldLock
from ._locks import Lease as Lease
from ._locks import LockStatistics as LockStatistics
from ._pool import PoolStatistics as PoolStatistics
from ._ref import ActorRef as ActorRef
from ._ref import ActorStatistics as ActorStatistics
from ._resource import Resource as Resource
from ._resource import ResourceStatistics as ResourceStatistics
from ._services import open_system as open_system
from ._specs import BackoffSpec as BackoffSpec
from ._specs import BreakerSpec as BreakerSpec
from ._specs import BudgetSpec as BudgetSpec
from ._specs import ChildSpec as ChildSpec
from ._specs import MailboxSpec as MailboxSpec
from ._specs import MetricsSpec as MetricsSpec
from ._specs import PoolSpec as PoolSpec
from ._specs import RateSpec as RateSpec
from ._specs import ResourceSpec as ResourceSpec
from ._specs import RetrySpec as RetrySpec
from ._specs import SupervisorSpec as SupervisorSpec
from ._specs import Topology as Topology
from ._system import ActorSystem as ActorSystem
from ._system import DeadLetter as DeadLetter
from ._system import Progress as Progress
from ._system import TreeNode as TreeNode
from ._topology import load_topology as load_topology
from ._topology import parse_topology as parse_topology

__all__ = [
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
]

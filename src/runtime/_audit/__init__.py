"""``python -m runtime audit``: a static audit of Python code and topology
files for unbounded concurrency (DESIGN 6.6); see docs/audit.md."""

from .command import add_audit_parser as add_audit_parser
from .command import run_audit as run_audit
from .rules import RULES as RULES
from .rules import Finding as Finding
from .scan import AuditResult as AuditResult
from .scan import audit as audit

__all__ = ["RULES", "AuditResult", "Finding", "add_audit_parser", "audit", "run_audit"]

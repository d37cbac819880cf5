"""Retention: how long AMAS keeps each category of data, and what happens after.

Policies live as YAML in ``retention/`` at the project root, where compliance reviews them.

- ``policy``: reads and checks them against the store's real schema (``Base.metadata``).
- ``plan``: the pure decision, ``plan(items, policies, now)``, with a reason per item.
- ``links``, ``query``: how rows reach a subject or a case, and the set-based SQL (due, held, done).
- ``apply``: surveys, the safety stop, batches, archives, progress and audit events.
- ``prefect_meta``, ``objects``: Prefect's flow runs and artifacts, and storage prefixes, as categories.
- ``report``: the compliance report (HTML with an age chart, CSV, JSON, Markdown).
"""

from amas.retention.policy import (
    DEFAULT_DIRECTORY,
    LEGAL_BASES,
    STRATEGIES,
    LegalHold,
    Policy,
    PolicySet,
    Strategy,
    cutoff,
    get_strategy,
    load_policies,
    policy_problems,
)

__all__ = [
    "DEFAULT_DIRECTORY",
    "LEGAL_BASES",
    "STRATEGIES",
    "LegalHold",
    "Policy",
    "PolicySet",
    "Strategy",
    "cutoff",
    "get_strategy",
    "load_policies",
    "policy_problems",
]

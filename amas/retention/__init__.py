"""Retention: how long the AMAS store keeps each category of data, and what happens after.

Policies live as YAML in ``retention/`` at the project root, where compliance reviews them.
``policy`` reads and checks them against the store's real schema (``Base.metadata``) and holds
the pure date arithmetic; planning and applying retention build on it and never read YAML
themselves.
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

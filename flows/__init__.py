"""Prefect flows: thin orchestration over ``agents`` and ``amas``, one module per family.

Each module's flows are deployed from ``prefect.yaml``; the CLI runs the same flows.
"""

"""Shared fixtures live in tests/plugins/, one module per service."""

pytest_plugins = [
    "tests.plugins.settings",
    "tests.plugins.postgres",
    "tests.plugins.store",
    "tests.plugins.s3",
    "tests.plugins.prefect_server",
]

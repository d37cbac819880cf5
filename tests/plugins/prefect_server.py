"""Placeholder until the Prefect server fixture lands."""

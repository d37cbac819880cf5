"""Backups with restore verification."""

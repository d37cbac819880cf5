"""Every test starts from clean settings: no AMAS_* from the caller, no .env, its own home."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from amas.config import get_settings


@pytest.fixture(autouse=True)
def isolated_settings(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Point AMAS_HOME at a fresh directory and forget cached settings before and after."""
    for name in list(os.environ):
        if name.startswith("AMAS_"):
            monkeypatch.delenv(name)
    home = tmp_path_factory.mktemp("amas-home")
    monkeypatch.setenv("AMAS_ENV_FILE", "")
    monkeypatch.setenv("AMAS_HOME", str(home))
    get_settings.cache_clear()
    yield home
    get_settings.cache_clear()

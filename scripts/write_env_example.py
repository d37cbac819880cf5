"""Write .env.example from the settings classes, so it lists every variable the code reads."""

from __future__ import annotations

from pathlib import Path

from amas.config import env_example

Path(__file__).resolve().parent.parent.joinpath(".env.example").write_text(env_example())

"""The ``params.yaml`` sections of the pipeline's stages, validated with one clear line."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from amas.errors import ConfigError

M = TypeVar("M", bound=BaseModel)


class StageParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ValidateParams(StageParams):
    redact_samples: bool = Field(True, description="Mask unexpected-value samples in reports (they may be personal data).")


class ClassifyParams(StageParams):
    sample_rows: int = Field(5000, ge=100, le=1_000_000, description="Rows sampled per dataset.")
    seed: int = Field(0, ge=0, description="Seed of the row sample.")
    min_confidence: float = Field(0.5, ge=0.0, le=1.0, description="Columns at or above this are personal data.")


class CleanParams(StageParams):
    ipv4_prefix: int = Field(24, ge=8, le=30, description="IPv4 addresses are kept only as this network prefix (/31 and /32 would keep the host).")
    ipv6_prefix: int = Field(48, ge=16, le=64, description="IPv6 addresses are kept only as this network prefix (at most /64, one subscriber).")


class FeaturesParams(StageParams):
    failed_login_types: list[str] = Field(["login_failed"], min_length=1,
                                          description="Event types that count as failed logins.")


def read_params_file(path: Path) -> dict[str, Any]:
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: params file not found") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}: not valid YAML{at}") from None
    if document is None:  # an empty file: no sections, so each stage says which one it needs
        return {}
    if not isinstance(document, dict):
        raise ConfigError(f"{path}: expected a mapping of stage sections")
    return document


def load_section(path: Path, section: str, model: type[M]) -> M:
    """The ``section`` of the params file as ``model``; ConfigError naming every bad field."""
    raw = read_params_file(path).get(section, {})
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: '{section}:' must be a mapping")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        parts = []
        for error in exc.errors():
            field = ".".join([section, *(str(p) for p in error["loc"])])
            reason = error["msg"]
            if error["type"] == "extra_forbidden":
                reason = f"unknown setting; valid: {', '.join(model.model_fields)}"
            elif "input" in error:
                reason += f" (got {repr(error['input'])[:60]})"
            parts.append(f"{field}: {reason}")
        raise ConfigError(f"{path}: " + "; ".join(parts)) from None

"""Typed, validated configuration: one pydantic model per stage, composed into PipelineConfig.

Each stage owns its config class in ``jobs/<stage>/config.py``; this module only provides the base
class and the composition. Unknown keys are errors (a typo must not silently fall back to a default),
and the canonical JSON of a config is hashed into every manifest.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError


class ConfigError(ValueError):
    """A configuration file or value is invalid; the message says which key and why."""


class StageConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def config_hash(self) -> str:
        return hash_json(self.to_dict())

    @classmethod
    def from_mapping(cls, data: dict[str, Any] | None, *, where: str = ""):
        try:
            return cls.model_validate(data or {})
        except ValidationError as exc:
            raise ConfigError(_format_errors(exc, where or cls.__name__)) from None


def hash_json(obj: Any) -> str:
    canonical = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _format_errors(exc: ValidationError, where: str) -> str:
    lines = [f"invalid configuration in {where}:"]
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "<root>"
        lines.append(f"  - {loc}: {err['msg']} (got {err.get('input')!r})")
    return "\n".join(lines)


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of stage name -> settings")
    return data

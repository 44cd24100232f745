"""The whole pipeline's configuration: one typed section per stage, loadable from one YAML file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field

from jobs.codebook.config import CodebookConfig
from jobs.check.config import CheckConfig
from jobs.common.config import ConfigError, StageConfig, load_yaml
from jobs.common.spark import SparkConfig
from jobs.embed.config import EmbedConfig
from jobs.fuse.config import FuseConfig
from jobs.ingest.config import IngestConfig
from jobs.sft.config import SftConfig
from jobs.sids.config import SidConfig

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG = REPO_ROOT / "configs" / "default.yaml"


class PipelineConfig(StageConfig):
    dataset: str = "sidpipe"
    seed: int = 17
    spark: SparkConfig = Field(default_factory=SparkConfig)
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    embed: EmbedConfig = Field(default_factory=EmbedConfig)
    fuse: FuseConfig = Field(default_factory=FuseConfig)
    codebook: CodebookConfig = Field(default_factory=CodebookConfig)
    sids: SidConfig = Field(default_factory=SidConfig)
    check: CheckConfig = Field(default_factory=CheckConfig)
    sft: SftConfig = Field(default_factory=SftConfig)

    @classmethod
    def load(cls, path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> "PipelineConfig":
        """Load a YAML config (default: configs/default.yaml) and apply nested ``overrides``."""
        data = load_yaml(path) if path else (load_yaml(DEFAULT_CONFIG) if DEFAULT_CONFIG.is_file() else {})
        if overrides:
            data = deep_merge(data, overrides)
        return cls.from_mapping(data, where=str(path or DEFAULT_CONFIG))

    def stage_hash(self, stage: str) -> str:
        """Hash of what a stage depends on: its own section plus the global seed."""
        section = getattr(self, stage, None)
        if not isinstance(section, StageConfig):
            raise ConfigError(f"unknown stage {stage!r}")
        from jobs.common.config import hash_json

        return hash_json({"seed": self.seed, stage: section.to_dict()})


def deep_merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out

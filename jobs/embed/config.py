"""Configuration of the embed stage."""

from jobs.common.config import StageConfig


class EmbedConfig(StageConfig):
    pass

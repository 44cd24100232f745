"""Configuration of the sft stage."""

from jobs.common.config import StageConfig


class SftConfig(StageConfig):
    pass

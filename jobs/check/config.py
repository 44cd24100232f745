"""Configuration of the check stage."""

from jobs.common.config import StageConfig


class CheckConfig(StageConfig):
    pass

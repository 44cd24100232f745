"""Configuration of the sids stage."""

from jobs.common.config import StageConfig


class SidConfig(StageConfig):
    pass

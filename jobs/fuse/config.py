"""Configuration of the fuse stage."""

from jobs.common.config import StageConfig


class FuseConfig(StageConfig):
    pass

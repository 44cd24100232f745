"""Configuration of the codebook stage."""

from jobs.common.config import StageConfig


class CodebookConfig(StageConfig):
    pass

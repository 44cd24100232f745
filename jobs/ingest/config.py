"""Configuration of the ingest stage."""

from jobs.common.config import StageConfig


class IngestConfig(StageConfig):
    pass

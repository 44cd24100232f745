"""One logging setup for every entry point (``sidpipe`` CLI, each stage's spark-submit, the DAG's report).

sidpipe's own loggers report progress at INFO; libraries speak only from WARNING up. Importing
great_expectations alone logs some 200 INFO lines ("Skipping registering function ..."), which would
otherwise bury each stage's progress in the run's output and the Airflow task logs.
"""

from __future__ import annotations

import logging

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
PIPELINE_LOGGER = "sidpipe"


def configure_logging(level: int = logging.INFO, *, library_level: int = logging.WARNING) -> None:
    """sidpipe's loggers at ``level``, every other logger (the root's handlers) at ``library_level``."""
    logging.basicConfig(level=library_level, format=LOG_FORMAT)
    logging.getLogger(PIPELINE_LOGGER).setLevel(level)

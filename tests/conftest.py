"""Shared fixtures: one local SparkSession for the whole suite, and the bundled sample's paths."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLE_DIR = REPO_ROOT / "samples" / "amazon_scientific"

# Caches of HF/torch land under the test session's temp dir, never in the home folder.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")


@pytest.fixture(scope="session")
def spark():
    from jobs.common.spark import SparkConfig, get_session

    session = get_session(SparkConfig(master="local[2]", shuffle_partitions=4, driver_memory="4g"))
    yield session
    session.stop()


@pytest.fixture(scope="session")
def sample_catalog() -> Path:
    return SAMPLE_DIR / "catalog.jsonl"


@pytest.fixture(scope="session")
def sample_interactions() -> Path:
    return SAMPLE_DIR / "interactions.jsonl"

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
# Every JVM the suite starts (this session's and each spark-submit of the DAG test) only handles tiny
# tables: the client compiler alone and the serial collector start faster and burn far less CPU than
# the server JIT warming up (measured on a check-stage spark-submit: 48 s -> 27 s of CPU). Production
# runs are not affected.
os.environ.setdefault("SPARK_SUBMIT_OPTS", "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC")


def pytest_collection_modifyitems(config, items):
    """Longest files first: end-to-end runs (``slow``), then Spark tests (``spark``), then plain Python.
    With two xdist workers taking a file at a time (``--dist loadfile --no-loadscope-reorder``; xdist
    otherwise orders files by how many tests they hold, which puts the one-test end-to-end runs
    last), the short files even out the end of the run instead of one long file running alone."""

    def weight(item) -> int:
        return 0 if item.get_closest_marker("slow") else 1 if item.get_closest_marker("spark") else 2

    file_weight: dict = {}
    for item in items:
        file_weight[item.path] = min(file_weight.get(item.path, 2), weight(item))
    items.sort(key=lambda item: file_weight[item.path])  # stable: each file keeps its own order


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


@pytest.fixture(scope="session")
def make_context(spark, tmp_path_factory):
    """Build a StageContext for a fresh run dir: ``make_context(catalog, interactions, overrides={...})``."""
    from jobs.common.layout import RunLayout
    from jobs.common.pipeline_config import PipelineConfig
    from jobs.common.stage import Inputs, StageContext

    def build(catalog="", interactions="", *, fmt="auto", overrides=None, run_dir=None, previous_version=None, snapshot_id="test"):
        run_dir = Path(run_dir) if run_dir else tmp_path_factory.mktemp("run")
        return StageContext(
            spark=spark,
            layout=RunLayout(run_dir),
            config=PipelineConfig.load(overrides=overrides),
            inputs=Inputs(str(catalog), str(interactions), fmt),
            snapshot_id=snapshot_id,
            cache_dir=run_dir.parent / "_cache",
            previous_version=previous_version,
        )

    return build

"""The one SparkSession factory. ``local[*]`` by default; any master by config or ``--master``."""

from __future__ import annotations

import os
import sys

from pydantic import Field

from jobs.common.config import StageConfig


class SparkConfig(StageConfig):
    master: str = "local[*]"
    app_name: str = "sidpipe"
    # Sized for a 2-core, 24 GiB machine: the driver holds the JVM heap; Python workers (torch,
    # sentence-transformers) live outside it, so most memory is left to them.
    driver_memory: str = "6g"
    shuffle_partitions: int = Field(default=8, ge=1)
    arrow_batch_size: int = Field(default=2000, ge=1)
    extra: dict[str, str] = Field(default_factory=dict)


def check_java() -> None:
    """Spark needs Java 17+; say so plainly instead of failing inside py4j."""
    import shutil
    import subprocess

    java = shutil.which("java", path=os.path.join(os.environ["JAVA_HOME"], "bin") if "JAVA_HOME" in os.environ else None) or shutil.which("java")
    if java is None:
        raise RuntimeError("Java 17 or newer is required by Spark but `java` was not found (install OpenJDK 17 or set JAVA_HOME)")
    out = subprocess.run([java, "-version"], capture_output=True, text=True).stderr
    try:
        token = out.split('"')[1]
        major = int(token.split(".")[0]) if not token.startswith("1.") else int(token.split(".")[1])
    except (IndexError, ValueError):
        return
    if major < 17:
        raise RuntimeError(f"Java 17 or newer is required by Spark, found Java {major} at {java}")


def get_session(cfg: SparkConfig | None = None, *, master: str | None = None):
    """Build (or return the active) SparkSession configured for sidpipe."""
    from pyspark.sql import SparkSession

    cfg = cfg or SparkConfig()
    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    check_java()
    # Workers must run this interpreter (the venv's), not whatever `python3` is first on PATH.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    builder = SparkSession.builder
    # Under spark-submit (PYSPARK_GATEWAY_PORT set) the submitter's --master wins unless one is forced.
    if master or "PYSPARK_GATEWAY_PORT" not in os.environ:
        builder = builder.master(master or cfg.master)
    builder = (
        builder.appName(cfg.app_name)
        .config("spark.driver.memory", cfg.driver_memory)
        .config("spark.sql.shuffle.partitions", str(cfg.shuffle_partitions))
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.sql.execution.arrow.maxRecordsPerBatch", str(cfg.arrow_batch_size))
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.python.worker.reuse", "true")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.sources.partitionOverwriteMode", "dynamic")
        # From the context's start (setLogLevel afterwards would let its INFO start-up lines through,
        # some 40 in every spark-submit's Airflow task log)
        .config("spark.log.level", "ERROR")
    )
    for key, value in cfg.extra.items():
        builder = builder.config(key, value)
    return builder.getOrCreate()


def stop_active_session() -> None:
    """End this process's Spark application, if one started. Entry points call it on the way out, so a
    cluster records the application as finished, not as lost with its driver (on local-cluster, a JVM
    exiting with a live application makes its workers try to relaunch executors during shutdown)."""
    if "pyspark" not in sys.modules:  # nothing started Spark (e.g. `sidpipe versions`)
        return
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        active.stop()

"""One DAG run per catalog snapshot: prepare -> ingest -> embed -> fuse -> codebook -> sids -> check -> sft
-> report -> publish.

Wiring only: no pyspark / torch / model / great_expectations import at parse time. Each stage task
submits ``jobs/<stage>/main.py`` with spark-submit (the venv's local one through the ``spark_local``
connection by default; point ``SIDPIPE_SPARK_CONN_ID`` at a cluster connection to run elsewhere).
Every output is keyed by the version computed in ``prepare`` from the snapshot id, the input
fingerprints, the config and the code, never by wall-clock time, and every task is idempotent: a
stage whose completion marker exists is not resubmitted, and publish is a no-op for a published
version. The codebook stage itself decides "train or reuse the frozen codebook" and records why.
"""

from __future__ import annotations

import os
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.sdk import DAG, Param, task

REPO = Path(os.environ.get("SIDPIPE_REPO", Path(__file__).resolve().parents[1]))
# Same order as sidpipe.pipeline.STAGES (a test keeps them equal; importing it here would load the configs).
STAGE_NAMES = ["ingest", "embed", "fuse", "codebook", "sids", "check", "sft"]
SPARK_CONN_ID = os.environ.get("SIDPIPE_SPARK_CONN_ID", "spark_local")
DEFAULT_ROOT = os.environ.get("SIDPIPE_ROOT", str(REPO / "published"))
# The interpreter spark-submit's Python driver and workers use; the venv's by default.
PYTHON = os.environ.get("SIDPIPE_PYTHON", sys.executable)
# Retrying is safe (every task is idempotent); 0 in tests so a failure surfaces at once.
TASK_RETRIES = int(os.environ.get("SIDPIPE_TASK_RETRIES", "1"))
SAMPLE = REPO / "samples" / "amazon_scientific"

PLAN = "ti.xcom_pull(task_ids='prepare')"


class StageSubmitOperator(SparkSubmitOperator):
    """spark-submit of one stage, skipped when the staged run already holds that stage's marker.

    The version's lock is held while the job runs, so two DAG runs of one version never write the
    same staging dir at once (the second then finds the marker and skips).
    """

    def __init__(self, *, stage: str, **kwargs):
        super().__init__(**kwargs)
        self.stage = stage

    def execute(self, context):
        from jobs.common.layout import RunLayout
        from sidpipe.pipeline import load_plan
        from sidpipe.publish import file_lock

        plan = load_plan(context["ti"].xcom_pull(task_ids="prepare")["plan_file"])
        with file_lock(plan.paths.version_lock(plan.version), what=f"version {plan.version}"):
            if RunLayout(plan.run_dir).marker(self.stage).is_file():
                self.log.info("stage %s already complete in %s: not resubmitted", self.stage, plan.run_dir)
                return None
            return super().execute(context)


def _spark_env() -> dict[str, str]:
    venv_bin = str(Path(PYTHON).parent)
    return {
        "PYSPARK_PYTHON": PYTHON,
        "PYSPARK_DRIVER_PYTHON": PYTHON,
        # spark-submit is looked up on this PATH: the one pyspark installs next to the interpreter.
        "PATH": venv_bin + os.pathsep + os.environ.get("PATH", ""),
        "SPARK_LOCAL_IP": os.environ.get("SPARK_LOCAL_IP", "127.0.0.1"),
    }


def _stage_args(extra: list[str] | None = None) -> list[str]:
    return [
        "--run-dir", "{{ " + PLAN + "['run_dir'] }}",
        "--config", "{{ " + PLAN + "['config_file'] }}",
        "--snapshot-id", "{{ " + PLAN + "['snapshot_id'] }}",
        "--catalog", "{{ params.catalog }}",
        "--interactions", "{{ params.interactions }}",
        "--format", "{{ params.input_format }}",
        "--cache-dir", "{{ " + PLAN + "['cache_dir'] }}",
        "--previous-version", "{{ " + PLAN + "['previous_version'] }}",
        *(extra or []),
    ]  # fmt: skip


def build_dag(dag_id: str = "sidpipe_snapshot", stages: list[str] | None = None) -> DAG:
    stages = list(stages or STAGE_NAMES)
    with DAG(
        dag_id=dag_id,
        description="catalog snapshot -> semantic IDs -> SFT corpus, published as an atomic version",
        schedule=None,
        start_date=datetime(2026, 1, 1, tzinfo=UTC),
        catchup=False,
        max_active_runs=4,
        default_args={"retries": TASK_RETRIES, "retry_delay": timedelta(minutes=2)},
        tags=["sidpipe"],
        params={
            "snapshot_id": Param(
                "",
                type="string",
                description="Snapshot id; empty: the run's data_interval_end as YYYYMMDD (never the clock)",
            ),
            "catalog": Param(str(SAMPLE / "catalog.jsonl"), type="string", minLength=1),
            "interactions": Param(str(SAMPLE / "interactions.jsonl"), type="string", minLength=1),
            "input_format": Param("auto", type="string", enum=["auto", "parquet", "jsonl", "csv", "lcrec"]),
            "config_path": Param("", type="string", description="YAML config; empty: configs/default.yaml"),
            "root": Param(DEFAULT_ROOT, type="string", minLength=1, description="publishing root"),
            "force_retrain": Param(
                False, type="boolean", description="train a new codebook even if reuse is allowed"
            ),
        },
    ) as dag:

        @task(task_id="prepare")
        def prepare(params=None, data_interval_end=None) -> dict:
            from sidpipe.pipeline import prepare_run

            snapshot_id = params["snapshot_id"] or (
                data_interval_end.strftime("%Y%m%d") if data_interval_end else ""
            )
            if not snapshot_id:
                raise ValueError(
                    "no snapshot_id: pass the snapshot_id param (manual runs have no data interval)"
                )
            out = prepare_run(
                root=params["root"],
                catalog=params["catalog"],
                interactions=params["interactions"],
                input_format=params["input_format"],
                snapshot_id=snapshot_id,
                config_path=params["config_path"] or None,
                force_retrain=bool(params["force_retrain"]),
                stage_names=stages,
            )
            return {**out, "snapshot_id": snapshot_id}

        @task.short_circuit(task_id="not_yet_published")
        def not_yet_published(plan: dict) -> bool:
            return not plan["published"]

        @task(task_id="publish")
        def publish(plan: dict) -> dict:
            from sidpipe.pipeline import publish_prepared

            return publish_prepared(plan["plan_file"], stages)

        plan = prepare()
        gate = not_yet_published(plan)
        previous = gate
        for stage in stages:
            submit = StageSubmitOperator(
                task_id=stage,
                stage=stage,
                application=str(REPO / "jobs" / stage / "main.py"),
                application_args=_stage_args(),
                conn_id=SPARK_CONN_ID,
                name=f"sidpipe-{stage}",
                env_vars=_spark_env(),
            )
            previous >> submit
            previous = submit
        report = SparkSubmitOperator(
            task_id="report",
            application=str(REPO / "sidpipe" / "pipeline.py"),
            application_args=[
                "report",
                "--plan-file",
                "{{ " + PLAN + "['plan_file'] }}",
                "--stages",
                ",".join(stages),
            ],
            conn_id=SPARK_CONN_ID,
            name="sidpipe-report",
            env_vars=_spark_env(),
        )
        previous >> report >> publish(plan)
    return dag


dag = build_dag()

"""The snapshot DAG parses cleanly, wires the expected graph and imports nothing heavy at parse time."""

from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

DAG_FILE = REPO / "dags" / "sidpipe_snapshot.py"
STAGES = ["ingest", "embed", "fuse", "codebook", "sids", "check", "sft"]


def test_dagbag_imports_without_errors_and_has_the_expected_graph():
    from airflow.dag_processing.dagbag import DagBag
    from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator

    bag = DagBag(dag_folder=str(REPO / "dags"))
    assert bag.import_errors == {}
    dag = bag.dags.get("sidpipe_snapshot")
    assert dag is not None
    chain = ["prepare", "not_yet_published", *STAGES, "report", "publish"]
    assert set(dag.task_ids) == set(chain)
    for upstream, downstream in itertools.pairwise(chain):
        assert dag.get_task(downstream).upstream_task_ids >= {upstream}, (upstream, downstream)
    assert dag.get_task("publish").upstream_task_ids == {"report", "prepare"}
    assert set(dag.params) == {
        "snapshot_id",
        "catalog",
        "interactions",
        "input_format",
        "config_path",
        "root",
        "force_retrain",
    }
    for stage in STAGES:
        task = dag.get_task(stage)
        assert isinstance(task, SparkSubmitOperator)
        assert task.application == str(REPO / "jobs" / stage / "main.py")
        args = task.application_args
        for flag in ("--run-dir", "--config", "--snapshot-id", "--catalog", "--interactions", "--cache-dir"):
            assert flag in args, (stage, flag)


def test_dag_stage_list_matches_the_pipeline():
    import importlib.util

    spec = importlib.util.spec_from_file_location("sidpipe_snapshot_dag", DAG_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    from sidpipe.pipeline import STAGES as PIPELINE_STAGES

    assert module.STAGE_NAMES == [name for name, _ in PIPELINE_STAGES] == STAGES


def test_dag_file_imports_no_heavy_module_at_parse_time():
    heavy = [
        "pyspark",
        "torch",
        "sentence_transformers",
        "great_expectations",
        "faiss",
        "transformers",
        "datasets",
    ]
    code = (
        "import runpy, sys; runpy.run_path(sys.argv[1]); "
        f"print(sorted(m for m in {heavy!r} if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(DAG_FILE)], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout


def test_ruff_airflow_rules_pass():
    out = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--select", "AIR", str(REPO / "dags")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr

"""End to end: `airflow dags test` of the snapshot DAG on a slice of the sample, with a throwaway
AIRFLOW_HOME and SQLite DB; every stage is a real spark-submit of jobs/<stage>/main.py.

The DAG under test is dags/sidpipe_snapshot.py copied into a temporary DAGs folder, built over the
stages that have landed (committed) so far, in pipeline order; once all have landed it is the full DAG.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))

from test_publish_fakes import small_pipeline_overrides, write_snapshot

from jobs.common.pipeline_config import PipelineConfig

PIPELINE = ["ingest", "embed", "fuse", "codebook", "sids", "check", "sft"]
N_ITEMS = 100


def landed_stages() -> list[str]:
    """The longest prefix of the pipeline whose jobs/<stage>/main.py is committed (SIDPIPE_TEST_STAGES overrides)."""
    if os.environ.get("SIDPIPE_TEST_STAGES"):
        return os.environ["SIDPIPE_TEST_STAGES"].split(",")
    tracked = subprocess.run(
        ["git", "-C", str(REPO), "ls-files", "jobs"], capture_output=True, text=True, check=False
    ).stdout
    stages = []
    for stage in PIPELINE:
        if f"jobs/{stage}/main.py" not in tracked.split():
            break
        stages.append(stage)
    return stages


def _airflow(env, *args, timeout=1200):
    return subprocess.run(
        [str(Path(sys.executable).parent / "airflow"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.mark.slow
def test_airflow_dags_test_runs_the_snapshot_dag_and_publishes_once(tmp_path, isolated_airflow_env):
    stages = landed_stages()
    if not stages:
        pytest.skip("no pipeline stage has landed yet")
    home, dags = tmp_path / "airflow", tmp_path / "dags"
    dags.mkdir(parents=True)
    source = (REPO / "dags" / "sidpipe_snapshot.py").read_text()
    assert source.rstrip().endswith("\ndag = build_dag()")
    (dags / "sidpipe_snapshot.py").write_text(
        source.rstrip()[: -len("build_dag()")] + f"build_dag(stages={stages!r})\n"
    )
    # Pinned code version: other work may edit the source between the two DAG runs below.
    env = {**isolated_airflow_env(home, dags), "SIDPIPE_TASK_RETRIES": "0", "SIDPIPE_CODE_VERSION": "e2e"}
    migrated = _airflow(env, "db", "migrate", timeout=180)
    assert migrated.returncode == 0, migrated.stderr[-3000:]

    cat, inter, _ = write_snapshot(tmp_path / "snap", n_items=N_ITEMS)
    # The whole resolved config, so a default changed by other work mid-test cannot change the version.
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(PipelineConfig.load(overrides=small_pipeline_overrides()).to_dict()))
    root = tmp_path / "published"
    conf = {
        "snapshot_id": "2026-11-23",
        "catalog": str(cat),
        "interactions": str(inter),
        "input_format": "jsonl",
        "config_path": str(config),
        "root": str(root),
    }
    first = _airflow(env, "dags", "test", "sidpipe_snapshot", "-c", json.dumps(conf))
    log = first.stdout + first.stderr
    assert first.returncode == 0, log[-6000:]
    # The stages' own progress reaches the task log; the libraries' and Spark's INFO chatter does not.
    assert "INFO sidpipe.check: gate ingest" in log and "Skipping registering function" not in log
    assert "INFO BlockManager" not in log and "INFO Executor" not in log

    from sidpipe import publish as P

    [row] = P.list_versions(root, "sidpipe")
    assert row["latest"] and row["snapshot_id"] == "2026-11-23" and row["version"].startswith("2026-11-23-")
    manifest = P.read_manifest(Path(row["path"]))
    assert manifest["stage_order"] == stages and manifest["parent_version"] is None
    assert manifest["stages"]["ingest"]["counts"]["items_out"] == N_ITEMS
    assert manifest["config"]["spark"]["master"] == "local[2]" and manifest["code_version"] == "e2e"
    assert not (root / "sidpipe" / "_staging" / row["version"]).exists()
    manifest_mtime = (Path(row["path"]) / P.MANIFEST).stat().st_mtime_ns

    # The same snapshot again: prepare finds the version published and everything downstream is skipped.
    second = _airflow(env, "dags", "test", "sidpipe_snapshot", "-c", json.dumps(conf))
    assert second.returncode == 0, (second.stdout + second.stderr)[-6000:]
    assert [r["version"] for r in P.list_versions(root, "sidpipe")] == [row["version"]]
    assert (Path(row["path"]) / P.MANIFEST).stat().st_mtime_ns == manifest_mtime
    assert not (root / "sidpipe" / "_staging" / row["version"]).exists()

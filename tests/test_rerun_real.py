"""Reruns with the real stages, in process on the shared SparkSession: byte-identical reruns, and a
second snapshot (5% changed, 5% added, 2% removed) that keeps unchanged items' SIDs.

Runs the longest prefix of the pipeline whose stages have landed (committed); the churn test needs
the SID stage. SIDPIPE_TEST_STAGES=ingest,embed,... overrides the prefix.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import test_publish_fakes as F

from jobs.common.pipeline_config import PipelineConfig
from jobs.common.stage import Inputs
from sidpipe import publish as P
from sidpipe.pipeline import STAGES, run_pipeline

REPO = Path(__file__).resolve().parents[1]
N_ITEMS = 100


def landed_stages() -> list[tuple[str, str]]:
    if os.environ.get("SIDPIPE_TEST_STAGES"):
        wanted = os.environ["SIDPIPE_TEST_STAGES"].split(",")
        return [s for s in STAGES if s[0] in wanted]
    tracked = set(
        subprocess.run(
            ["git", "-C", str(REPO), "ls-files", "jobs"], capture_output=True, text=True, check=False
        ).stdout.split()
    )
    landed = []
    for name, spec in STAGES:
        if f"jobs/{name}/main.py" not in tracked:
            break
        landed.append((name, spec))
    return landed


@pytest.fixture(scope="module")
def stages():
    found = landed_stages()
    if not found:
        pytest.skip("no pipeline stage has landed yet")
    return found


@pytest.fixture(scope="module")
def config() -> PipelineConfig:
    return PipelineConfig.load(overrides=F.small_pipeline_overrides())


def _table_bytes(version_dir: Path) -> dict[str, bytes]:
    """Bytes of every Parquet file, keyed by table and part number (Spark's random UUID dropped)."""
    out = {}
    for f in sorted(version_dir.rglob("*.parquet")):
        rel = f.relative_to(version_dir)
        out[P._SPARK_PART.sub(r"part-\1", str(rel))] = f.read_bytes()
    return out


@pytest.fixture(scope="module")
def first_version(spark, tmp_path_factory, stages, config):
    """Snapshot 1 published under a fresh root (shared by the tests below: the pipeline is the slow part)."""
    root = tmp_path_factory.mktemp("published")
    cat, inter, _ = F.write_snapshot(root.parent / f"{root.name}-snap1", n_items=N_ITEMS)
    inputs = Inputs(str(cat), str(inter), "jsonl")
    outcome = run_pipeline(root=root, inputs=inputs, snapshot_id="2026-11-01", config=config, stages=stages)
    return root, inputs, outcome


@pytest.mark.slow
def test_rerun_of_a_snapshot_is_the_same_version_with_byte_identical_parquet(first_version, stages, config):
    root, inputs, first = first_version
    manifest = P.read_manifest(first.published)
    assert manifest["stage_order"] == [name for name, _ in stages]
    before = _table_bytes(first.published)
    assert before
    again = run_pipeline(root=root, inputs=inputs, snapshot_id="2026-11-01", config=config, stages=stages)
    assert again.reused and again.version == first.version

    # Unpublish it and run again: every stage recomputes (the embedding cache is warm) to the same bytes.
    shutil.rmtree(first.published)
    (root / "sidpipe" / "latest").unlink()
    fresh = run_pipeline(root=root, inputs=inputs, snapshot_id="2026-11-01", config=config, stages=stages)
    assert fresh.version == first.version and not fresh.reused
    assert set(fresh.results) == {name for name, _ in stages}
    after = _table_bytes(fresh.published)
    assert before.keys() == after.keys()
    assert [k for k in before if before[k] != after[k]] == []
    assert P.read_manifest(fresh.published)["data_fingerprints"] == manifest["data_fingerprints"]


@pytest.mark.slow
def test_second_snapshot_keeps_unchanged_sids_and_shows_churn(first_version, stages, config):
    if "sids" not in [name for name, _ in stages]:
        pytest.skip("the SID stage has not landed yet")
    root, _, v1 = first_version
    cat2, inter2, churn = F.write_snapshot(
        root.parent / f"{root.name}-snap2", n_items=N_ITEMS, changed=0.05, added=0.05, removed=0.02
    )
    inputs2 = Inputs(str(cat2), str(inter2), "jsonl")
    v2 = run_pipeline(root=root, inputs=inputs2, snapshot_id="2026-11-08", config=config, stages=stages)
    assert v2.version != v1.version and v2.parent_version == v1.version
    manifest = P.read_manifest(v2.published)
    c = manifest["churn_vs_parent"]
    assert c["available"] and c["added"] == len(churn["added"]) and c["removed"] == len(churn["removed"])
    assert c["changed_text"] == len(churn["changed"])
    assert c["unchanged_text_sid_changed"] == 0, c["examples_sid_changed"]
    assert c["retired_sids_reused"] == 0
    if "embed" in manifest["stages"]:
        # unchanged items take the parent version's vectors as they are; changed and added ones are blended
        reused = manifest["stages"]["embed"]["metrics"]["reused_from_previous_version"]
        assert reused == N_ITEMS - len(churn["removed"]) - len(churn["changed"])
    diff = P.diff_versions(root, "sidpipe", v1.version, v2.version)
    assert diff["sid_churn"] == c
    if "codebook" in manifest["stages"]:
        assert diff["codebook"]["changed"] is False, "a 5% churn must reuse the frozen codebook"
    assert P.latest_version_dir(root, "sidpipe") == v2.published

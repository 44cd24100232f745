"""Versioned atomic publishing: version ids, manifest, latest pointer, crashes, locks, readers, diffs.

These tests drive the real run_pipeline / publish code with the small stage functions of
``test_publish_fakes`` (machinery only); the real stages are exercised in ``test_rerun_real.py``.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import test_publish_fakes as F

from jobs.common.layout import RunLayout
from jobs.common.pipeline_config import PipelineConfig
from jobs.common.stage import GateFailed, Inputs
from sidpipe import publish as P
from sidpipe.pipeline import effective_config, plan_run, run_pipeline, version_id

N_ITEMS = 200


@pytest.fixture(autouse=True)
def _reset_fakes(monkeypatch):
    F.reset()
    for name, module in F.recording_gate_modules().items():
        monkeypatch.setitem(sys.modules, name, module)
    yield
    F.reset()


@pytest.fixture(scope="module")
def snapshot1(tmp_path_factory) -> Inputs:
    cat, inter, _ = F.write_snapshot(tmp_path_factory.mktemp("snap1"), n_items=N_ITEMS)
    return Inputs(str(cat), str(inter), "jsonl")


@pytest.fixture(scope="module")
def config() -> PipelineConfig:
    return PipelineConfig.load()


def _run(root: Path, inputs: Inputs, config, snapshot="s1", **kw):
    return run_pipeline(
        root=root, inputs=inputs, snapshot_id=snapshot, config=config, stages=F.FAKE_STAGES, **kw
    )


def _visible(root: Path) -> list[str]:
    return [row["version"] for row in P.list_versions(root, "sidpipe")]


def _parquet_bytes(version_dir: Path) -> dict[str, bytes]:
    """Every data file's bytes, keyed by table and position (Spark's part-file UUIDs dropped)."""
    out = {}
    for table in ("catalog", "sids"):
        files = sorted((version_dir / table).glob("*.parquet"))
        for i, f in enumerate(files):
            out[f"{table}/{i}"] = f.read_bytes()
    return out


def test_version_id_is_a_pure_function_of_snapshot_inputs_config_and_code():
    fp = {"catalog": "a", "interactions": "b"}
    v = version_id("2026-11-23", fp, "cfg1", "0.1.0+abc")
    assert v == version_id("2026-11-23", fp, "cfg1", "0.1.0+abc")
    assert v.startswith("2026-11-23-")
    for other in (
        version_id("2026-11-24", fp, "cfg1", "0.1.0+abc"),
        version_id("2026-11-23", {**fp, "catalog": "c"}, "cfg1", "0.1.0+abc"),
        version_id("2026-11-23", fp, "cfg2", "0.1.0+abc"),
        version_id("2026-11-23", fp, "cfg1", "0.1.0+def"),
    ):
        assert other != v
    # Unsafe snapshot ids still give one plain path component.
    assert "/" not in version_id("../a/b c", fp, "cfg1", "x") and not version_id(
        "_x", fp, "c", "x"
    ).startswith("_")


def test_code_version_is_a_digest_of_the_pipeline_source(tmp_path, monkeypatch):
    from sidpipe import pipeline

    (tmp_path / "jobs").mkdir()
    (tmp_path / "jobs" / "stage.py").write_text("X = 1\n")
    (tmp_path / "README.md").write_text("docs")
    monkeypatch.setattr(pipeline, "REPO_ROOT", tmp_path)
    monkeypatch.delenv("SIDPIPE_CODE_VERSION", raising=False)
    first = pipeline.code_version.__wrapped__()
    (tmp_path / "README.md").write_text("other docs")
    assert pipeline.code_version.__wrapped__() == first, "only pipeline source counts"
    (tmp_path / "jobs" / "stage.py").write_text("X = 2\n")
    assert pipeline.code_version.__wrapped__() != first
    monkeypatch.setenv("SIDPIPE_CODE_VERSION", "release-7")
    assert pipeline.code_version.__wrapped__() == "release-7"


def test_publish_layout_manifest_and_latest_pointer(spark, tmp_path, snapshot1, config):
    out = _run(tmp_path, snapshot1, config)
    base = tmp_path / "sidpipe"
    final = base / out.version
    assert out.published == final and final.is_dir() and not out.reused
    assert not (base / "_staging" / out.version).exists(), "staging must be renamed away"
    manifest = json.loads((final / "manifest.json").read_text())
    for key in ("version", "snapshot_id", "input_fingerprints", "config", "config_hash", "code_version", "codebook_id",
                "stages", "parent_version", "published_from", "data_fingerprints"):  # fmt: skip
        assert key in manifest, key
    assert manifest["version"] == out.version and manifest["snapshot_id"] == "s1"
    assert manifest["config_hash"] == config.config_hash() and manifest["config"] == config.to_dict()
    assert manifest["codebook_id"] == "cb-frozen-1" and manifest["parent_version"] is None
    assert manifest["stages"]["ingest"]["counts"]["items_out"] == N_ITEMS
    assert manifest["stages"]["ingest"]["outputs"]["catalog"] == "catalog", (
        "outputs are relative to the version"
    )
    assert manifest["published_from"].endswith(f"_staging/{out.version}")
    assert set(manifest["data_fingerprints"]) >= {"catalog", "sids", "codebook", "hf_dataset"}
    assert "report" not in manifest["data_fingerprints"], "the report holds wall-clock timings: documentation, not data"
    assert (
        F.GATED == F.FAKE_STAGE_NAMES and manifest["stages"]["sids"]["metrics"]["gate"]["checked"] == "sids"
    )
    assert json.loads((base / "latest").read_text())["version"] == out.version
    assert P.latest_version_dir(tmp_path, "sidpipe") == final
    [row] = P.list_versions(tmp_path, "sidpipe")
    assert (
        row["latest"] and row["counts"]["ingest.items_out"] == N_ITEMS and row["codebook_id"] == "cb-frozen-1"
    )
    dd = P.load_dataset_dict(tmp_path)
    assert set(dd) == {"train", "test"} and dd["train"].num_rows + dd["test"].num_rows == N_ITEMS


def test_rerun_same_snapshot_and_config_is_same_version_and_byte_identical(
    spark, tmp_path, snapshot1, config
):
    first = _run(tmp_path / "a", snapshot1, config)
    calls = dict(F.CALLS)
    again = _run(tmp_path / "a", snapshot1, config)
    assert again.version == first.version and again.reused
    assert F.CALLS == calls, "an already published version must not redo any stage"
    elsewhere = _run(tmp_path / "b", snapshot1, config)  # a from-scratch rerun on another root
    assert elsewhere.version == first.version
    assert _parquet_bytes(elsewhere.published) == _parquet_bytes(first.published) != {}
    m1, m2 = P.read_manifest(first.published), P.read_manifest(elsewhere.published)
    assert m1["data_fingerprints"] == m2["data_fingerprints"]


@pytest.mark.parametrize("crash_at", ["ingest", "sids", "sft"])
def test_crash_in_a_stage_leaves_no_visible_version_and_next_run_resumes(
    spark, tmp_path, snapshot1, config, crash_at
):
    F.FAIL_AT.add(crash_at)
    with pytest.raises(F.InjectedCrash):
        _run(tmp_path, snapshot1, config)
    assert _visible(tmp_path) == [] and not (tmp_path / "sidpipe" / "latest").exists()
    with pytest.raises(P.PublishError):
        P.resolve_version(tmp_path, "latest", "sidpipe")
    before = F.FAKE_STAGE_NAMES[: F.FAKE_STAGE_NAMES.index(crash_at)]
    staging = next((tmp_path / "sidpipe" / "_staging").glob("s1-*/"))
    assert sorted(p.stem for p in RunLayout(staging).stage_markers.glob("*.json")) == sorted(before)

    F.FAIL_AT.clear()
    F.CALLS.clear()
    out = _run(tmp_path, snapshot1, config)
    assert _visible(tmp_path) == [out.version]
    assert set(F.CALLS) == set(F.FAKE_STAGE_NAMES) - set(before), "completed stages are not rerun"
    reference = _run(tmp_path / "clean", snapshot1, config)
    assert reference.version == out.version
    assert (
        P.read_manifest(out.published)["data_fingerprints"]
        == P.read_manifest(reference.published)["data_fingerprints"]
    )


def test_crash_between_rename_and_manifest_is_invisible_then_completed(
    spark, tmp_path, snapshot1, config, monkeypatch
):
    real_write = P.atomic_write_text

    def crash_on_manifest(path, text):
        if Path(path).name == P.MANIFEST:
            raise F.InjectedCrash("killed before the manifest")
        real_write(path, text)

    monkeypatch.setattr(P, "atomic_write_text", crash_on_manifest)
    with pytest.raises(F.InjectedCrash):
        _run(tmp_path, snapshot1, config)
    renamed = [d for d in (tmp_path / "sidpipe").iterdir() if d.name.startswith("s1-")]
    assert len(renamed) == 1 and not (renamed[0] / P.MANIFEST).exists()
    assert _visible(tmp_path) == [] and P.latest_version_dir(tmp_path, "sidpipe") is None

    monkeypatch.setattr(P, "atomic_write_text", real_write)
    F.CALLS.clear()
    out = _run(tmp_path, snapshot1, config)
    assert F.CALLS == {}, "all stages were complete: only publishing remained"
    assert _visible(tmp_path) == [out.version] and P.latest_version_dir(tmp_path, "sidpipe") == out.published


def test_latest_pointer_moves_only_after_success(spark, tmp_path, snapshot1, config, monkeypatch):
    first = _run(tmp_path, snapshot1, config)
    cat2, inter2, _ = F.write_snapshot(tmp_path / "snap2", n_items=N_ITEMS, changed=0.05)
    inputs2 = Inputs(str(cat2), str(inter2), "jsonl")
    F.FAIL_AT.add("sft")
    with pytest.raises(F.InjectedCrash):
        _run(tmp_path, inputs2, config, snapshot="s2")
    assert P.latest_version_dir(tmp_path, "sidpipe") == first.published

    F.FAIL_AT.clear()

    def crash(paths, version):
        raise F.InjectedCrash("killed before the pointer moved")

    monkeypatch.setattr(P, "_record_in_latest", crash)
    with pytest.raises(F.InjectedCrash):
        _run(tmp_path, inputs2, config, snapshot="s2")
    assert json.loads((tmp_path / "sidpipe" / "latest").read_text())["version"] == first.version
    monkeypatch.undo()
    second = _run(tmp_path, inputs2, config, snapshot="s2")  # published already: completes the pointer
    assert second.reused and P.latest_version_dir(tmp_path, "sidpipe") == second.published
    assert P.read_manifest(second.published)["parent_version"] == first.version


def test_killed_process_leaves_no_version_releases_lock_and_resumes(spark, tmp_path, snapshot1, config):
    started = tmp_path / "sids.started"
    script = tmp_path / "run.py"
    script.write_text(
        f"""
import sys
sys.path.insert(0, {str(Path(__file__).parent)!r})
from pathlib import Path
import test_publish_fakes as F
sys.modules.update(F.recording_gate_modules())
from jobs.common.pipeline_config import PipelineConfig
from jobs.common.stage import Inputs
import sidpipe.pipeline
from sidpipe.pipeline import run_pipeline
sidpipe.pipeline.get_session = lambda *a, **k: None  # these fake stages use no Spark: spare a JVM start
F.SLOW["sids"] = 120
F.STARTED_FLAG["sids"] = Path({str(started)!r})
run_pipeline(root=Path({str(tmp_path)!r}), inputs=Inputs({snapshot1.catalog!r}, {snapshot1.interactions!r}, "jsonl"),
             snapshot_id="s1", config=PipelineConfig.load(), stages=F.FAKE_STAGES)
"""
    )
    proc = subprocess.Popen([sys.executable, str(script)], cwd=Path(__file__).parents[1])
    try:
        deadline = time.monotonic() + 240  # includes a JVM start on a busy machine
        while not started.exists():
            assert proc.poll() is None, "the run died before reaching the sids stage"
            assert time.monotonic() < deadline, "the run did not reach the sids stage"
            time.sleep(0.1)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert _visible(tmp_path) == [] and P.latest_version_dir(tmp_path, "sidpipe") is None

    out = _run(tmp_path, snapshot1, config, lock_timeout=5)  # the kernel released the dead run's lock
    assert F.CALLS == {"sids": 1, "sft": 1}, "ingest and codebook were complete before the kill"
    assert _visible(tmp_path) == [out.version]


def test_concurrent_runs_of_one_version_run_each_stage_once(spark, tmp_path, snapshot1, config):
    F.SLOW["codebook"] = 1.0
    outcomes, errors = [], []

    def go():
        try:
            outcomes.append(_run(tmp_path, snapshot1, config))
        except Exception as exc:  # noqa: BLE001 (surfaced by the assert below)
            errors.append(exc)

    threads = [threading.Thread(target=go) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert len({o.version for o in outcomes}) == 1 and sorted(o.reused for o in outcomes) == [False, True]
    assert F.CALLS == {name: 1 for name in F.FAKE_STAGE_NAMES}
    assert _visible(tmp_path) == [outcomes[0].version]


def test_concurrent_runs_of_distinct_versions_both_publish(spark, tmp_path, snapshot1, config):
    F.SLOW["codebook"] = 0.5
    cat2, inter2, _ = F.write_snapshot(tmp_path / "snap2", n_items=N_ITEMS, added=0.05)
    inputs = {"s1": snapshot1, "s2": Inputs(str(cat2), str(inter2), "jsonl")}
    outcomes, errors = {}, []

    def go(snap):
        try:
            outcomes[snap] = _run(tmp_path, inputs[snap], config, snapshot=snap)
        except Exception as exc:  # noqa: BLE001 (surfaced by the assert below)
            errors.append(exc)

    threads = [threading.Thread(target=go, args=(s,)) for s in inputs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    versions = {o.version for o in outcomes.values()}
    assert len(versions) == 2 and set(_visible(tmp_path)) == versions
    history = json.loads((tmp_path / "sidpipe" / "latest").read_text())["history"]
    assert sorted(history) == sorted(versions)
    for o in outcomes.values():
        assert P.read_manifest(o.published)["stages"]["ingest"]["counts"]["items_out"] > 0


def test_lock_held_by_another_run_fails_clearly_after_timeout(spark, tmp_path, snapshot1, config):
    plan = plan_run(root=tmp_path, inputs=snapshot1, snapshot_id="s1", config=config)
    held = rf"version {plan.version} is locked by another run \(pid {os.getpid()}\)"
    with P.file_lock(plan.paths.version_lock(plan.version)), pytest.raises(P.VersionLocked, match=held):
        _run(tmp_path, snapshot1, config, lock_timeout=0.3)
    assert F.CALLS == {}


def test_gate_failure_stops_the_run_and_publishes_nothing(spark, tmp_path, snapshot1, config):
    stages = [*F.FAKE_STAGES[:3], ("check", F.fake_check_failing), F.FAKE_STAGES[3]]
    with pytest.raises(GateFailed, match="collision_rate 0.4 > max 0.1"):
        run_pipeline(root=tmp_path, inputs=snapshot1, snapshot_id="s1", config=config, stages=stages)
    assert "sft" not in F.CALLS, "nothing downstream of a failed gate runs"
    assert _visible(tmp_path) == [] and not (tmp_path / "sidpipe" / "latest").exists()


def test_gate_findings_are_recorded_and_a_failing_gate_blocks(
    spark, tmp_path, snapshot1, config, monkeypatch
):
    """The wiring of jobs.check.gates.gate_stage: findings merged into metrics['gate']; GateFailed stops."""
    import types

    seen = []

    def gate_stage(stage, ctx, result):
        seen.append(stage)
        if stage == "sids" and ctx.snapshot_id == "bad":
            raise GateFailed("sids: duplicate SIDs 3 > 0")
        return {"passed": True, "checked": stage}

    module = types.ModuleType("jobs.check.gates")
    module.gate_stage = gate_stage
    monkeypatch.setitem(sys.modules, "jobs.check.gates", module)
    out = _run(tmp_path, snapshot1, config)
    assert seen == F.FAKE_STAGE_NAMES
    manifest = P.read_manifest(out.published)
    assert manifest["stages"]["sids"]["metrics"]["gate"] == {"passed": True, "checked": "sids"}
    assert P.list_versions(tmp_path, "sidpipe")[0]["gates"] == dict.fromkeys(F.FAKE_STAGE_NAMES, True)
    with pytest.raises(GateFailed, match=r"after stage 'sids': sids: duplicate SIDs 3 > 0"):
        _run(tmp_path, snapshot1, config, snapshot="bad")
    assert _visible(tmp_path) == [out.version]


def test_second_snapshot_is_a_new_version_with_churn_in_manifest_and_diff(spark, tmp_path, config):
    cat1, inter1, _ = F.write_snapshot(tmp_path / "snap1", n_items=N_ITEMS)
    cat2, inter2, churn = F.write_snapshot(
        tmp_path / "snap2", n_items=N_ITEMS, changed=0.05, added=0.05, removed=0.02
    )
    v1 = _run(tmp_path, Inputs(str(cat1), str(inter1), "jsonl"), config, snapshot="2026-11-01")
    v2 = _run(tmp_path, Inputs(str(cat2), str(inter2), "jsonl"), config, snapshot="2026-11-08")
    assert v2.version != v1.version and v2.parent_version == v1.version
    manifest = P.read_manifest(v2.published)
    assert manifest["parent_version"] == v1.version and manifest["codebook_id"] == "cb-frozen-1"
    c = manifest["churn_vs_parent"]
    assert (
        (c["added"], c["removed"], c["changed_text"])
        == (10, 4, 10)
        == tuple(len(churn[k]) for k in ("added", "removed", "changed"))
    )
    assert c["unchanged_text"] == N_ITEMS - 4 - 10 and c["unchanged_text_sid_changed"] == 0
    assert c["retired_sids_reused"] == 0
    d = P.diff_versions(tmp_path, "sidpipe", v1.version, "latest")
    assert d["sid_churn"] == c and d["codebook"] == {
        "v1": "cb-frozen-1",
        "v2": "cb-frozen-1",
        "changed": False,
    }
    assert d["counts"]["ingest"]["items_out"] == [N_ITEMS, N_ITEMS - 4 + 10]
    assert "catalog" in d["data_changed"] and "codebook" not in d["data_changed"]
    assert [r["version"] for r in P.list_versions(tmp_path, "sidpipe")] == [v1.version, v2.version]
    assert P.latest_version_dir(tmp_path, "sidpipe", exclude=v2.version) == v1.published


def test_churn_detects_a_moved_sid(tmp_path):
    """sid_churn must be able to fail: an unchanged item whose SID moved is counted and named."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    for name, sid_of_2 in (("old", [1, 2]), ("new", [9, 9])):
        layout = RunLayout(tmp_path / name)
        for path, table in (
            (layout.catalog, pa.table({"item_id": ["1", "2"], "text_hash": ["h1", "h2"]})),
            (
                layout.sids,
                pa.table({"item_id": ["1", "2"], "sid": pa.array([[0, 0], sid_of_2], pa.list_(pa.int32()))}),
            ),
        ):
            path.mkdir(parents=True)
            pq.write_table(table, path / "part-0.parquet")
    c = P.sid_churn(tmp_path / "old", tmp_path / "new")
    assert c["unchanged_text_sid_changed"] == 1 and c["examples_sid_changed"] == ["2"]


def test_readers_ignore_unpublished_dirs(tmp_path):
    base = tmp_path / "sidpipe"
    (base / "half-written-abc").mkdir(parents=True)
    (base / "_staging" / "x").mkdir(parents=True)
    assert P.list_versions(tmp_path, "sidpipe") == [] and P.latest_version_dir(tmp_path, "sidpipe") is None
    with pytest.raises(P.PublishError, match="not published"):
        P.resolve_version(tmp_path, "half-written-abc", "sidpipe")


def test_force_retrain_is_a_config_override(config, caplog):
    forced = effective_config(config, force_retrain=True)
    if "force_retrain" in type(config.codebook).model_fields:
        assert forced.codebook.force_retrain is True and forced.config_hash() != config.config_hash()
    else:
        with caplog.at_level(logging.WARNING, logger="sidpipe"):
            assert effective_config(config, force_retrain=True) == config
        assert "force_retrain requested" in caplog.text
    assert effective_config(config) is config

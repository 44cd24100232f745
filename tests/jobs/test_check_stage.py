"""The check stage on small SID tables whose metrics are known by hand, its gates, and the report."""

from __future__ import annotations

import json
import math

import pytest

from jobs.check.main import compute_sid_metrics, detail_path, run
from jobs.check.report import write_report
from jobs.common.io import write_table
from jobs.common.layout import RunLayout
from jobs.common.pipeline_config import PipelineConfig
from jobs.common.stage import GateFailed, Inputs, StageContext
from schemas.catalog import CATALOG
from schemas.embeddings import EMBEDDINGS
from schemas.sids import SIDS

pytestmark = pytest.mark.spark

# 8 items, 2 levels, K = 4. Level-1 codes follow the category (A: 0, B: 1, C: 2).
RAW_CODES = [[0, 0], [0, 0], [0, 1], [1, 2], [1, 2], [1, 2], [2, 3], [2, 0]]
CATEGORIES = ["A", "A", "A", "B", "B", "B", "C", "C"]
# Items 3 and 4 have identical text.
TEXT_HASHES = ["h0", "h1", "h2", "same", "same", "h5", "h6", "h7"]
# Vectors: each category points along its own axis, so neighbours stay within the category.
VECTORS = [
    [1.0, 0.1, 0.0],
    [1.0, 0.2, 0.0],
    [1.0, 0.0, 0.1],
    [0.1, 1.0, 0.0],
    [0.0, 1.0, 0.1],
    [0.2, 1.0, 0.0],
    [0.0, 0.1, 1.0],
    [0.1, 0.0, 1.0],
]


def resolve(codes: list[list[int]]) -> list[list[int]]:
    """Append a 0-based digit within each raw-code bucket, in item order (unique by construction)."""
    seen: dict[tuple, int] = {}
    out = []
    for c in codes:
        digit = seen.get(tuple(c), 0)
        seen[tuple(c)] = digit + 1
        out.append([*c, digit])
    return out


def sid_rows(codes, sids=None, codebook_id="cb-test"):
    sids = sids or resolve(codes)
    return [
        {
            "item_id": str(i),
            "codes": c,
            "sid": s,
            "sid_tokens": "".join(f"<{chr(97 + j)}_{v}>" for j, v in enumerate(s)),
            "item_token": None,
            "resolution": None,
            "codebook_id": codebook_id,
        }
        for i, (c, s) in enumerate(zip(codes, sids))
    ]


def write_rows(spark, rows, path, schema):
    from schemas.convert import to_spark

    write_table(spark.createDataFrame(rows, to_spark(schema)), path, schema, num_files=1)


def make_ctx(spark, run_dir, check=None, previous=None) -> StageContext:
    overrides = {
        "codebook": {"levels": 2, "codebook_size": 4},
        "check": {"codebook_size": 4, **(check or {})},
    }
    return StageContext(
        spark=spark,
        layout=RunLayout(run_dir),
        config=PipelineConfig.load(overrides=overrides),
        inputs=Inputs("", ""),
        snapshot_id="test",
        cache_dir=run_dir.parent / "cache",
        previous_version=previous,
    )


def write_run(spark, run_dir, codes=RAW_CODES, text_hashes=TEXT_HASHES, sids=None):
    layout = RunLayout(run_dir)
    catalog = [
        {"item_id": str(i), "title": f"item {i}", "category_path": ["Root", cat], "text_hash": h}
        for i, (cat, h) in enumerate(zip(CATEGORIES, text_hashes))
    ]
    write_rows(spark, catalog, layout.catalog, CATALOG)
    write_rows(spark, sid_rows(codes, sids), layout.sids, SIDS)
    norm = [[x / math.sqrt(sum(v * v for v in vec)) for x in vec] for vec in VECTORS]
    emb = [{"item_id": str(i), "embedding": v, "space": "text"} for i, v in enumerate(norm)]
    write_rows(spark, emb, layout.embeddings, EMBEDDINGS)
    return layout


RELAXED = {"max_raw_collision_rate": 1.0, "max_largest_bucket_share": 1.0}


def test_metrics_match_hand_computation(spark, tmp_path):
    write_run(spark, tmp_path / "run")
    ctx = make_ctx(spark, tmp_path / "run", check={"nn_k": 2, **RELAXED})
    m, details, notes = compute_sid_metrics(ctx)
    assert m["items"] == 8 and m["num_levels"] == 2
    # raw buckets {00: 2, 01: 1, 12: 3, 23: 1, 20: 1}: 5 of 8 items collide
    assert m["collision_rate_raw"] == pytest.approx(5 / 8)
    assert m["duplicate_rate_raw"] == pytest.approx(3 / 8)
    assert m["largest_bucket_raw"] == 3
    assert m["collision_rate_resolved"] == 0.0
    assert m["prefix_collision_rate_l1"] == 1.0  # level-1 buckets of sizes 3, 3, 2
    assert (m["used_codes_l1"], m["dead_codes_l1"], m["utilisation_l1"]) == (3, 1, 0.75)
    assert m["utilisation_l2"] == 1.0
    assert m["perplexity_l1"] == pytest.approx(math.exp(-(0.75 * math.log(0.375) + 0.25 * math.log(0.25))))
    assert m["gini_l1"] == pytest.approx(0.3125)
    assert m["identical_text_floor"] == pytest.approx(2 / 8)
    assert m["category_nmi_l1"] == pytest.approx(1.0)  # level 1 is the category
    assert m["category_info_share_l1"] == pytest.approx(1.0) and m["category_nmi_ceiling_l1"] == pytest.approx(1.0)
    # k=2: A and B items find both group mates (1.0); C items have one mate (0.5): (6 + 1) / 8
    assert m["nn_preservation"] == pytest.approx(7 / 8)
    assert m["nn_queries"] == 8
    assert details["bucket_size_histograms"]["prefix_2"] == {"1": 3, "2": 1, "3": 1}
    assert details["level_code_counts"]["1"] == {"0": 3, "1": 3, "2": 2}
    assert "churn" not in m and notes == []


def test_degenerate_codebook_fails_the_gate_naming_metric_value_and_threshold(spark, tmp_path):
    from sidpipe.pipeline import run_stages

    collapsed = [[0, 0]] * 7 + [[0, 1]]
    layout = write_run(spark, tmp_path / "run", codes=collapsed)
    ctx = make_ctx(spark, tmp_path / "run", check={"nn_enabled": False})
    with pytest.raises(GateFailed) as err:
        run_stages(ctx, [("check", "jobs.check.main:run")])
    message = str(err.value)
    assert "collision_rate_raw = 0.875 > max_raw_collision_rate = 0.5" in message
    assert (
        "utilisation_l1 = 0.25 < min_level1_utilisation = 0.1" not in message
    )  # 1 of 4 codes is 0.25: passes
    assert "largest_bucket_share_raw = 0.875 > max_largest_bucket_share = 0.05" in message
    assert not layout.marker("check").exists()  # the runner records nothing for a failed stage
    saved = json.loads(detail_path(layout).read_text())
    assert saved["gate_failures"] and saved["metrics"]["collision_rate_raw"] == 0.875
    assert saved["metrics"]["category_nmi_l1"] == pytest.approx(
        0.0
    )  # one level-1 code says nothing about category


def test_unresolved_collisions_and_low_utilisation_fail(spark, tmp_path):
    codes = [[0, c % 4] for c in range(8)]
    write_run(spark, tmp_path / "run", codes=codes, sids=[[0, c % 4] for c in range(8)])  # "resolved" = raw
    ctx = make_ctx(spark, tmp_path / "run", check={"codebook_size": 16, "nn_enabled": False, **RELAXED})
    with pytest.raises(GateFailed) as err:
        run(ctx)
    assert "collision_rate_resolved = 1 > max_resolved_collision_rate = 0" in str(err.value)
    assert "utilisation_l1 = 0.0625 < min_level1_utilisation = 0.1" in str(err.value)


def test_churn_counts_only_unchanged_items(spark, tmp_path):
    previous = write_run(spark, tmp_path / "v1")
    # now: item 0's SID changes with the same text (churn), item 7's SID changes with new text (not churn)
    sids_now = resolve(RAW_CODES)
    sids_now[0] = [3, 3, 0]
    sids_now[7] = [3, 3, 1]
    hashes_now = TEXT_HASHES[:7] + ["h7-new"]
    write_run(spark, tmp_path / "v2", text_hashes=hashes_now, sids=sids_now)
    ctx = make_ctx(
        spark,
        tmp_path / "v2",
        check={"nn_enabled": False, "max_churn": 0.1, **RELAXED},
        previous=previous.run_dir,
    )
    m, _, _ = compute_sid_metrics(ctx)
    assert (m["churn_unchanged_items"], m["churn_changed_items"]) == (7, 1)
    assert m["churn"] == pytest.approx(1 / 7)
    with pytest.raises(GateFailed, match=r"churn = 0.142857 > max_churn = 0.1"):
        run(ctx)


def test_run_passes_and_report_is_written(spark, tmp_path):
    layout = write_run(spark, tmp_path / "run")
    ctx = make_ctx(spark, tmp_path / "run", check={"nn_k": 2, **RELAXED})
    result = run(ctx)
    assert result.metrics["collision_rate_resolved"] == 0.0 and result.counts["items"] == 8
    from jobs.common.stage import StageResult

    sft = StageResult(counts={"item_to_sid": 120, "next_item": 300, "sid_to_item": 120})
    html_path = write_report(ctx, {"check": result, "sft": sft})
    assert html_path == layout.report / "report.html"
    report = json.loads((layout.report / "report.json").read_text())
    assert report["stages"]["check"]["metrics"]["collision_rate_raw"] == pytest.approx(5 / 8)
    assert report["sid_details"]["level_code_counts"]["2"] == {"0": 3, "1": 1, "2": 3, "3": 1}
    for png in ("code_usage.png", "bucket_sizes.png", "collisions.png", "sft_counts.png"):
        data = (layout.report / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000, png
        assert png in html_path.read_text()

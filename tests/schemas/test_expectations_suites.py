"""great-expectations suites (real GE 1.x) through the stage gates, on both of GE's engines: small
views collected to pandas (the default below ``check.validate_locally_max_rows``) and GE's Spark engine
(forced with 0). Each passes on good data and fails, naming the expectation, on bad data."""

from __future__ import annotations

import json
import math

import pytest

from jobs.check.gates import gate_stage
from jobs.common.io import write_table
from jobs.common.layout import RunLayout
from jobs.common.pipeline_config import PipelineConfig
from jobs.common.stage import GateFailed, Inputs, StageContext, StageResult
from schemas.catalog import CATALOG
from schemas.convert import to_spark
from schemas.embeddings import EMBEDDINGS
from schemas.expectations._ge import PANDAS, SPARK
from schemas.interactions import INTERACTIONS
from schemas.sft import SFT_RECORDS
from schemas.sids import SIDS

pytestmark = [pytest.mark.spark, pytest.mark.parametrize("engine", [PANDAS, SPARK])]


def make_ctx(spark, run_dir, engine) -> StageContext:
    local_rows = 0 if engine == SPARK else 1000
    return StageContext(
        spark=spark,
        layout=RunLayout(run_dir),
        config=PipelineConfig.load(
            overrides={
                "codebook": {"levels": 2, "codebook_size": 4},
                "check": {"validate_locally_max_rows": local_rows},
            }
        ),
        inputs=Inputs("", ""),
        snapshot_id="test",
        cache_dir=run_dir.parent / "cache",
    )


def write(spark, rows, path, schema):
    write_table(spark.createDataFrame(rows, to_spark(schema)), path, schema, num_files=1)


def catalog_rows(n=6):
    return [
        {
            "item_id": str(i),
            "title": f"item {i}",
            "description": "d",
            "category_path": ["R", "A"],
            "text_hash": f"h{i}",
        }
        for i in range(n)
    ]


def interaction_rows():
    return [
        {"user_id": u, "item_id": str(i), "seq_index": s}
        for u, items in (("u0", [0, 1, 2]), ("u1", [3, 4]))
        for s, i in enumerate(items)
    ]


def sid_rows(n=6):
    codes = [[i % 4, (i // 4) % 4] for i in range(n)]
    return [
        {
            "item_id": str(i),
            "codes": c,
            "sid": [*c, 0],
            "sid_tokens": f"<a_{c[0]}><b_{c[1]}><c_0>",
            "codebook_id": "cb-1",
        }
        for i, c in enumerate(codes)
    ]


def sft_row(rid, split, output, user="u0", targets=("2",), sids=("<a_2><b_0><c_0>",), item_ids=()):
    return {
        "id": rid,
        "task": "next_item",
        "split": split,
        "instruction": "What next?",
        "input": "history",
        "output": output,
        "messages": [{"role": "user", "content": "What next?"}, {"role": "assistant", "content": output}],
        "user_id": user,
        "target_item_ids": list(targets),
        "sids": list(sids),
        "item_ids": list(item_ids),
    }


def failure_text(err) -> str:
    return str(err.value)


def test_ingest_gate_passes_on_good_tables_and_keeps_results(spark, tmp_path, engine):
    ctx = make_ctx(spark, tmp_path / "run", engine)
    write(spark, catalog_rows(), ctx.layout.catalog, CATALOG)
    write(spark, interaction_rows(), ctx.layout.interactions, INTERACTIONS)
    summary = gate_stage("ingest", ctx, StageResult())
    assert summary["catalog"]["success"] and summary["interactions"]["success"]
    assert summary["catalog"]["engine"] == summary["interactions"]["engine"] == engine
    assert summary["catalog"]["evaluated"] >= len(CATALOG.names) + 3
    saved = json.loads((ctx.layout.checks / "ingest" / "catalog.json").read_text())
    assert saved["success"] is True and saved["statistics"]["unsuccessful_expectations"] == 0


def test_ingest_gate_fails_on_duplicate_ids_missing_text_and_bad_log(spark, tmp_path, engine):
    ctx = make_ctx(spark, tmp_path / "run", engine)
    catalog = catalog_rows()
    catalog[1]["item_id"] = "0"  # duplicate id
    catalog[2].update(title="  ", description=None)  # no text
    write(spark, catalog, ctx.layout.catalog, CATALOG)
    log = interaction_rows()
    log[0]["seq_index"] = -1
    log[1]["item_id"] = "999"  # not in the catalog
    write(spark, log, ctx.layout.interactions, INTERACTIONS)
    with pytest.raises(GateFailed) as err:
        gate_stage("ingest", ctx, StageResult())
    text = failure_text(err)
    assert "[catalog] expect_column_values_to_be_unique on item_id" in text and "e.g. ['0', '0']" in text
    assert "expect_column_values_to_be_between on _text_chars; expected min_value=1" in text
    assert "[interactions] expect_column_values_to_be_between on seq_index; expected min_value=0" in text
    assert "on _item_in_catalog" in text
    assert json.loads((ctx.layout.checks / "ingest" / "interactions.json").read_text())["success"] is False


def unit(v):
    n = math.sqrt(sum(x * x for x in v))
    return [x / n for x in v]


def test_embedding_gate_passes_on_unit_vectors_and_fails_on_nan_dimension_and_norm(spark, tmp_path, engine):
    ctx = make_ctx(spark, tmp_path / "run", engine)
    good = [{"item_id": str(i), "embedding": unit([1.0, i, 2.0]), "space": "text"} for i in range(4)]
    write(spark, good, ctx.layout.text_embeddings, EMBEDDINGS)
    assert gate_stage("embed", ctx, StageResult())["text_embeddings"]["success"]

    bad = [dict(r) for r in good]
    bad[0]["embedding"] = [float("nan"), 0.0, 1.0]
    bad[1]["embedding"] = [0.6, 0.8]  # unit norm, wrong dimension
    bad[2]["embedding"] = [2.0, 0.0, 0.0]  # right dimension, norm 2
    write(spark, bad, ctx.layout.text_embeddings, EMBEDDINGS)
    with pytest.raises(GateFailed) as err:
        gate_stage("embed", ctx, StageResult())
    text = failure_text(err)
    assert (
        "on _non_finite; expected max_value=0, min_value=0; observed" not in text
    )  # map expectation: counts rows
    assert "on _non_finite; expected max_value=0, min_value=0; 1 unexpected rows" in text
    assert "on _dims_in_space; expected max_value=1, min_value=1; 4 unexpected rows" in text
    assert "on _norm; expected max_value=1.001, min_value=0.999" in text


def test_sid_gate_passes_and_fails_on_out_of_range_codes_and_shared_sids(spark, tmp_path, engine):
    ctx = make_ctx(spark, tmp_path / "run", engine)
    write(spark, catalog_rows(), ctx.layout.catalog, CATALOG)
    write(spark, sid_rows(), ctx.layout.sids, SIDS)
    assert gate_stage("sids", ctx, StageResult())["sids"]["success"]

    bad = sid_rows()
    bad[0]["codes"] = [4, 0]  # K = 4: code 4 is out of range
    bad[5]["sid"], bad[5]["sid_tokens"] = bad[4]["sid"], bad[4]["sid_tokens"]  # not injective
    write(spark, bad[:6] + [], ctx.layout.sids, SIDS)
    with pytest.raises(GateFailed) as err:
        gate_stage("sids", ctx, StageResult())
    text = failure_text(err)
    assert "on _codes_max; expected max_value=3; 1 unexpected rows; e.g. [4]" in text
    assert "expect_column_values_to_be_unique on _sid_key" in text
    assert "expect_column_values_to_be_unique on sid_tokens" in text


def test_sft_gate_passes_and_fails_on_empty_answer_unknown_sid_and_leak(spark, tmp_path, engine):
    ctx = make_ctx(spark, tmp_path / "run", engine)
    write(spark, sid_rows(), ctx.layout.sids, SIDS)
    good = [
        sft_row(
            "r1",
            "train",
            "<a_1><b_0><c_0>",
            targets=("1",),
            sids=("<a_0><b_0><c_0>", "<a_1><b_0><c_0>"),
            item_ids=("0", "1"),
        ),
        sft_row(
            "r2",
            "test",
            "<a_2><b_0><c_0>",
            targets=("2",),
            sids=("<a_1><b_0><c_0>", "<a_2><b_0><c_0>"),
            item_ids=("1", "2"),
        ),
    ]
    write(spark, good, ctx.layout.sft, SFT_RECORDS)
    assert gate_stage("sft", ctx, StageResult())["sft_records"]["success"]

    bad = good + [
        sft_row(
            "r3", "train", " ", targets=("2",), sids=("<a_2><b_0><c_0>",), item_ids=("2",)
        ),  # empty answer + leak
        sft_row(
            "r4", "train", "<z_9>", user="u1", targets=("3",), sids=("<z_9>",), item_ids=("3",)
        ),  # unknown SID
    ]
    write(spark, bad, ctx.layout.sft, SFT_RECORDS)
    with pytest.raises(GateFailed) as err:
        gate_stage("sft", ctx, StageResult())
    text = failure_text(err)
    assert "on _answer_chars; expected min_value=1; 1 unexpected rows" in text
    assert "on _unknown_sids; expected max_value=0, min_value=0; 1 unexpected rows" in text
    assert "on _leaked_test_targets; expected max_value=0, min_value=0; 1 unexpected rows" in text


def test_stages_without_a_suite_return_nothing(spark, tmp_path, engine):
    assert gate_stage("codebook", make_ctx(spark, tmp_path / "run", engine), StageResult()) == {}

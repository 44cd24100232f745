"""The sft stage end to end on a slice of the bundled sample (real SparkSession, real datasets)."""

from __future__ import annotations

import glob
import json
from collections import defaultdict
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from conftest import ORPHAN_SID_ITEM, UNKNOWN_ITEM, stage_context, write_run
from pyspark.sql import functions as F

from jobs.common.io import read_table
from jobs.sft.config import TASK_NAMES
from jobs.sft.transform import Reason, apply_mixture, deduplicate
from jobs.sft.write import read_corpus
from schemas.convert import to_hf_features
from schemas.interactions import INTERACTIONS
from schemas.quarantine import C as Q
from schemas.sft import SFT_RECORDS, SPLITS, TEST, TRAIN, VALIDATION
from schemas.sft import C as R
from schemas.sids import SIDS
from sft_builder.hf import write_dataset_dict
from sft_builder.validate import (
    HELD_OUT_ITEM_IN_TRAIN,
    TRAIN_USES_HELD_OUT_PERIOD,
    find_leaks,
    find_unresolved_sids,
)

pytestmark = pytest.mark.spark


@pytest.fixture(scope="session")
def temporal_run(spark, sample_slice, tmp_path_factory):
    """Timestamps, logged queries and sessions: temporal split, trending_rec, logged-query search."""
    from jobs.sft.main import run

    layout = write_run(tmp_path_factory.mktemp("sft_temporal"), *sample_slice, timestamps=True, queries=True)
    return layout, run(stage_context(spark, layout, {"write_hf_dataset": False}))


def _parquet_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.parquet"))}


def test_every_task_produces_records_with_messages_and_resolvable_sids(spark, loo_run, temporal_run):
    for layout, result in (loo_run, temporal_run):
        records = read_corpus(spark, layout.sft)
        tasks = {r[R.task] for r in records.select(R.task).distinct().collect()}
        expected = set(TASK_NAMES) - ({"trending_rec"} if result.metrics["split_mode"] == "leave_one_out" else set())
        assert tasks == expected
        assert records.where((F.size(R.messages) < 2) | F.exists(R.messages, lambda m: F.length(m["content"]) == 0)).count() == 0
        sids = read_table(spark, layout.sids, SIDS)
        assert find_unresolved_sids(records, sids).count() == 0
        assert records.count() == sum(v for k, v in result.counts.items() if k in {f"records_{s}" for s in SPLITS})


def test_trending_is_skipped_with_a_reason_without_timestamps(loo_run, temporal_run):
    _, loo = loo_run
    assert loo.metrics["trending_rec_skipped"] == "no_timestamps"
    assert any("trending_rec skipped" in n and "timestamps" in n for n in loo.notes)
    _, temporal = temporal_run
    assert temporal.metrics["split_mode"] == "temporal" and temporal.metrics["queries"] == "logged"
    assert temporal.counts["records_trending_rec_train"] > 0 and temporal.counts["records_trending_rec_test"] > 0


def test_no_leaks_and_a_planted_leak_is_caught(spark, loo_run, temporal_run):
    layout, _ = loo_run
    records = read_corpus(spark, layout.sft)
    assert find_leaks(records).count() == 0
    held = records.where((F.col(R.split) == TEST) & (F.col(R.task) == "next_item")).select(R.user_id, R.target_item_ids).first()
    victim = records.where((F.col(R.split) == TRAIN) & (F.col(R.user_id) == held[R.user_id]) & (F.col(R.task) == "listwise_rank"))
    planted = victim.withColumn(R.item_ids, F.array_union(R.item_ids, F.array(F.lit(held[R.target_item_ids][0]))))
    leaks = find_leaks(records.unionByName(planted)).collect()
    assert {(r["rule"], r["user_id"], r["item_id"]) for r in leaks} == {(HELD_OUT_ITEM_IN_TRAIN, held[R.user_id], held[R.target_item_ids][0])}

    t_layout, t_result = temporal_run
    t_records = read_corpus(spark, t_layout.sft)
    valid_start = t_result.metrics["valid_start_us"]
    assert find_leaks(t_records, valid_start_us=valid_start).count() == 0
    late = t_records.where((F.col(R.split) == VALIDATION) & (F.col(R.task) == "next_item")).limit(1).withColumn(R.split, F.lit(TRAIN))
    rules = {r["rule"] for r in find_leaks(t_records.unionByName(late), valid_start_us=valid_start).collect()}
    assert TRAIN_USES_HELD_OUT_PERIOD in rules


def test_leave_one_out_split_rules(spark, loo_run):
    layout, _ = loo_run
    events = read_table(spark, layout.interactions, INTERACTIONS).where(~F.col("item_id").isin(UNKNOWN_ITEM)).toPandas()
    q = spark.read.parquet(str(layout.quarantine / "sft"))
    item_level = (F.col(Q.source) == "interactions") & ~F.col(Q.reason).isin(Reason.REPEAT, Reason.SINGLE)
    bad = {json.loads(r[Q.record])["item_id"] for r in q.where(item_level).collect()}
    seqs = defaultdict(list)
    for row in events.sort_values(["user_id", "seq_index"]).itertuples():
        if row.item_id not in bad and row.item_id not in seqs[row.user_id]:
            seqs[row.user_id].append(row.item_id)
    nxt = read_corpus(spark, layout.sft).where(F.col(R.task) == "next_item").select(R.user_id, R.split, R.target_item_ids).collect()
    by_split = {(r[R.user_id], r[R.split]): r[R.target_item_ids][0] for r in nxt if r[R.split] != TRAIN}
    users = [u for u, items in seqs.items() if len(items) >= 3]
    assert users
    for user in users:
        assert by_split[(user, TEST)] == seqs[user][-1]
        assert by_split[(user, VALIDATION)] == seqs[user][-2]


def test_bad_input_is_counted_never_silently_dropped(spark, loo_run):
    layout, result = loo_run
    c = result.counts
    assert c["interactions_in"] == c["interactions_used"] + c["interactions_quarantined"]
    q = spark.read.parquet(str(layout.quarantine / "sft"))
    assert q.count() == sum(v for k, v in c.items() if k.startswith("quarantined_"))
    reasons = {(r["source"], r["reason"]) for r in q.select("source", "reason").collect()}
    for planted in [("interactions", Reason.ITEM_NOT_IN_CATALOG), ("interactions", Reason.REPEAT), ("interactions", Reason.SINGLE),
                    ("catalog", Reason.EMPTY_TITLE), ("catalog", Reason.ITEM_WITHOUT_SID), ("sids", Reason.SID_WITHOUT_ITEM),
                    ("sids", Reason.AMBIGUOUS_SID)]:
        assert planted in reasons, planted
    assert c["quarantined_sids_sid_without_catalog_item"] == 1
    assert q.where(F.col("record").contains(ORPHAN_SID_ITEM)).count() == 1


def test_two_builds_are_byte_identical(spark, loo_run, sample_slice, tmp_path):
    from jobs.sft.main import run

    layout, _ = loo_run
    again = write_run(tmp_path / "again", *sample_slice)
    run(stage_context(spark, again, {"write_hf_dataset": False}))
    first, second = _parquet_bytes(layout.sft), _parquet_bytes(again.sft)
    assert first and list(first) == list(second)
    assert all(first[k] == second[k] for k in first)


def test_dedup_keeps_one_record_preferring_the_evaluation_split(spark):
    import pyarrow as pa

    from jobs.sft.transform import RECORDS_WITH_CONTENT
    from sft_builder.build import CONTENT

    def rec(rid, split, content):
        return {R.id: rid, R.task: "next_item", R.split: split, R.messages: [{"role": "user", "content": content}],
                R.instruction: content, R.input: "", R.output: "x", R.user_id: "u", R.target_item_ids: [], R.sids: [],
                R.metadata: "{}", R.item_ids: [], CONTENT: content}

    rows = [rec("a", TRAIN, "same"), rec("b", TEST, "same"), rec("c", TRAIN, "same"), rec("d", TRAIN, "other")]
    df = spark.createDataFrame(pa.Table.from_pylist(rows, schema=RECORDS_WITH_CONTENT))
    kept = {(r[R.id], r[R.split]) for r in deduplicate(df).collect()}
    assert kept == {("b", TEST), ("d", TRAIN)}


def test_mixture_weights_and_caps(spark, loo_run):
    from jobs.common.pipeline_config import PipelineConfig

    layout, _ = loo_run
    records = read_corpus(spark, layout.sft)
    cfg = PipelineConfig.load(overrides={"sft": {"tasks": {"next_item": {"weight": 0.5}, "sid_to_item": {"max_records": 7}}}}).sft
    mixed = apply_mixture(records, cfg)
    count = lambda df, task, split: df.where((F.col(R.task) == task) & (F.col(R.split) == split)).count()  # noqa: E731
    before, after = count(records, "next_item", TRAIN), count(mixed, "next_item", TRAIN)
    assert 0.35 * before < after < 0.65 * before
    assert count(mixed, "next_item", TEST) == count(records, "next_item", TEST)
    assert count(mixed, "sid_to_item", TRAIN) == 7
    assert count(mixed, "bundle", TRAIN) == count(records, "bundle", TRAIN)


def test_hf_round_trip_and_card(spark, loo_run, tmp_path):
    from datasets import load_dataset, load_from_disk

    layout, result = loo_run
    dd = load_from_disk(str(layout.hf_dataset))
    assert set(dd) == set(SPLITS)
    assert dd["train"].features == to_hf_features(SFT_RECORDS)
    assert {s: dd[s].num_rows for s in SPLITS} == {s: result.counts[f"records_{s}"] for s in SPLITS}
    row = dd["test"][0]
    assert row["messages"][0]["role"] == "user" and row["split"] == TEST

    card = (layout.sft / "README.md").read_text()
    front = yaml.safe_load(card.split("---")[1])
    configs = {c["config_name"]: c for c in front["configs"]}
    assert set(configs) == {"all"} | (set(TASK_NAMES) - {"trending_rec"})
    assert "cb-test-0001" in card and result.metrics["fingerprints"]["interactions"] in card
    files = {d["split"]: sorted(glob.glob(str(layout.sft / d["path"]))) for d in configs["next_item"]["data_files"]}
    ds = load_dataset("parquet", data_files=files, cache_dir=str(tmp_path / "hf_cache"))
    assert ds["test"].num_rows == result.counts["records_next_item_test"]
    assert set(ds["test"]["task"]) == {"next_item"} and set(ds["test"]["split"]) == {TEST}
    assert pq.read_schema(files["train"][0]).names == SFT_RECORDS.names


@pytest.mark.parametrize("bars_on", [True, False])
def test_hf_view_is_written_without_progress_bars_and_leaves_the_setting_alone(loo_run, tmp_path, capfd, bars_on):
    from datasets.utils import logging as hf_logging

    layout, result = loo_run
    (hf_logging.enable_progress_bar if bars_on else hf_logging.disable_progress_bar)()
    try:
        rows = write_dataset_dict(layout.sft, tmp_path / "hf")
        assert hf_logging.is_progress_bar_enabled() == bars_on
    finally:
        hf_logging.enable_progress_bar()
    assert rows == {s: result.counts[f"records_{s}"] for s in SPLITS}
    err = capfd.readouterr().err
    assert "examples/s" not in err and "Saving the dataset" not in err, err[-500:]


def test_staging_is_removed_and_token_stats_cover_every_task(loo_run):
    from jobs.sft.main import STAGING

    layout, result = loo_run
    assert not (layout.run_dir / STAGING).exists()
    stats = result.metrics["token_stats"]
    assert set(stats) == {t for t in TASK_NAMES if result.counts.get(f"records_{t}_train", 0) + result.counts.get(f"records_{t}_test", 0)
                          + result.counts.get(f"records_{t}_validation", 0)}
    assert all(0 < s["p50"] <= s["p95"] <= s["max"] for s in stats.values())


def test_token_stats_equal_spark_avg_and_exact_percentile_over_the_written_corpus(spark, loo_run, temporal_run):
    """The writer's histograms give what Spark's avg / percentile / max give over the written records."""
    from jobs.sft.transform import token_counts

    for layout, result in (loo_run, temporal_run):
        rows = token_counts(read_corpus(spark, layout.sft)).groupBy(R.task).agg(
            F.mean("tokens").alias("mean"), F.percentile("tokens", F.lit(0.5)).alias("p50"),
            F.percentile("tokens", F.lit(0.95)).alias("p95"), F.max("tokens").cast("double").alias("max")).collect()
        expected = {r[R.task]: {k: r[k] for k in ("mean", "p50", "p95", "max")} for r in rows}
        assert result.metrics["token_stats"] == expected


@pytest.mark.parametrize("tokens", [[7], [3, 9], [5] * 19 + [40], [1, 2, 2, 3, 3, 3, 50, 51, 52, 1000]])
def test_token_stats_of_a_histogram_equal_spark(spark, tokens):
    from collections import Counter

    from jobs.sft.write import token_stats

    df = spark.createDataFrame([(t,) for t in tokens], "tokens long")
    r = df.agg(F.mean("tokens").alias("mean"), F.percentile("tokens", F.lit(0.5)).alias("p50"),
               F.percentile("tokens", F.lit(0.95)).alias("p95"), F.max("tokens").cast("double").alias("max")).first()
    assert token_stats(dict(Counter(tokens))) == r.asDict()


def test_token_counts_of_the_writer_equal_the_spark_definition(spark):
    """The stage counts tokens with pyarrow (RE2) as it builds; the card's definition is Spark's (Java) regex."""
    import pyarrow as pa

    from jobs.sft.transform import token_counts as spark_token_counts
    from jobs.sft.write import token_counts

    texts = [["<a_1><b_22><c_3> next?", "Title: \"Steel tape\" 12.5% off, 3-pack"], ["<<a_1>> <a b> <> <a_1", "caf\u00e9 na\u00efve \U0001f600!"],
             ["tab\there\x0bvt\x0cff\u00a0nbsp\u3000ideographic x__y_1", ""], ["", "", "{\"action\": \"retrieve\", \"sid_prefix\": \"<a_12>\"}"], []]
    rows = [{R.task: "t", R.split: TRAIN, R.messages: [{"role": "user", "content": c} for c in contents]} for contents in texts]
    schema = pa.schema([pa.field(R.task, pa.string()), pa.field(R.split, pa.string()), pa.field(R.messages, SFT_RECORDS.field(R.messages).type)])
    table = pa.Table.from_pylist(rows, schema=schema)
    expected = [r["tokens"] for r in spark_token_counts(spark.createDataFrame(table)).collect()]
    assert list(token_counts(table.column(R.messages))) == expected
    assert expected[0] == 3 + 2 + 15  # three SID tokens, "next?", then 7 words and 8 punctuation marks


def test_complements_count_each_co_interaction_both_ways(spark):
    from jobs.common.pipeline_config import PipelineConfig
    from jobs.sft.transform import complements

    cfg = PipelineConfig.load(overrides={"sft": {"bundle_window": 1, "bundle_min_count": 2}}).sft
    seqs = {"u1": ["A", "B"], "u2": ["A", "B", "C"], "u3": ["B", "A"], "u4": ["C", "D"]}
    events = spark.createDataFrame([(u, i, s, TRAIN) for u, items in seqs.items() for s, i in enumerate(items)], "user_id string, item_id string, seq long, split string")
    cats = {"A": "Tape", "B": "Glue", "C": "Glue", "D": "Tape"}
    items = spark.createDataFrame([(i, f"<a_{i}>", f"Title {i}", None, c, None, f"<a_{i}>") for i, c in cats.items()],
                                  "item_id string, sid string, title string, brand string, category string, price_band string, prefix string")
    got = {r["item_id"]: [(c["item_id"], c["count"]) for c in r["complements"]] for r in complements(events, items, cfg).collect()}
    # A-B three times (either order); B-C once and C-D once stay under bundle_min_count
    assert got == {"A": [("B", 3)], "B": [("A", 3)]}


@pytest.mark.parametrize("stamps", [[5] * 40 + list(range(100, 160)) + [10**15] * 3, list(range(0, 10**9, 7_777_777)), [42]])
def test_temporal_cutoffs_equal_spark_exact_percentile(spark, stamps):
    from datetime import datetime, timezone

    from jobs.common.pipeline_config import PipelineConfig
    from jobs.sft.transform import profile_log, temporal_cutoffs, temporal_cutoffs_reference

    cfg = PipelineConfig.load(overrides={"sft": {"temporal_valid_fraction": 0.13, "temporal_test_fraction": 0.07}}).sft
    log = spark.createDataFrame([(datetime.fromtimestamp(s / 1e6, tz=timezone.utc), None) for s in stamps], "timestamp timestamp, query string")
    assert temporal_cutoffs(log, cfg, profile_log(log, cfg)) == temporal_cutoffs_reference(log, cfg)

"""SFT corpus transforms: catalog + SIDs + interaction log -> SFT_RECORDS rows (+ quarantine).

DataFrame in, DataFrame out. The log never reaches the driver: events are tagged with their split by
window functions, grouped per user and turned into records by the plain-Python builders of
``sft_builder`` inside ``mapInArrow``. Only tables bounded by the number of groups (candidate pools per
SID prefix and category, a global pool, trending lists per category) are collected and shipped to the
workers with the builders.
"""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

import pyarrow as pa
from pyspark import StorageLevel
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.window import Window

from jobs.sft.config import SftConfig
from schemas.catalog import C as CAT
from schemas.convert import to_spark
from schemas.interactions import C as INT
from schemas.quarantine import C as Q
from schemas.sft import SFT_RECORDS, TEST, TRAIN, VALIDATION
from schemas.sft import C as R
from schemas.sids import C as S
from sft_builder import core
from sft_builder.build import CONTENT, build_item_records, build_query_records, build_user_records
from sft_builder.context import BuildContext
from sft_builder.split import COMPLEMENTS, LEAVE_ONE_OUT, QUERY, SEQ, SESSION, SPLIT, TEMPORAL, TS
from sft_builder.tasks import search

STAGE = "sft"
REASON, SOURCE, COUNT, PREFIX_LEN = "_reason", "_source", "count", "_prefix_len"
DESCRIPTION = "description"


class Reason:
    """Why a row was skipped (the QUARANTINE ``reason`` column)."""

    ITEM_WITHOUT_SID = "item_without_sid"
    SID_WITHOUT_ITEM = "sid_without_catalog_item"
    EMPTY_SID = "empty_sid"
    AMBIGUOUS_SID = "ambiguous_sid"  # one SID string for several items: it would not resolve to one item
    EMPTY_TITLE = "empty_title"
    ITEM_NOT_IN_CATALOG = "item_not_in_catalog"
    REPEAT = "repeat_interaction"  # the user already had the item; the first occurrence is kept
    SINGLE = "user_single_interaction"  # fewer than two usable events: nothing to predict from


RECORDS_WITH_CONTENT = pa.schema(
    [f.with_nullable(True) for f in SFT_RECORDS] + [pa.field(CONTENT, pa.string())]
).with_metadata(SFT_RECORDS.metadata)

_ITEM_COMPLEMENT = pa.struct(
    [pa.field(k, pa.string()) for k in (core.ITEM_ID, core.SID, core.TITLE, core.BRAND, core.CATEGORY, core.PRICE_BAND, core.PREFIX)]
    + [pa.field(COUNT, pa.int64())]
)


# ---------------------------------------------------------------------------------------------- items
def prepare_items(catalog: DataFrame, sids: DataFrame, cfg: SftConfig) -> DataFrame:
    """One row per item id seen in the catalog or the SID table, with the item fields the builders use
    and ``_reason`` (null when usable) / ``_source`` (the table the problem is in)."""
    tokens = F.trim(F.col(S.sid_tokens))
    sid_rows = sids.select(F.col(S.item_id).alias(core.ITEM_ID), tokens.alias(core.SID), F.lit(True).alias("_has_sid_row"))
    shared = Window.partitionBy(core.SID)
    sid_rows = sid_rows.withColumn("_sid_items", F.when(F.col(core.SID) != "", F.count(F.lit(1)).over(shared)).otherwise(F.lit(1)))
    path = F.filter(F.coalesce(F.col(CAT.category_path), F.array().cast("array<string>")), lambda x: F.length(F.trim(x)) > 0)
    cat = catalog.select(
        F.col(CAT.item_id).alias(core.ITEM_ID),
        F.trim(F.col(CAT.title)).alias(core.TITLE),
        F.nullif(F.trim(F.col(CAT.brand)), F.lit("")).alias(core.BRAND),
        path.alias(core.CATEGORY_PATH),
        F.try_element_at(path, F.lit(-1)).alias(core.CATEGORY),
        price_band(F.col(CAT.price), cfg.price_bands).alias(core.PRICE_BAND),
        F.substring(F.coalesce(F.col(CAT.description), F.lit("")), 1, 400).alias(DESCRIPTION),
        F.lit(True).alias("_in_catalog"),
    )
    joined = cat.join(sid_rows, core.ITEM_ID, "full_outer")
    reason = (
        F.when(F.col("_in_catalog").isNull(), _why(Reason.SID_WITHOUT_ITEM, "sids"))
        .when(F.col("_has_sid_row").isNull(), _why(Reason.ITEM_WITHOUT_SID, "catalog"))
        .when(F.coalesce(F.col(core.SID), F.lit("")) == "", _why(Reason.EMPTY_SID, "sids"))
        .when(F.col("_sid_items") > 1, _why(Reason.AMBIGUOUS_SID, "sids"))
        .when(F.coalesce(F.col(core.TITLE), F.lit("")) == "", _why(Reason.EMPTY_TITLE, "catalog"))
    )
    return (
        joined.withColumn("_r", reason)
        .withColumn(REASON, F.col("_r.reason"))
        .withColumn(SOURCE, F.col("_r.source"))
        .withColumn(core.PREFIX, F.regexp_extract(F.col(core.SID), r"^(<[^>]*>)", 1))
        .withColumn(core.PREFIX, F.when(F.col(core.PREFIX) == "", F.col(core.SID)).otherwise(F.col(core.PREFIX)))
        .drop("_r", "_in_catalog", "_has_sid_row", "_sid_items")
    )


def _why(reason: str, source: str) -> F.Column:
    return F.struct(F.lit(reason).alias("reason"), F.lit(source).alias("source"))


def price_band(price, bounds: tuple[float, ...]):
    """Label of the price band a price falls in ("$10-25"); null for a missing or non-positive price."""
    expr = None
    lower = 0.0
    for upper in bounds:
        label = f"under ${upper:g}" if lower == 0 else f"${lower:g}-{upper:g}"
        expr = (F.when(price < upper, F.lit(label)) if expr is None else expr.when(price < upper, F.lit(label)))
        lower = upper
    expr = expr.otherwise(F.lit(f"${lower:g} and up"))
    return F.when(price.isNull() | (price <= 0), F.lit(None).cast("string")).otherwise(expr)


def item_quarantine(items_checked: DataFrame) -> DataFrame:
    record = F.to_json(F.struct(core.ITEM_ID, core.SID, core.TITLE))
    return items_checked.where(F.col(REASON).isNotNull()).select(
        F.lit(STAGE).alias(Q.stage), F.col(SOURCE).alias(Q.source), F.col(REASON).alias(Q.reason),
        F.concat(F.lit("item "), F.col(core.ITEM_ID)).alias(Q.detail), record.alias(Q.record),
    )


# --------------------------------------------------------------------------------------------- events
def tag_events(interactions: DataFrame, items_checked: DataFrame, split_mode: str, cutoffs: tuple[int, int] | None) -> DataFrame:
    """Every interaction with ``_reason`` (null when usable) and, for usable ones, its ``split``."""
    item_reason = items_checked.select(core.ITEM_ID, F.col(REASON).alias("_item_reason"), F.lit(True).alias("_known"))
    ev = interactions.select(
        F.col(INT.user_id), F.col(INT.item_id).alias(core.ITEM_ID), F.col(INT.seq_index).alias(SEQ),
        F.unix_micros(F.col(INT.timestamp)).alias(TS), F.nullif(F.trim(F.col(INT.query)), F.lit("")).alias(QUERY),
        F.col(INT.session_id).alias(SESSION), F.col(INT.event_type),
    ).join(item_reason, core.ITEM_ID, "left")
    bad_item = F.when(F.col("_known").isNull(), F.lit(Reason.ITEM_NOT_IN_CATALOG)).when(
        F.col("_item_reason") == Reason.SID_WITHOUT_ITEM, F.lit(Reason.ITEM_NOT_IN_CATALOG)
    ).otherwise(F.col("_item_reason"))
    ev = ev.withColumn(REASON, bad_item)
    first = Window.partitionBy(INT.user_id, core.ITEM_ID).orderBy(SEQ)
    ev = ev.withColumn(REASON, F.when(F.col(REASON).isNull() & (F.row_number().over(first) > 1), F.lit(Reason.REPEAT)).otherwise(F.col(REASON)))
    usable = F.col(REASON).isNull()
    per_user = Window.partitionBy(INT.user_id)
    ev = ev.withColumn("_n", F.sum(usable.cast("int")).over(per_user))
    ev = ev.withColumn(REASON, F.when(usable & (F.col("_n") < 2), F.lit(Reason.SINGLE)).otherwise(F.col(REASON)))
    if split_mode == LEAVE_ONE_OUT:
        from_end = Window.partitionBy(INT.user_id, F.col(REASON).isNull()).orderBy(F.col(SEQ).desc())
        pos = F.row_number().over(from_end)
        split = F.when(pos == 1, F.lit(TEST)).when(pos == 2, F.lit(VALIDATION)).otherwise(F.lit(TRAIN))
    else:
        # Temporal: sequences must be in time order for "history before target" to mean "earlier"; the
        # curated log promises it, re-deriving the order here keeps a violating log from leaking.
        ev = ev.withColumn(SEQ, F.row_number().over(Window.partitionBy(INT.user_id).orderBy(TS, SEQ)) - 1)
        valid_start, test_start = cutoffs
        split = F.when(F.col(TS) < valid_start, F.lit(TRAIN)).when(F.col(TS) < test_start, F.lit(VALIDATION)).otherwise(F.lit(TEST))
    return ev.withColumn(SPLIT, F.when(F.col(REASON).isNull(), split)).drop("_n", "_item_reason", "_known")


def event_quarantine(events_tagged: DataFrame) -> DataFrame:
    return events_tagged.where(F.col(REASON).isNotNull()).select(
        F.lit(STAGE).alias(Q.stage), F.lit("interactions").alias(Q.source), F.col(REASON).alias(Q.reason),
        F.concat(F.lit("user "), F.col(INT.user_id), F.lit(" item "), F.col(core.ITEM_ID)).alias(Q.detail),
        F.to_json(F.struct(F.col(INT.user_id), F.col(core.ITEM_ID), F.col(INT.event_type), F.col(SEQ).alias(INT.seq_index),
                           F.timestamp_micros(F.col(TS)).alias(INT.timestamp), F.col(QUERY), F.col(SESSION))).alias(Q.record),
    )


def temporal_cutoffs(interactions: DataFrame, cfg: SftConfig) -> tuple[int, int]:
    """Global cutoffs (epoch microseconds): the timestamps below which 1 - valid - test of the events lie."""
    q_valid = 1.0 - cfg.temporal_valid_fraction - cfg.temporal_test_fraction
    q_test = 1.0 - cfg.temporal_test_fraction
    ts = F.unix_micros(F.col(INT.timestamp))
    row = interactions.select(F.percentile(ts, F.lit(q_valid)).alias("v"), F.percentile(ts, F.lit(q_test)).alias("t")).first()
    return int(row["v"]), int(row["t"])


# ------------------------------------------------------------------------------------ lookups / pools
def _item_struct(*extra) -> F.Column:
    cols = [core.ITEM_ID, core.SID, core.TITLE, core.BRAND, core.CATEGORY, core.PRICE_BAND, core.PREFIX]
    return F.struct(*[F.col(c) for c in cols], *extra)


def complements(events: DataFrame, items: DataFrame, cfg: SftConfig) -> DataFrame:
    """item_id -> up to ``bundle_max_items`` complementary items (co-interacted within ``bundle_window``
    positions in training histories, at least ``bundle_min_count`` times, different category)."""
    train = events.where(F.col(SPLIT) == TRAIN).select(INT.user_id, core.ITEM_ID, SEQ)
    order = Window.partitionBy(INT.user_id).orderBy(SEQ)
    ahead = F.array(*[F.lead(core.ITEM_ID, k).over(order) for k in range(1, cfg.bundle_window + 1)])
    step = train.withColumn("_ahead", ahead).select(F.col(core.ITEM_ID).alias("a"), F.explode("_ahead").alias("b")).where(
        F.col("b").isNotNull())
    pairs = step.union(step.select(F.col("b").alias("a"), F.col("a").alias("b")))
    counted = pairs.groupBy("a", "b").agg(F.count(F.lit(1)).alias(COUNT)).where(F.col(COUNT) >= cfg.bundle_min_count)
    cat_a = items.select(F.col(core.ITEM_ID).alias("a"), F.col(core.CATEGORY).alias("_cat_a"))
    other = items.select(F.col(core.ITEM_ID).alias("b"), _item_struct().alias("_b"))
    ranked = (
        counted.join(cat_a, "a").join(other, "b")
        .where(F.col("_cat_a").isNotNull() & F.col("_b.category").isNotNull() & (F.col("_cat_a") != F.col("_b.category")))
        .withColumn("_rank", F.row_number().over(Window.partitionBy("a").orderBy(F.col(COUNT).desc(), F.col("b"))))
        .where(F.col("_rank") <= cfg.bundle_max_items)
    )
    entry = F.struct(F.col("_rank"), *[F.col(f"_b.{f.name}").alias(f.name) for f in _ITEM_COMPLEMENT if f.name != COUNT], F.col(COUNT))
    return ranked.groupBy(F.col("a").alias(core.ITEM_ID)).agg(F.array_sort(F.collect_list(entry)).alias("_c")).select(
        core.ITEM_ID, F.transform("_c", lambda s: s.dropFields("_rank")).alias(COMPLEMENTS)
    )


def _rows_to_items(rows) -> list[dict]:
    return [{k: r[k] for k in (core.ITEM_ID, core.SID, core.TITLE, core.BRAND, core.CATEGORY, core.PRICE_BAND, core.PREFIX)} for r in rows]


def candidate_pools(items: DataFrame, events: DataFrame, cfg: SftConfig, seed: int) -> tuple[dict, dict, list]:
    """(prefix pool, category pool, global pool): per level-1 SID prefix ``pool_size`` items in hashed
    order (negatives), per category the ``pool_size`` most popular in training (retrieval results),
    and ``global_pool_size`` items in hashed order. Bounded by the number of groups."""
    popularity = events.where(F.col(SPLIT) == TRAIN).groupBy(core.ITEM_ID).agg(F.count(F.lit(1)).alias("_pop"))
    it = items.join(popularity, core.ITEM_ID, "left").withColumn("_pop", F.coalesce("_pop", F.lit(0)))
    it = it.withColumn("_h", F.xxhash64(F.col(core.ITEM_ID), F.lit(seed)))

    def top(group: str, *order) -> dict:
        w = Window.partitionBy(group).orderBy(*order, core.ITEM_ID)
        rows = (it.where(F.col(group).isNotNull()).withColumn("_r", F.row_number().over(w)).where(F.col("_r") <= cfg.pool_size)
                .orderBy(group, "_r").collect())
        pools: dict[str, list] = {}
        for r in rows:
            pools.setdefault(r[group], []).extend(_rows_to_items([r]))
        return pools

    prefix_pool = top(core.PREFIX, "_h")
    category_pool = top(core.CATEGORY, F.col("_pop").desc(), "_h")
    global_pool = _rows_to_items(it.orderBy("_h", core.ITEM_ID).limit(cfg.global_pool_size).collect())
    return prefix_pool, category_pool, global_pool


def trending(events: DataFrame, items: DataFrame, cfg: SftConfig, cutoffs: dict[str, int]) -> dict[str, dict[str, list]]:
    """split -> category -> items rising at that split's cutoff, from the events before it only."""
    window = int(cfg.trend_window_days * 86_400 * 1_000_000)
    out: dict[str, dict[str, list]] = {}
    for split, cut in cutoffs.items():
        recent = (F.col(TS) >= cut - window) & (F.col(TS) < cut)
        before = (F.col(TS) >= cut - 2 * window) & (F.col(TS) < cut - window)
        counts = events.where((F.col(TS) >= cut - 2 * window) & (F.col(TS) < cut)).groupBy(core.ITEM_ID).agg(
            F.sum(recent.cast("int")).alias("_recent"), F.sum(before.cast("int")).alias("_before"))
        rising = counts.withColumn("_growth", F.col("_recent") - F.col("_before")).where(F.col("_growth") > 0).join(items, core.ITEM_ID)
        w = Window.partitionBy(core.CATEGORY).orderBy(F.col("_growth").desc(), F.col("_recent").desc(), core.ITEM_ID)
        rows = (rising.where(F.col(core.CATEGORY).isNotNull()).withColumn("_r", F.row_number().over(w))
                .where(F.col("_r") <= cfg.trend_top_k).orderBy(core.CATEGORY, "_r").collect())
        lists: dict[str, list] = {}
        for r in rows:
            lists.setdefault(r[core.CATEGORY], []).extend(_rows_to_items([r]))
        out[split] = lists
    return out


# ------------------------------------------------------------------------------------------- records
def user_sequences(events: DataFrame, comps: DataFrame | None, partitions: int) -> DataFrame:
    """One row per user: ``events`` = their usable events (item fields, split, complements), by seq."""
    ev = events.where(F.col(REASON).isNull())
    if comps is not None:
        ev = ev.join(comps, core.ITEM_ID, "left")
    else:
        ev = ev.withColumn(COMPLEMENTS, F.lit(None).cast(to_spark(pa.schema([pa.field(COMPLEMENTS, pa.list_(_ITEM_COMPLEMENT))]))[COMPLEMENTS].dataType))
    entry = F.struct(SEQ, core.ITEM_ID, core.SID, core.TITLE, core.BRAND, core.CATEGORY, core.PRICE_BAND, core.PREFIX,
                     TS, QUERY, SESSION, SPLIT, COMPLEMENTS)
    grouped = ev.groupBy(INT.user_id).agg(F.array_sort(F.collect_list(entry)).alias("events"))
    return grouped.repartition(partitions, INT.user_id) if partitions else grouped


def _records_batches(rows_to_records):
    schema = RECORDS_WITH_CONTENT

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            out = []
            for row in batch.to_pylist():
                out.extend(rows_to_records(row))
            if out:
                yield pa.RecordBatch.from_pylist(out, schema=schema)

    return run


def user_records(sequences: DataFrame, ctx: BuildContext, tasks: list[str]) -> DataFrame:
    def per_user(row):
        return build_user_records(row[INT.user_id], row["events"], ctx, tasks)

    return sequences.mapInArrow(_records_batches(per_user), to_spark(RECORDS_WITH_CONTENT))


def item_records(items: DataFrame, comps: DataFrame | None, ctx: BuildContext, tasks: list[str]) -> DataFrame:
    it = items.select(core.ITEM_ID, core.SID, core.TITLE, core.BRAND, core.CATEGORY, core.CATEGORY_PATH, core.PRICE_BAND,
                      core.PREFIX, DESCRIPTION)
    if comps is not None:
        it = it.join(comps, core.ITEM_ID, "left")

    def per_item(row):
        return build_item_records(row, ctx, tasks)

    return it.mapInArrow(_records_batches(per_item), to_spark(RECORDS_WITH_CONTENT))


TOKEN = "_term"
STOPWORDS = frozenset(
    "and the for with from pack inch inches set of to in on by x per each size new black white pcs piece pieces count "
    "mm cm ft lb oz use kit high low".split()
)


def distinctive_terms(items: DataFrame) -> DataFrame:
    """item_id -> its most distinctive title word: the rarest across the catalog (document frequency >= 2,
    so not a part number), alphabetic, >= 4 letters, not a stopword, not in the brand or category."""
    words = items.select(core.ITEM_ID, F.explode(F.array_distinct(F.split(F.lower(F.col(core.TITLE)), r"[^a-z]+"))).alias(TOKEN),
                         F.lower(F.coalesce(F.col(core.BRAND), F.lit(""))).alias("_brand"),
                         F.lower(F.coalesce(F.col(core.CATEGORY), F.lit(""))).alias("_cat"))
    words = words.where((F.length(TOKEN) >= 4) & ~F.col(TOKEN).isin(*STOPWORDS) & ~F.col("_brand").contains(F.col(TOKEN))
                        & ~F.col("_cat").contains(F.col(TOKEN)))
    df = words.groupBy(TOKEN).agg(F.count(F.lit(1)).alias("_df"))
    w = Window.partitionBy(core.ITEM_ID).orderBy("_df", TOKEN)
    return (words.join(df.where(F.col("_df") >= 2), TOKEN).withColumn("_r", F.row_number().over(w)).where(F.col("_r") == 1)
            .select(core.ITEM_ID, TOKEN))


def derived_search_records(items: DataFrame, ctx: BuildContext) -> DataFrame:
    """search from derived queries: one query per item (its shape by hash), grouped; items sharing a query
    are all relevant to it (at most ``search_max_items``, in item-id order)."""
    seed, cfg = ctx.seed, ctx.cfg
    with_terms = items.join(distinctive_terms(items), core.ITEM_ID, "left")

    @F.udf("string")
    def query_of(item_id, brand, category, term):
        form = core.stable_hash("query_form", item_id, seed) % 3
        return search.derived_query({"brand": brand, "category": category}, term, form)

    @F.udf("int")
    def form_of(item_id):
        return core.stable_hash("query_form", item_id, seed) % 3

    q = with_terms.withColumn("_query", query_of(core.ITEM_ID, core.BRAND, core.CATEGORY, TOKEN)).where(F.col("_query").isNotNull())
    q = q.withColumn("_form", form_of(core.ITEM_ID))
    grouped = q.groupBy("_query").agg(
        F.slice(F.array_sort(F.collect_list(_item_struct())), 1, cfg.search_max_items).alias("_items"),
        F.min(F.struct(core.ITEM_ID, "_form"))["_form"].alias("_form"),
    )

    def per_query(row):
        return build_query_records(row["_query"], row["_items"], row["_form"], ctx)

    return grouped.mapInArrow(_records_batches(per_query), to_spark(RECORDS_WITH_CONTENT))


# -------------------------------------------------------------------------------- dedup and mixture
SPLIT_PRIORITY = {TEST: 0, VALIDATION: 1, TRAIN: 2}


def duplicate_ids(records: DataFrame) -> DataFrame:
    """Ids of the records to drop so that one record remains per identical (task, conversation): the one
    kept is in the evaluation split when the conversation is also in train (dropping it from train
    prevents contamination), then the lowest id. Only the small key columns are shuffled."""
    priority = F.create_map(*[x for k, v in SPLIT_PRIORITY.items() for x in (F.lit(k), F.lit(v))])[F.col(R.split)]
    w = Window.partitionBy(R.task, CONTENT).orderBy(priority, R.id)
    keys = records.select(R.task, CONTENT, R.split, R.id)
    return keys.withColumn("_n", F.row_number().over(w)).where(F.col("_n") > 1).select(R.id)


def deduplicate(records: DataFrame, duplicates: DataFrame | None = None) -> DataFrame:
    duplicates = duplicate_ids(records) if duplicates is None else duplicates
    return records.join(F.broadcast(duplicates), R.id, "left_anti")


def apply_mixture(records: DataFrame, cfg: SftConfig) -> DataFrame:
    """Mixture weights (share of each task's training records kept, by record id) and per-split caps."""
    u = F.conv(F.substring(F.col(R.id), 1, 8), 16, 10).cast("double") / float(1 << 32)
    weights = {name: t.weight for name, t in cfg.tasks.items() if t.weight < 1.0}
    for name, weight in weights.items():
        records = records.where(~((F.col(R.task) == name) & (F.col(R.split) == TRAIN) & (u >= weight)))
    caps = {name: t.max_records for name, t in cfg.tasks.items() if t.max_records}
    if caps:
        cap = F.create_map(*[x for k, v in caps.items() for x in (F.lit(k), F.lit(v))])[F.col(R.task)]
        w = Window.partitionBy(R.task, R.split).orderBy(R.id)
        records = records.withColumn("_n", F.row_number().over(w)).where(cap.isNull() | (F.col("_n") <= cap)).drop("_n")
    return records


def token_counts(records: DataFrame) -> DataFrame:
    """Approximate tokens per record: SID tokens, words and punctuation marks over all message contents."""
    text = F.concat_ws("\n", F.transform(F.col(R.messages), lambda m: m["content"]))
    return records.select(R.task, R.split, F.regexp_count(text, F.lit(r"<[^<>\s]+>|\w+|[^\w\s]")).alias("tokens"))


@contextmanager
def timed(metrics: dict, name: str):
    """Wall seconds of one step into ``metrics["seconds"][name]`` (the manifest shows where time goes)."""
    start = time.perf_counter()
    try:
        yield
    finally:
        metrics.setdefault("seconds", {})[name] = round(time.perf_counter() - start, 2)


@dataclass
class CorpusParts:
    records: DataFrame  # RECORDS_WITH_CONTENT, before dedup and mixture: see final_records()
    quarantine: DataFrame  # QUARANTINE rows
    events: DataFrame  # tagged events (usable and not), for counting
    items_checked: DataFrame
    notes: list[str] = field(default_factory=list)
    metrics: dict = field(default_factory=dict)
    cached: list = field(default_factory=list)  # persisted intermediates: unpersist when done

    def final_records(self, records: DataFrame, duplicates: DataFrame | None, cfg: SftConfig) -> DataFrame:
        """The corpus: ``duplicates`` (ids, see :func:`duplicate_ids`) dropped, mixture weights and caps applied."""
        return apply_mixture(deduplicate(records, duplicates) if duplicates is not None else records, cfg)

    def release(self) -> None:
        for df in self.cached:
            df.unpersist()


def build_corpus(
    spark, catalog: DataFrame, interactions: DataFrame, sids: DataFrame, glossary: dict | None, cfg: SftConfig, seed: int
) -> CorpusParts:
    """The whole corpus as a lazy DataFrame plus what the stage reports (notes, metrics)."""
    notes: list[str] = []
    metrics: dict = {}
    profile = interactions.agg(
        F.count(F.lit(1)).alias("n"),
        F.count_if(F.col(INT.timestamp).isNull()).alias("no_ts"),
        F.count_if(F.length(F.trim(F.col(INT.query))) > 0).alias("queries"),
    ).first()
    has_events, missing_ts, has_queries = profile["n"] > 0, profile["no_ts"] > 0, profile["queries"] > 0
    metrics["interactions_in"] = profile["n"]
    mode = cfg.split_mode
    if mode == "auto":
        mode = TEMPORAL if has_events and not missing_ts else LEAVE_ONE_OUT
    elif mode == TEMPORAL and (missing_ts or not has_events):
        raise ValueError("sft.split_mode is 'temporal' but the interaction log has events without a timestamp")
    metrics["split_mode"] = mode
    with timed(metrics, "cutoffs"):
        cutoffs = temporal_cutoffs(interactions, cfg) if mode == TEMPORAL else None
    if cutoffs:
        metrics["valid_start_us"], metrics["test_start_us"] = cutoffs
    metrics["queries"] = "logged" if has_queries else "derived"

    # Both feed several jobs (pools, complements, records, counts): computed once.
    items_checked = prepare_items(catalog, sids, cfg).persist(StorageLevel.MEMORY_AND_DISK)
    items = items_checked.where(F.col(REASON).isNull())
    events = tag_events(interactions, items_checked, mode, cutoffs).join(
        items.select(core.ITEM_ID, core.SID, core.TITLE, core.BRAND, core.CATEGORY, core.PRICE_BAND, core.PREFIX), core.ITEM_ID, "left"
    ).persist(StorageLevel.MEMORY_AND_DISK)
    usable = events.where(F.col(REASON).isNull())

    enabled = cfg.enabled_tasks()
    trend_lists, trend_cutoffs = {}, {}
    if "trending_rec" in enabled and mode != TEMPORAL:
        enabled.remove("trending_rec")
        notes.append("trending_rec skipped: the interaction log has no timestamps, so nothing can be 'rising in a recent window'")
        metrics["trending_rec_skipped"] = "no_timestamps"
    elif "trending_rec" in enabled:
        trend_cutoffs = {TRAIN: cutoffs[0], TEST: cutoffs[1]}
        with timed(metrics, "trending"):
            trend_lists = trending(usable, items, cfg, trend_cutoffs)
    if "sid_semantics" in enabled and not glossary:
        enabled.remove("sid_semantics")
        notes.append("sid_semantics skipped: no SID glossary (sid_artifacts/glossary.json) was found")
        metrics["sid_semantics_skipped"] = "no_glossary"

    need_comps = "bundle" in enabled or "multi_turn_fulfillment" in enabled
    comps = complements(usable, items, cfg).persist(StorageLevel.MEMORY_AND_DISK) if need_comps else None
    with timed(metrics, "pools"):
        prefix_pool, category_pool, global_pool = candidate_pools(items, usable, cfg, seed)
    ctx = BuildContext(cfg=cfg, seed=seed, split_mode=mode, has_logged_queries=has_queries, prefix_pool=prefix_pool,
                       category_pool=category_pool, global_pool=global_pool, trending=trend_lists, trend_cutoffs=trend_cutoffs)

    parts = []
    user_tasks = [t for t in enabled if hasattr(_task(t), "build_user") and not (t == "search" and not has_queries)]
    if user_tasks:
        parts.append(user_records(user_sequences(usable, comps, cfg.build_partitions), ctx, user_tasks))
    item_tasks = [t for t in enabled if hasattr(_task(t), "build_item")]
    if item_tasks:
        parts.append(item_records(items, comps, ctx, item_tasks))
    if "search" in enabled and not has_queries:
        parts.append(derived_search_records(items, ctx))
    if "sid_semantics" in enabled:
        from sft_builder.build import build_glossary_records

        rows = build_glossary_records(glossary, ctx)
        if rows:
            parts.append(spark.createDataFrame(pa.Table.from_pylist(rows, schema=RECORDS_WITH_CONTENT)))
    records = parts[0]
    for p in parts[1:]:
        records = records.unionByName(p)
    quarantine = item_quarantine(items_checked).unionByName(event_quarantine(events))
    cached = [df for df in (items_checked, events, comps) if df is not None]
    return CorpusParts(records=records, quarantine=quarantine, events=events, items_checked=items_checked, notes=notes,
                       metrics=metrics, cached=cached)


def _task(name: str):
    from sft_builder.tasks import TASKS

    return TASKS[name]


def metadata_json(record: dict) -> dict:
    return json.loads(record[R.metadata] or "{}")

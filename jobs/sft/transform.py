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
from pathlib import Path
from typing import Callable, Iterator

import pyarrow as pa
from pyspark import StorageLevel
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.window import Window

from jobs.sft.config import SftConfig
from jobs.sft.write import KEYS, stage_batches
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
# Item fields every event carries (the builders' item dicts).
EVENT_ITEM_FIELDS = (core.SID, core.TITLE, core.BRAND, core.CATEGORY, core.PRICE_BAND, core.PREFIX)


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
def tag_events(interactions: DataFrame, items_checked: DataFrame, split_mode: str, cutoffs: tuple[int, int] | None,
               partitions: int = 0) -> DataFrame:
    """Every interaction with ``_reason`` (null when usable) and, for usable ones, its ``split``.

    The rows stay narrow (the item fields join later, per user, in :func:`user_sequences`): the item
    reasons (two short columns per item) are broadcast, and the events are hash-partitioned by user once
    (``partitions``; 0: the session's shuffle partitions), which every window below (by user, by user and
    item) and the per-user grouping downstream reuse without another shuffle."""
    item_reason = items_checked.select(core.ITEM_ID, F.col(REASON).alias("_item_reason"), F.lit(True).alias("_known"))
    ev = interactions.select(
        F.col(INT.user_id), F.col(INT.item_id).alias(core.ITEM_ID), F.col(INT.seq_index).alias(SEQ),
        F.unix_micros(F.col(INT.timestamp)).alias(TS), F.nullif(F.trim(F.col(INT.query)), F.lit("")).alias(QUERY),
        F.col(INT.session_id).alias(SESSION), F.col(INT.event_type),
    ).join(F.broadcast(item_reason), core.ITEM_ID, "left")
    ev = ev.repartition(partitions, INT.user_id) if partitions else ev.repartition(INT.user_id)
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


def _cutoff_fractions(cfg: SftConfig) -> tuple[float, float]:
    return 1.0 - cfg.temporal_valid_fraction - cfg.temporal_test_fraction, 1.0 - cfg.temporal_test_fraction


def temporal_cutoffs_reference(interactions: DataFrame, cfg: SftConfig) -> tuple[int, int]:
    """The definition: Spark's exact ``percentile`` of the timestamps (single-threaded, costly on big logs)."""
    ts = F.unix_micros(F.col(INT.timestamp))
    row = interactions.select(*[F.percentile(ts, F.lit(q)).alias(f"q{i}") for i, q in enumerate(_cutoff_fractions(cfg))]).first()
    return int(row["q0"]), int(row["q1"])


# Rank accuracy of the sketch that brackets each cutoff before the exact pass (1 / accuracy of the events).
_SKETCH_ACCURACY = 10_000
_BRACKET = 3.0 / _SKETCH_ACCURACY


def _bracket_columns(cfg: SftConfig) -> list[F.Column]:
    ts = F.unix_micros(F.col(INT.timestamp))
    bounds = [min(1.0, max(0.0, q + d)) for q in _cutoff_fractions(cfg) for d in (-_BRACKET, _BRACKET)]
    return [F.count(ts).alias("_n_ts"), F.percentile_approx(ts, F.array(*[F.lit(b) for b in bounds]), _SKETCH_ACCURACY).alias("_brackets")]


def _percentile_at(ranked: list[tuple[int, int]], below: int, position: float) -> float | None:
    """Spark's ``percentile`` interpolation at ``position`` (0-based rank) from the (value, count) pairs
    that follow ``below`` smaller values; None when a needed rank is outside them."""
    lower, higher = int(position // 1), int(-(-position // 1))

    def at(rank: int):
        seen = below
        for value, count in ranked:
            seen += count
            if rank < seen:
                return value
        return None

    if lower < below:
        return None
    lo, hi = at(lower), at(higher)
    if lo is None or hi is None:
        return None
    if higher == lower or lo == hi:
        return float(lo)
    return (higher - position) * float(lo) + (position - lower) * float(hi)


def temporal_cutoffs(interactions: DataFrame, cfg: SftConfig, profile: dict | None = None) -> tuple[int, int]:
    """Global cutoffs (epoch microseconds): the timestamps below which 1 - valid - test of the events lie.

    Exactly Spark's ``percentile`` (:func:`temporal_cutoffs_reference`), without its single-threaded
    sort of every distinct timestamp: a sketch (``profile``, see :func:`profile_log`) brackets each
    cutoff within a few ranks per ten thousand, one pass counts the events below each bracket and
    groups the few inside it, and the interpolation is done on those; if a bracket misses (it cannot,
    by the sketch's guarantee), the reference is used."""
    profile = profile if profile is not None and "_brackets" in profile else interactions.agg(*_bracket_columns(cfg)).first().asDict()
    n, brackets = profile["_n_ts"], profile["_brackets"]
    if not n or not brackets:
        return temporal_cutoffs_reference(interactions, cfg)
    ts = F.unix_micros(F.col(INT.timestamp))
    pairs = [(brackets[0], brackets[1]), (brackets[2], brackets[3])]
    inside = None
    for lo, hi in pairs:
        cond = (ts >= lo) & (ts <= hi)
        inside = cond if inside is None else inside | cond
    rows = interactions.where(ts.isNotNull()).groupBy(
        F.when(inside, ts).alias("v"), *[(ts < lo).alias(f"b{i}") for i, (lo, _) in enumerate(pairs)]).count().collect()
    out = []
    for i, (q, (lo, hi)) in enumerate(zip(_cutoff_fractions(cfg), pairs)):
        below = sum(r["count"] for r in rows if r[f"b{i}"])
        ranked = sorted((r["v"], r["count"]) for r in rows if r["v"] is not None and lo <= r["v"] <= hi)
        value = _percentile_at(ranked, below, (n - 1) * q)
        if value is None:
            return temporal_cutoffs_reference(interactions, cfg)
        out.append(int(value))
    return out[0], out[1]


def profile_log(interactions: DataFrame, cfg: SftConfig) -> dict:
    """One pass over the log: events, events without a timestamp, events with a query and, unless the
    split is forced to leave-one-out, the sketch that brackets the temporal cutoffs (:func:`temporal_cutoffs`)."""
    cols = [F.count(F.lit(1)).alias("n"), F.count_if(F.col(INT.timestamp).isNull()).alias("no_ts"),
            F.count_if(F.length(F.trim(F.col(INT.query))) > 0).alias("queries")]
    if cfg.split_mode != LEAVE_ONE_OUT:
        cols += _bracket_columns(cfg)
    return interactions.agg(*cols).first().asDict()


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
    # Co-occurrences of (a, b) in both directions: each unordered pair is counted once, then emitted both
    # ways (a pair of one item with itself counts twice, as it would in the two-way union).
    lo, hi = F.least("a", "b"), F.greatest("a", "b")
    unordered = step.groupBy(lo.alias("_lo"), hi.alias("_hi")).agg(F.count(F.lit(1)).alias("_c"))
    both = F.when(F.col("_lo") == F.col("_hi"), F.array(F.struct(F.col("_lo").alias("a"), F.col("_hi").alias("b"), (F.col("_c") * 2).alias("c"))))\
        .otherwise(F.array(F.struct(F.col("_lo").alias("a"), F.col("_hi").alias("b"), F.col("_c").alias("c")),
                           F.struct(F.col("_hi").alias("a"), F.col("_lo").alias("b"), F.col("_c").alias("c"))))
    counted = unordered.where(F.col("_c") * F.when(F.col("_lo") == F.col("_hi"), 2).otherwise(1) >= cfg.bundle_min_count).select(
        F.explode(both).alias("_p")).select(F.col("_p.a").alias("a"), F.col("_p.b").alias("b"), F.col("_p.c").alias(COUNT))
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


_ITEM_FIELDS = (core.ITEM_ID, core.SID, core.TITLE, core.BRAND, core.CATEGORY, core.PRICE_BAND, core.PREFIX)


def _rows_to_items(rows) -> list[dict]:
    return [{k: r[k] for k in _ITEM_FIELDS} for r in rows]


def _popularity(events: DataFrame) -> DataFrame:
    return events.where(F.col(SPLIT) == TRAIN).groupBy(core.ITEM_ID).agg(F.count(F.lit(1)).alias("_pop"))


def _pool_rows(items: DataFrame, events: DataFrame, cfg: SftConfig, seed: int) -> DataFrame:
    """(``_kind`` prefix|category, ``_group``, ``_r``, item fields): the prefix and category pools."""
    it = items.join(_popularity(events), core.ITEM_ID, "left").withColumn("_pop", F.coalesce("_pop", F.lit(0)))
    it = it.withColumn("_h", F.xxhash64(F.col(core.ITEM_ID), F.lit(seed)))

    def top(kind: str, group: str, *order) -> DataFrame:
        w = Window.partitionBy(group).orderBy(*order, core.ITEM_ID)
        return (it.where(F.col(group).isNotNull()).withColumn("_r", F.row_number().over(w)).where(F.col("_r") <= cfg.pool_size)
                .select(F.lit(kind).alias("_kind"), F.col(group).alias("_group"), "_r", *_ITEM_FIELDS))

    return top("prefix", core.PREFIX, "_h").unionByName(top("category", core.CATEGORY, F.col("_pop").desc(), "_h"))


def _trending_rows(events: DataFrame, items: DataFrame, cfg: SftConfig, cutoffs: dict[str, int]) -> DataFrame:
    """(``_kind`` trend:<split>, ``_group`` category, ``_r``, item fields) for every split's cutoff, in one pass."""
    window = int(cfg.trend_window_days * 86_400 * 1_000_000)
    ts = F.col(TS)
    at = F.array(*[F.when((ts >= cut - 2 * window) & (ts < cut), F.struct(F.lit(f"trend:{split}").alias("k"), F.lit(cut).alias("c")))
                   for split, cut in cutoffs.items()])
    tagged = events.select(core.ITEM_ID, TS, F.explode(at).alias("_w")).where(F.col("_w").isNotNull())
    cut = F.col("_w.c")
    counts = tagged.groupBy(F.col("_w.k").alias("_kind"), core.ITEM_ID).agg(
        F.sum((ts >= cut - window).cast("int")).alias("_recent"), F.sum((ts < cut - window).cast("int")).alias("_before"))
    rising = counts.withColumn("_growth", F.col("_recent") - F.col("_before")).where(F.col("_growth") > 0).join(items, core.ITEM_ID)
    w = Window.partitionBy("_kind", core.CATEGORY).orderBy(F.col("_growth").desc(), F.col("_recent").desc(), core.ITEM_ID)
    return (rising.where(F.col(core.CATEGORY).isNotNull()).withColumn("_r", F.row_number().over(w)).where(F.col("_r") <= cfg.trend_top_k)
            .select("_kind", F.col(core.CATEGORY).alias("_group"), "_r", *_ITEM_FIELDS))


def _collect_ranked(rows: DataFrame) -> list:
    """The (``_kind``, ``_group``, ``_r``, ...) rows, sorted on the driver: they are few (bounded by the
    groups), and a Spark ``orderBy`` would cost a sampling job and a shuffle."""
    return sorted(rows.collect(), key=lambda r: (r["_kind"], r["_group"], r["_r"]))


def _grouped(rows, kind: str) -> dict[str, list]:
    out: dict[str, list] = {}
    for r in rows:
        if r["_kind"] == kind:
            out.setdefault(r["_group"], []).extend(_rows_to_items([r]))
    return out


def lookup_tables(items: DataFrame, events: DataFrame, cfg: SftConfig, seed: int, trend_cutoffs: dict[str, int] | None = None):
    """(prefix pool, category pool, global pool, trending) in two small jobs; see :func:`candidate_pools`
    and :func:`trending`. Bounded by the number of groups."""
    rows = _pool_rows(items, events, cfg, seed)
    if trend_cutoffs:
        rows = rows.unionByName(_trending_rows(events, items, cfg, trend_cutoffs))
    collected = _collect_ranked(rows)
    global_pool = _rows_to_items(items.withColumn("_h", F.xxhash64(F.col(core.ITEM_ID), F.lit(seed)))
                                 .orderBy("_h", core.ITEM_ID).limit(cfg.global_pool_size).collect())
    trends = {split: _grouped(collected, f"trend:{split}") for split in (trend_cutoffs or {})}
    return _grouped(collected, "prefix"), _grouped(collected, "category"), global_pool, trends


def candidate_pools(items: DataFrame, events: DataFrame, cfg: SftConfig, seed: int) -> tuple[dict, dict, list]:
    """(prefix pool, category pool, global pool): per level-1 SID prefix ``pool_size`` items in hashed
    order (negatives), per category the ``pool_size`` most popular in training (retrieval results),
    and ``global_pool_size`` items in hashed order. Bounded by the number of groups."""
    prefix_pool, category_pool, global_pool, _ = lookup_tables(items, events, cfg, seed)
    return prefix_pool, category_pool, global_pool


def trending(events: DataFrame, items: DataFrame, cfg: SftConfig, cutoffs: dict[str, int]) -> dict[str, dict[str, list]]:
    """split -> category -> items rising at that split's cutoff, from the events before it only."""
    rows = _collect_ranked(_trending_rows(events, items, cfg, cutoffs))
    return {split: _grouped(rows, f"trend:{split}") for split in cutoffs}


# ------------------------------------------------------------------------------------------- records
def item_lookup(items: DataFrame, comps: DataFrame | None) -> DataFrame:
    """One row per usable item: the fields an event carries into the builders, and its complements."""
    info = items.select(core.ITEM_ID, *EVENT_ITEM_FIELDS)
    if comps is not None:
        return info.join(comps, core.ITEM_ID, "left")
    return info.withColumn(COMPLEMENTS, F.lit(None).cast(to_spark(pa.schema([pa.field(COMPLEMENTS, pa.list_(_ITEM_COMPLEMENT))]))[COMPLEMENTS].dataType))


def user_sequences(events: DataFrame, lookup: DataFrame, partitions: int = 0) -> DataFrame:
    """One row per user: ``events`` = their usable events (item fields, split, complements), by seq.

    ``lookup`` (:func:`item_lookup`, bounded by the catalog) is broadcast, so events partitioned by user
    (:func:`tag_events`) are grouped without another shuffle; ``partitions`` > 0 re-partitions the result."""
    ev = events.where(F.col(REASON).isNull()).join(F.broadcast(lookup), core.ITEM_ID, "left")
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


@dataclass
class RecordSource:
    """Rows (users, items, queries, prefixes) and the plain-Python function turning one into records."""

    name: str
    rows: DataFrame
    to_records: Callable[[dict], list[dict]]

    def records(self) -> DataFrame:
        """RECORDS_WITH_CONTENT rows."""
        return self.rows.mapInArrow(_records_batches(self.to_records), to_spark(RECORDS_WITH_CONTENT))

    def staged(self, staging: str) -> DataFrame:
        """KEYS rows; the records themselves are written under ``staging`` (see :mod:`jobs.sft.write`)."""
        return self.rows.mapInArrow(stage_batches(self.to_records, RECORDS_WITH_CONTENT, staging, self.name), to_spark(KEYS))


def _user_source(sequences: DataFrame, ctx: BuildContext, tasks: list[str]) -> RecordSource:
    def per_user(row):
        return build_user_records(row[INT.user_id], row["events"], ctx, tasks)

    return RecordSource("users", sequences, per_user)


def user_records(sequences: DataFrame, ctx: BuildContext, tasks: list[str]) -> DataFrame:
    return _user_source(sequences, ctx, tasks).records()


def _item_source(items: DataFrame, comps: DataFrame | None, ctx: BuildContext, tasks: list[str]) -> RecordSource:
    it = items.select(core.ITEM_ID, core.SID, core.TITLE, core.BRAND, core.CATEGORY, core.CATEGORY_PATH, core.PRICE_BAND,
                      core.PREFIX, DESCRIPTION)
    if comps is not None:
        it = it.join(F.broadcast(comps), core.ITEM_ID, "left")

    def per_item(row):
        return build_item_records(row, ctx, tasks)

    return RecordSource("items", it, per_item)


def item_records(items: DataFrame, comps: DataFrame | None, ctx: BuildContext, tasks: list[str]) -> DataFrame:
    return _item_source(items, comps, ctx, tasks).records()


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


_QUERY_ROWS = pa.schema([pa.field(k, pa.string()) for k in _ITEM_FIELDS] + [pa.field("_query", pa.string()), pa.field("_form", pa.int32())])


def _derived_queries(seed: int):
    """``mapInArrow``: each item's derived query and its shape (by hash), a batch at a time."""

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            ids, brands, cats, terms = (batch.column(c).to_pylist() for c in (core.ITEM_ID, core.BRAND, core.CATEGORY, TOKEN))
            forms = [core.stable_hash("query_form", i, seed) % 3 for i in ids]
            queries = [search.derived_query({"brand": b, "category": c}, t, f) for b, c, t, f in zip(brands, cats, terms, forms)]
            yield pa.RecordBatch.from_arrays([batch.column(k) for k in _ITEM_FIELDS] + [pa.array(queries, pa.string()), pa.array(forms, pa.int32())],
                                             schema=_QUERY_ROWS)

    return run


def _search_source(items: DataFrame, ctx: BuildContext) -> RecordSource:
    seed, cfg = ctx.seed, ctx.cfg
    with_terms = items.join(distinctive_terms(items), core.ITEM_ID, "left").select(*_ITEM_FIELDS, TOKEN)
    q = with_terms.mapInArrow(_derived_queries(seed), to_spark(_QUERY_ROWS)).where(F.col("_query").isNotNull())
    grouped = q.groupBy("_query").agg(
        F.slice(F.array_sort(F.collect_list(_item_struct())), 1, cfg.search_max_items).alias("_items"),
        F.min(F.struct(core.ITEM_ID, "_form"))["_form"].alias("_form"),
    )

    def per_query(row):
        return build_query_records(row["_query"], row["_items"], row["_form"], ctx)

    return RecordSource("queries", grouped, per_query)


def derived_search_records(items: DataFrame, ctx: BuildContext) -> DataFrame:
    """search from derived queries: one query per item (its shape by hash), grouped; items sharing a query
    are all relevant to it (at most ``search_max_items``, in item-id order)."""
    return _search_source(items, ctx).records()


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
    """Approximate tokens per record: SID tokens, words and punctuation marks over all message contents.
    The reference definition in Spark; the stage counts the same with :func:`jobs.sft.write.token_counts`
    as records are built."""
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


def _as_is(record: dict) -> list[dict]:
    return [record]


@dataclass
class CorpusParts:
    sources: list[RecordSource]  # what the records are built from: see records / stage()
    quarantine: DataFrame  # QUARANTINE rows
    events: DataFrame  # tagged events (usable and not), for counting
    items_checked: DataFrame
    notes: list[str] = field(default_factory=list)
    metrics: dict = field(default_factory=dict)
    cached: list = field(default_factory=list)  # persisted intermediates: unpersist when done

    @property
    def records(self) -> DataFrame:
        """RECORDS_WITH_CONTENT, before dedup and mixture: see final_records()."""
        return _union([s.records() for s in self.sources])

    def stage(self, staging: Path | str) -> DataFrame:
        """KEYS rows of every record, the records themselves written under ``staging`` as they are built
        (:func:`jobs.sft.write.stage_batches`): the wide rows never return to the JVM."""
        return _union([s.staged(str(Path(staging).resolve())) for s in self.sources])

    def final_records(self, records: DataFrame, duplicates: DataFrame | None, cfg: SftConfig) -> DataFrame:
        """The corpus (or its keys): ``duplicates`` (ids, see :func:`duplicate_ids`) dropped, mixture
        weights and caps applied."""
        return apply_mixture(deduplicate(records, duplicates) if duplicates is not None else records, cfg)

    def release(self) -> None:
        for df in self.cached:
            df.unpersist()


def _union(frames: list[DataFrame]) -> DataFrame:
    out = frames[0]
    for f in frames[1:]:
        out = out.unionByName(f)
    return out


def build_corpus(
    spark, catalog: DataFrame, interactions: DataFrame, sids: DataFrame, glossary: dict | None, cfg: SftConfig, seed: int
) -> CorpusParts:
    """The whole corpus as lazy record sources plus what the stage reports (notes, metrics)."""
    notes: list[str] = []
    metrics: dict = {}
    with timed(metrics, "profile"):
        profile = profile_log(interactions, cfg)
    has_events, missing_ts, has_queries = profile["n"] > 0, profile["no_ts"] > 0, profile["queries"] > 0
    metrics["interactions_in"] = profile["n"]
    mode = cfg.split_mode
    if mode == "auto":
        mode = TEMPORAL if has_events and not missing_ts else LEAVE_ONE_OUT
    elif mode == TEMPORAL and (missing_ts or not has_events):
        raise ValueError("sft.split_mode is 'temporal' but the interaction log has events without a timestamp")
    metrics["split_mode"] = mode
    with timed(metrics, "cutoffs"):
        cutoffs = temporal_cutoffs(interactions, cfg, profile) if mode == TEMPORAL else None
    if cutoffs:
        metrics["valid_start_us"], metrics["test_start_us"] = cutoffs
    metrics["queries"] = "logged" if has_queries else "derived"
    partitions = cfg.build_partitions or int(spark.conf.get("spark.sql.shuffle.partitions"))

    # Both feed several jobs (pools, complements, records, counts): computed once.
    items_checked = prepare_items(catalog, sids, cfg).persist(StorageLevel.MEMORY_AND_DISK)
    items = items_checked.where(F.col(REASON).isNull())
    events = tag_events(interactions, items_checked, mode, cutoffs, partitions).persist(StorageLevel.MEMORY_AND_DISK)
    usable = events.where(F.col(REASON).isNull())

    enabled = cfg.enabled_tasks()
    trend_cutoffs = {}
    if "trending_rec" in enabled and mode != TEMPORAL:
        enabled.remove("trending_rec")
        notes.append("trending_rec skipped: the interaction log has no timestamps, so nothing can be 'rising in a recent window'")
        metrics["trending_rec_skipped"] = "no_timestamps"
    elif "trending_rec" in enabled:
        trend_cutoffs = {TRAIN: cutoffs[0], TEST: cutoffs[1]}
    if "sid_semantics" in enabled and not glossary:
        enabled.remove("sid_semantics")
        notes.append("sid_semantics skipped: no SID glossary (sid_artifacts/glossary.json) was found")
        metrics["sid_semantics_skipped"] = "no_glossary"

    with timed(metrics, "pools_and_trends"):
        prefix_pool, category_pool, global_pool, trend_lists = lookup_tables(items, usable, cfg, seed, trend_cutoffs)
    need_comps = "bundle" in enabled or "multi_turn_fulfillment" in enabled
    comps = complements(usable, items, cfg).persist(StorageLevel.MEMORY_AND_DISK) if need_comps else None
    ctx = BuildContext(cfg=cfg, seed=seed, split_mode=mode, has_logged_queries=has_queries, prefix_pool=prefix_pool,
                       category_pool=category_pool, global_pool=global_pool, trending=trend_lists, trend_cutoffs=trend_cutoffs)

    sources = []
    user_tasks = [t for t in enabled if hasattr(_task(t), "build_user") and not (t == "search" and not has_queries)]
    if user_tasks:
        sources.append(_user_source(user_sequences(usable, item_lookup(items, comps)), ctx, user_tasks))
    item_tasks = [t for t in enabled if hasattr(_task(t), "build_item")]
    if item_tasks:
        sources.append(_item_source(items, comps, ctx, item_tasks))
    if "search" in enabled and not has_queries:
        sources.append(_search_source(items, ctx))
    if "sid_semantics" in enabled:
        from sft_builder.build import build_glossary_records

        rows = build_glossary_records(glossary, ctx)
        if rows:
            sources.append(RecordSource("glossary", spark.createDataFrame(pa.Table.from_pylist(rows, schema=RECORDS_WITH_CONTENT)), _as_is))
    quarantine = item_quarantine(items_checked).unionByName(event_quarantine(events))
    cached = [df for df in (items_checked, events, comps) if df is not None]
    return CorpusParts(sources=sources, quarantine=quarantine, events=events, items_checked=items_checked, notes=notes,
                       metrics=metrics, cached=cached)


def _task(name: str):
    from sft_builder.tasks import TASKS

    return TASKS[name]


def metadata_json(record: dict) -> dict:
    return json.loads(record[R.metadata] or "{}")

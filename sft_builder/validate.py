"""Leakage and grounding checks over a built corpus (Spark DataFrames of SFT_RECORDS rows).

:func:`find_leaks` is what the quality gate calls: an empty result proves that no validation/test
target item of a user appears anywhere in a training record of the same user (any task: history,
candidates, catalog results, targets), and, under a temporal split, that no training record uses an
event of the held-out period.
"""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from schemas.sft import TRAIN
from schemas.sft import C as R
from schemas.sids import C as S

RULE, ITEM, HELD_OUT_SPLIT, DETAIL = "rule", "item_id", "held_out_split", "detail"
HELD_OUT_ITEM_IN_TRAIN = "held_out_item_in_train"
TRAIN_USES_HELD_OUT_PERIOD = "train_uses_held_out_period"


def find_leaks(records: DataFrame, *, valid_start_us: int | None = None) -> DataFrame:
    """Violations, one row each: ``user_id, id`` (the training record), ``rule``, ``item_id``,
    ``held_out_split``, ``detail``. ``valid_start_us``: the temporal cutoff (epoch microseconds) when the
    corpus was split by time; training records must then use only events before it."""
    with_user = records.where(F.col(R.user_id).isNotNull())
    # Targets of a record marked "targets_from_log": false (trending_rec) are suggestions, not the user's events.
    from_log = F.coalesce(F.get_json_object(F.col(R.metadata), "$.targets_from_log"), F.lit("true")) != "false"
    held_out = (
        with_user.where((F.col(R.split) != TRAIN) & from_log)
        .select(R.user_id, F.explode(R.target_item_ids).alias(ITEM), F.col(R.split).alias(HELD_OUT_SPLIT))
        .where(F.col(ITEM).isNotNull())
        .groupBy(R.user_id, ITEM).agg(F.min(HELD_OUT_SPLIT).alias(HELD_OUT_SPLIT))
    )
    # One row per user (item -> split): training records are joined per user and intersected as arrays,
    # so the log-sized "every item of every training record" table is never materialised or shuffled.
    held = held_out.groupBy(R.user_id).agg(F.map_from_entries(F.collect_list(F.struct(ITEM, HELD_OUT_SPLIT))).alias("_held"))
    mentioned = with_user.where(F.col(R.split) == TRAIN).select(
        R.user_id, R.id, F.array_union(F.coalesce(R.item_ids, F.array()), F.coalesce(R.target_item_ids, F.array())).alias("_items")
    )
    leaks = (
        mentioned.join(held, R.user_id)
        .select(R.user_id, R.id, "_held", F.explode(F.array_intersect("_items", F.map_keys("_held"))).alias(ITEM))
        .select(R.user_id, R.id, F.lit(HELD_OUT_ITEM_IN_TRAIN).alias(RULE), ITEM, F.element_at("_held", F.col(ITEM)).alias(HELD_OUT_SPLIT),
                F.lit("a training record mentions an item this user holds out").alias(DETAIL))
        .distinct()
    )
    if valid_start_us is not None:
        ts = F.get_json_object(F.col(R.metadata), "$.max_event_ts").cast("long")
        late = records.where((F.col(R.split) == TRAIN) & ts.isNotNull() & (ts >= valid_start_us)).select(
            R.user_id, R.id, F.lit(TRAIN_USES_HELD_OUT_PERIOD).alias(RULE), F.lit(None).cast("string").alias(ITEM),
            F.lit(None).cast("string").alias(HELD_OUT_SPLIT),
            F.concat(F.lit("max_event_ts "), ts.cast("string"), F.lit(f" >= valid_start {valid_start_us}")).alias(DETAIL),
        )
        leaks = leaks.unionByName(late)
    return leaks


def find_unresolved_sids(records: DataFrame, sids: DataFrame) -> DataFrame:
    """SIDs used in the corpus that do not resolve to exactly one item of the SID table:
    ``sid, n_items`` (0: unknown SID, > 1: ambiguous)."""
    used = records.select(F.explode(R.sids).alias("sid")).distinct()
    owners = sids.groupBy(F.trim(F.col(S.sid_tokens)).alias("sid")).agg(F.count(F.lit(1)).alias("n_items"))
    return used.join(owners, "sid", "left").select("sid", F.coalesce("n_items", F.lit(0)).alias("n_items")).where(F.col("n_items") != 1)

"""Spark side of the checks: reduce SID, catalog, embedding and SFT tables to small aggregates.

Every function returns a DataFrame (or a handful of numbers) whose size is bounded by the codebook
(levels x K), the number of distinct bucket sizes, or a configured sample; no table is collected
whole. :mod:`jobs.check.metrics` turns the aggregates into metrics.
"""

from __future__ import annotations

from collections.abc import Iterator

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.window import Window

from schemas.catalog import C as CAT
from schemas.embeddings import C as EMB
from schemas.sft import SPLITS
from schemas.sft import C as SFT
from schemas.sids import C as S

KEY_NAME = "key_name"
KEY = "key"
BUCKET_SIZE = "bucket_size"
BUCKETS = "buckets"
LEVEL = "level"
CODE = "code"
ITEMS = "items"
RESOLVED_KEY = "sid"
TEXT_KEY = "text_hash"
TRAIN_SPLIT, TEST_SPLIT = SPLITS[0], SPLITS[-1]


def prefix_key_name(level: int) -> str:
    return f"prefix_{level}"


def _int_array_key(column) -> F.Column:
    return F.concat_ws("-", column.cast("array<string>"))


def sid_bucket_keys(sids: DataFrame) -> DataFrame:
    """(key_name, key) rows: every raw-code prefix (prefix_1 .. prefix_L, the last one being the full
    raw code) and the resolved SID. One explode, so one shuffle computes every level's buckets."""
    codes = F.col(S.codes)
    prefixes = F.transform(
        F.sequence(F.lit(1), F.size(codes)),
        lambda level: F.struct(
            F.concat(F.lit("prefix_"), level.cast("string")).alias(KEY_NAME),
            _int_array_key(F.slice(codes, F.lit(1), level)).alias(KEY),
        ),
    )
    resolved = F.struct(F.lit(RESOLVED_KEY).alias(KEY_NAME), _int_array_key(F.col(S.sid)).alias(KEY))
    exploded = sids.select(F.explode(F.concat(prefixes, F.array(resolved))).alias("k"))
    return exploded.select(F.col(f"k.{KEY_NAME}").alias(KEY_NAME), F.col(f"k.{KEY}").alias(KEY))


def text_hash_keys(sids: DataFrame, catalog: DataFrame) -> DataFrame:
    """(key_name, key) rows of the catalog text hash of every SID'd item: buckets of identical text."""
    return (
        sids.select(S.item_id)
        .join(catalog.select(CAT.item_id, CAT.text_hash), on=S.item_id)
        .select(F.lit(TEXT_KEY).alias(KEY_NAME), F.col(CAT.text_hash).alias(KEY))
    )


def bucket_size_histogram(keys: DataFrame) -> DataFrame:
    """(key_name, bucket_size, buckets): how many keys are shared by exactly ``bucket_size`` items."""
    per_key = keys.groupBy(KEY_NAME, KEY).agg(F.count(F.lit(1)).alias(BUCKET_SIZE))
    return per_key.groupBy(KEY_NAME, BUCKET_SIZE).agg(F.count(F.lit(1)).alias(BUCKETS))


def level_code_counts(sids: DataFrame) -> DataFrame:
    """(level, code, items): raw code usage per level (levels are 1-based)."""
    exploded = sids.select(F.posexplode(S.codes).alias("pos", CODE))
    return exploded.groupBy((F.col("pos") + 1).alias(LEVEL), CODE).agg(F.count(F.lit(1)).alias(ITEMS))


def category_entropy_sums(
    sids: DataFrame, catalog: DataFrame, *, category_depth: int = 2
) -> dict[str, float]:
    """n and the sums of c*log(c) over level-1 code counts, category counts and joint counts.

    The category is the ``category_depth``-th element of ``category_path`` (the first is the root,
    shared by every item); items without one are left out. One Spark job: a cube over (code,
    category) yields the joint, both marginal and the total counts, told apart by grouping_id.
    """
    labelled = (
        sids.select(S.item_id, F.col(S.codes)[0].alias("x"))
        .join(
            catalog.select(CAT.item_id, F.element_at(CAT.category_path, category_depth).alias("y")),
            on=S.item_id,
        )
        .where(F.col("x").isNotNull() & F.col("y").isNotNull() & (F.length(F.trim("y")) > 0))
    )
    counts = labelled.cube("x", "y").agg(F.grouping_id().alias("g"), F.count(F.lit(1)).alias("c"))
    sums = {
        int(row["g"]): (int(row["n"]), float(row["s"] or 0.0))
        for row in counts.groupBy("g")
        .agg(F.sum("c").alias("n"), F.sum(F.col("c") * F.log("c")).alias("s"))
        .collect()
    }
    # grouping_id bits: x aggregated away = 2, y aggregated away = 1
    n = sums.get(3, (0, 0.0))[0]
    return {
        "n": n,
        "sum_xy": sums.get(0, (0, 0.0))[1],
        "sum_x": sums.get(1, (0, 0.0))[1],
        "sum_y": sums.get(2, (0, 0.0))[1],
    }


def sample_queries(embeddings: DataFrame, *, max_queries: int, seed: int) -> DataFrame:
    """A deterministic pseudo-random sample of at most ``max_queries`` items (by hash of id and seed);
    Spark computes it as a per-partition top-k, never a full sort."""
    return (
        embeddings.select(EMB.item_id, EMB.embedding)
        .orderBy(F.xxhash64(F.col(EMB.item_id), F.lit(seed)), F.col(EMB.item_id))
        .limit(max_queries)
    )


NEIGHBOUR_SCHEMA = "query_id string, neighbour_id string, score float"


def nearest_neighbours(embeddings: DataFrame, query_ids: list[str], query_vectors, *, k: int) -> DataFrame:
    """Exact cosine top-``k`` neighbours (self excluded) of each query among all embedded items.

    The queries (bounded) travel to the workers with the function; each partition searches its own
    items with a faiss flat index and keeps its best k+1 per query; Spark merges the partial lists.
    Ties are broken by neighbour id so the result does not depend on partitioning.
    """
    import numpy as np

    queries = np.ascontiguousarray(query_vectors, dtype="float32")
    queries /= np.maximum(np.linalg.norm(queries, axis=1, keepdims=True), 1e-12)
    keep = k + 1  # one spare: the query itself is usually its own nearest neighbour

    def search_partition(batches: Iterator):
        import faiss
        import numpy as np
        import pandas as pd

        faiss.omp_set_num_threads(1)
        scores, ids = [], []
        for batch in batches:
            if batch.empty:
                continue
            vectors = np.ascontiguousarray(np.stack(batch[EMB.embedding].to_numpy()), dtype="float32")
            vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
            index = faiss.IndexFlatIP(vectors.shape[1])
            index.add(vectors)
            found_scores, found = index.search(queries, min(keep, len(vectors)))
            batch_ids = batch[EMB.item_id].to_numpy()
            scores.append(found_scores)
            ids.append(batch_ids[found])
        if not scores:
            return
        all_scores, all_ids = np.concatenate(scores, axis=1), np.concatenate(ids, axis=1)
        rows = []
        for q, query_id in enumerate(query_ids):
            order = sorted(range(all_scores.shape[1]), key=lambda j: (-all_scores[q, j], all_ids[q, j]))[
                :keep
            ]
            rows.extend((query_id, all_ids[q, j], float(all_scores[q, j])) for j in order)
        yield pd.DataFrame(rows, columns=["query_id", "neighbour_id", "score"])

    partial = embeddings.select(EMB.item_id, EMB.embedding).mapInPandas(search_partition, NEIGHBOUR_SCHEMA)
    rank = Window.partitionBy("query_id").orderBy(F.col("score").desc(), F.col("neighbour_id"))
    return (
        partial.where(F.col("query_id") != F.col("neighbour_id"))
        .withColumn("rank", F.row_number().over(rank))
        .where(F.col("rank") <= k)
    )


def neighbour_code_agreement(neighbours: DataFrame, sids: DataFrame) -> float | None:
    """Mean over queries of the share of their neighbours with the same level-1 code."""
    level1 = sids.select(S.item_id, F.col(S.codes)[0].alias("c"))
    q = level1.withColumnRenamed(S.item_id, "query_id").withColumnRenamed("c", "query_code")
    n = level1.withColumnRenamed(S.item_id, "neighbour_id").withColumnRenamed("c", "neighbour_code")
    per_query = (
        neighbours.join(q, "query_id")
        .join(n, "neighbour_id")
        .groupBy("query_id")
        .agg(F.avg((F.col("query_code") == F.col("neighbour_code")).cast("double")).alias("share"))
    )
    row = per_query.agg(F.avg("share").alias("mean"), F.count(F.lit(1)).alias("queries")).first()
    return None if row["queries"] == 0 else float(row["mean"])


def sid_churn_counts(
    sids_now: DataFrame, sids_before: DataFrame, catalog_now=None, catalog_before=None
) -> dict[str, int]:
    """Counts for SID churn against a previous version, in one full outer join.

    An item is *unchanged* when it is in both versions with the same catalog ``text_hash`` (when both
    catalogs are given; otherwise presence in both is enough). Churn = changed SIDs among them.
    """
    now = sids_now.select(S.item_id, F.col(S.sid).alias("sid_now"))
    before = sids_before.select(S.item_id, F.col(S.sid).alias("sid_before"))
    if catalog_now is not None and catalog_before is not None:
        now = now.join(
            catalog_now.select(CAT.item_id, F.col(CAT.text_hash).alias("text_now")), S.item_id, "left"
        )
        before = before.join(
            catalog_before.select(CAT.item_id, F.col(CAT.text_hash).alias("text_before")), S.item_id, "left"
        )
        same_text = F.col("text_now").eqNullSafe(F.col("text_before"))
    else:
        same_text = F.lit(True)
    both = F.col("sid_now").isNotNull() & F.col("sid_before").isNotNull()
    unchanged = both & same_text
    row = (
        now.join(before, S.item_id, "full_outer")
        .agg(
            F.sum(both.cast("long")).alias("common"),
            F.sum(unchanged.cast("long")).alias("unchanged"),
            F.sum((unchanged & (F.col("sid_now") != F.col("sid_before"))).cast("long")).alias("changed"),
            F.sum(F.col("sid_before").isNull().cast("long")).alias("new"),
            F.sum(F.col("sid_now").isNull().cast("long")).alias("removed"),
        )
        .first()
    )
    return {key: int(row[key] or 0) for key in ("common", "unchanged", "changed", "new", "removed")}


def sft_record_issues(sft: DataFrame, sids: DataFrame) -> DataFrame:
    """Per-record problems of an SFT corpus: (id, _unknown_sids, _leaked_test_targets), problem rows only.

    Uses the SFT builder's own validators (``sft_builder.validate``: held-out items of a user in any of
    their training records; SIDs that do not resolve to exactly one item) when that package is
    installed, so the gate and the builder agree on what a leak is; else :func:`own_sft_record_issues`.
    """
    from schemas.expectations.sft import LEAKED_TEST_TARGETS, UNKNOWN_SIDS

    try:
        from sft_builder.validate import ITEM, find_leaks, find_unresolved_sids
    except ImportError:
        return own_sft_record_issues(sft, sids)
    sid = "_sid"
    leaked = find_leaks(sft).groupBy(SFT.id).agg(F.countDistinct(ITEM).alias(LEAKED_TEST_TARGETS))
    # find_unresolved_sids names its column "sid"; renamed so it cannot clash with the records' columns
    unresolved = find_unresolved_sids(sft, sids).withColumnRenamed("sid", sid).select(sid)
    unknown = (
        sft.select(SFT.id, F.explode(SFT.sids).alias(sid))
        .join(unresolved, sid)
        .groupBy(SFT.id)
        .agg(F.count(F.lit(1)).alias(UNKNOWN_SIDS))
    )
    return unknown.join(leaked, SFT.id, "full_outer").fillna(0, subset=[UNKNOWN_SIDS, LEAKED_TEST_TARGETS])


def own_sft_record_issues(sft: DataFrame, sids: DataFrame) -> DataFrame:
    """The gate's own Spark anti-join version of :func:`sft_record_issues` (used without sft_builder).

    Unknown SIDs: strings in a record's ``sids`` that are neither a ``sid_tokens`` nor an ``item_token``
    of the SID table. Leaks: a training record of user u whose targets or mentioned SIDs include an
    item that is a test target of u.
    """
    from schemas.expectations.sft import LEAKED_TEST_TARGETS, UNKNOWN_SIDS

    token = "token"
    known = (
        sids.select(F.col(S.sid_tokens).alias(token))
        .union(sids.where(F.col(S.item_token).isNotNull()).select(F.col(S.item_token).alias(token)))
        .distinct()
    )
    mentions = sft.select(SFT.id, SFT.user_id, SFT.split, F.explode(SFT.sids).alias(token))
    unknown = (
        mentions.join(known, token, "left_anti").groupBy(SFT.id).agg(F.count(F.lit(1)).alias(UNKNOWN_SIDS))
    )

    user = F.col(SFT.user_id).isNotNull()
    test_targets = (
        sft.where((F.col(SFT.split) == TEST_SPLIT) & user)
        .select(SFT.user_id, F.explode(SFT.target_item_ids).alias(S.item_id))
        .distinct()
    )
    target_tokens = (
        test_targets.join(sids.select(S.item_id, S.sid_tokens, S.item_token), S.item_id)
        .select(SFT.user_id, S.item_id, F.explode(F.array(S.sid_tokens, S.item_token)).alias(token))
        .where(F.col(token).isNotNull())
    )
    train = sft.where((F.col(SFT.split) == TRAIN_SPLIT) & user)
    by_target = train.select(SFT.id, SFT.user_id, F.explode(SFT.target_item_ids).alias(S.item_id)).join(
        test_targets, [SFT.user_id, S.item_id]
    )
    by_mention = (
        mentions.where((F.col(SFT.split) == TRAIN_SPLIT) & user)
        .join(target_tokens, [SFT.user_id, token])
        .select(SFT.id, SFT.user_id, S.item_id)
    )
    leaked = (
        by_target.select(SFT.id, S.item_id)
        .union(by_mention.select(SFT.id, S.item_id))
        .distinct()
        .groupBy(SFT.id)
        .agg(F.count(F.lit(1)).alias(LEAKED_TEST_TARGETS))
    )
    return unknown.join(leaked, SFT.id, "full_outer").fillna(0, subset=[UNKNOWN_SIDS, LEAKED_TEST_TARGETS])

"""Pure DataFrame functions of the sids stage: resolution per prefix group, rendering, glossary aggregates."""

from __future__ import annotations

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, IntegerType, StringType, StructField, StructType

from schemas.catalog import C as CAT
from schemas.sids import C as S
from tokenizer.glossary import STOPWORDS, TERM_PATTERN

PREFIX = "_prefix"
BUCKET = "_bucket"
KEPT = "kept_sid"


def with_prefix(df: DataFrame, column: str, levels: int) -> DataFrame:
    """Prefix group key: the first L-1 entries of ``column`` (empty for a one-level codebook)."""
    return df.withColumn(PREFIX, F.slice(column, 1, levels - 1) if levels > 1 else F.array().cast(ArrayType(IntegerType())))


def resolve(current: DataFrame, taken: DataFrame, codebook, *, method: str, length: int, vectors: DataFrame) -> DataFrame:
    """Resolve collisions per prefix group (cogroup of current items and taken SIDs, by level-1 code).

    ``current``: item_id, codes, kept_sid (nullable). ``taken``: sid (retired SIDs). ``vectors``:
    item_id, embedding, of which only the items whose raw code another item or an occupied SID also
    has are joined in (``reassign`` prices moves by their vectors; nothing else needs one), so the
    vectors of the other 99% of items never cross the shuffle.
    Returns item_id, sid, resolution; hybrid item ordinals are filled by :func:`fill_item_ordinals`.
    """
    import numpy as np
    import pandas as pd

    from tokenizer.resolve import resolve_groups

    levels, k = codebook.levels, codebook.codebook_size
    bc = current.sparkSession.sparkContext.broadcast(codebook)
    schema = StructType([
        StructField(S.item_id, StringType(), False),
        StructField(S.sid, ArrayType(IntegerType(), False), False),
        StructField(S.resolution, StringType(), True),
    ])

    def costs(rows: pd.DataFrame) -> np.ndarray:
        cb = bc.value
        emb = np.stack([np.asarray(v, dtype=np.float64) for v in rows["embedding"]])
        raw = np.stack([np.asarray(c, dtype=np.int32) for c in rows[S.codes]])
        # with the item's raw codes as prefix, the costs include the codebook's per-prefix prices (as encode does)
        return cb.level_costs(cb.residuals(emb, cb.levels - 1), cb.levels - 1, prefixes=raw)

    def fn(cur: pd.DataFrame, tk: pd.DataFrame) -> pd.DataFrame:
        out = resolve_groups(cur, method=method, levels=levels, codebook_size=k, length=length,
                             taken=[list(s) for s in tk[S.sid]] if len(tk) else (), last_level_costs=costs)
        out[S.sid] = [np.asarray(s, dtype=np.int32) for s in out[S.sid]]
        return out

    cur = with_prefix(with_colliding_vectors(current, taken, vectors, levels) if method == "reassign" else current,
                      S.codes, levels)
    # kept items are grouped by their kept SID's prefix (equal to the raw prefix under a frozen codebook)
    cur = cur.withColumn(PREFIX, F.coalesce(F.slice(KEPT, 1, levels - 1), F.col(PREFIX))) if levels > 1 else cur
    tk = with_prefix(taken, S.sid, levels)
    # One pandas call per level-1 code, each resolving all its prefix groups: a call per prefix group
    # (up to K^(L-1) of them) cost more than the resolution itself (24 of 84 s at 100k items).
    bucket = F.element_at(PREFIX, 1) if levels > 1 else F.lit(0)
    return (cur.withColumn(BUCKET, bucket).groupBy(BUCKET)
            .cogroup(tk.withColumn(BUCKET, bucket).groupBy(BUCKET)).applyInPandas(fn, schema))


def with_colliding_vectors(current: DataFrame, taken: DataFrame, vectors: DataFrame, levels: int) -> DataFrame:
    """``current`` plus ``embedding``, non-null for every item :func:`tokenizer.resolve.resolve_group`
    may move: a free item whose raw code equals another item's code or an occupied (kept or taken)
    SID's first ``levels`` entries. Their ids are few (the raw collisions), so they are broadcast and
    the vectors table is filtered where it is read, not shuffled."""
    key = "_key"
    keys = (
        current.select(F.col(S.codes).alias(key))
        .unionByName(current.where(F.col(KEPT).isNotNull()).select(F.slice(KEPT, 1, levels).alias(key)))
        .unionByName(taken.select(F.slice(S.sid, 1, levels).alias(key)))
    )
    shared = keys.groupBy(key).count().where("count > 1").select(F.col(key).alias(S.codes))
    movable = current.where(F.col(KEPT).isNull()).join(shared, S.codes, "left_semi").select(S.item_id)
    return current.join(vectors.join(F.broadcast(movable), S.item_id), S.item_id, "left")


def max_group_size(current: DataFrame, taken: DataFrame, levels: int) -> int:
    """Largest number of items (current + taken) sharing a prefix: > K means reassign overflows."""
    a = with_prefix(current, S.codes, levels).select(PREFIX)
    b = with_prefix(taken, S.sid, levels).select(PREFIX)
    row = a.unionByName(b).groupBy(PREFIX).count().agg(F.max("count")).first()
    return int(row[0] or 0)


def fill_item_ordinals(resolved: DataFrame, *, first_ordinal: int) -> DataFrame:
    """Hybrid: new items (last SID entry -1) get consecutive ordinals after ``first_ordinal`` by item_id."""
    last = F.element_at(S.sid, -1)
    new = resolved.where(last == -1)
    # one global ordering is needed for consecutive ordinals; it touches only new items' ids
    w = Window.orderBy(S.item_id)
    new = new.withColumn("_ord", F.row_number().over(w) - 1 + F.lit(int(first_ordinal)))
    new = new.withColumn(S.sid, F.concat(F.slice(S.sid, 1, F.size(S.sid) - 1), F.array(F.col("_ord").cast("int")))).drop("_ord")
    return resolved.where(last != -1).unionByName(new)


def render_tokens(df: DataFrame, fmt) -> DataFrame:
    """Add sid_tokens (and item_token for hybrid) rendered with the token format, per partition."""
    out_schema = StructType(list(df.schema.fields) + [StructField(S.sid_tokens, StringType(), False), StructField(S.item_token, StringType(), True)])

    def render(batches):
        for pdf in batches:
            pdf[S.sid_tokens] = [fmt.render(s) for s in pdf[S.sid]]
            pdf[S.item_token] = [fmt.item_token(s) for s in pdf[S.sid]]
            yield pdf

    return df.mapInPandas(render, out_schema)


def glossary_aggregates(sids: DataFrame, catalog: DataFrame, *, prefix_levels: list[int], examples: int, top_terms: int) -> dict:
    """The aggregate tables of :func:`tokenizer.glossary.build_glossary`, computed in Spark, cut to
    what the glossary can use so that what reaches the driver grows with the number of prefixes, not
    of items: per prefix the dominant category and the best-scoring terms.

    Terms are scored here as ``build_glossary`` scores them (share of the prefix's items x IDF, after
    its single-item rule) and the best ``2 * top_terms`` kept; the driver re-ranks them exactly, so a
    last-bit difference between Spark's and Python's logarithm cannot change the glossary.
    """
    items = sids.select(S.item_id, S.sid).join(catalog.select(CAT.item_id, CAT.title, CAT.category_path), S.item_id, "left")
    stop = F.array(*[F.lit(w) for w in sorted(STOPWORDS)])
    terms = F.array_distinct(F.filter(F.regexp_extract_all(F.lower(F.coalesce(CAT.title, F.lit(""))), F.lit(TERM_PATTERN), 0),
                                      lambda t: ~F.array_contains(stop, t)))
    items = items.withColumn("_terms", terms).withColumn("_cat", F.concat_ws(" > ", F.coalesce(CAT.category_path, F.array().cast("array<string>"))))
    levelled = items.withColumn("level", F.explode(F.array(*[F.lit(lv) for lv in prefix_levels])))
    levelled = levelled.withColumn("prefix", F.expr(f"slice({S.sid}, 1, level)")).cache()
    n_items = items.count()
    group = ["level", "prefix"]
    sizes = levelled.groupBy(*group).agg(F.count("*").alias("item_count"))
    doc_freq = items.select(F.explode("_terms").alias("term")).groupBy("term").agg(F.count("*").alias("doc_freq"))
    term_counts = (
        levelled.select(*group, F.explode("_terms").alias("term")).groupBy(*group, "term").count()
        .join(sizes, group).join(doc_freq, "term")
        .where((F.col("item_count") == 1) | (F.col("count") >= 2))
        .withColumn("_score", F.col("count") / F.col("item_count") * F.log(F.lit(float(n_items)) / F.col("doc_freq")))
        .withColumn("_rank", F.row_number().over(Window.partitionBy(*group).orderBy(F.col("_score").desc(), "term")))
        .where(F.col("_rank") <= 2 * top_terms)
        .select(*group, "term", "count", "doc_freq")
        .cache()
    )
    cats = (
        levelled.groupBy(*group, F.col("_cat").alias("category")).count()
        .withColumn("_rank", F.row_number().over(Window.partitionBy(*group).orderBy(F.col("count").desc(), "category")))
        .where(F.col("_rank") == 1).drop("_rank")
    )
    w = Window.partitionBy(*group).orderBy(S.item_id)
    ex = levelled.withColumn("_rn", F.row_number().over(w)).where(F.col("_rn") <= examples).select(
        *group, S.item_id, F.coalesce(CAT.title, F.lit("")).alias("title"))

    def pdf(d: DataFrame, order: list[str]):
        # small tables: sorted on the driver, which saves the sampling job of a Spark orderBy
        p = d.toPandas()
        if "prefix" in p:
            p["prefix"] = p["prefix"].map(lambda a: tuple(int(v) for v in a))
        return p.sort_values(order, kind="stable", ignore_index=True)

    out = {
        "sizes": pdf(sizes, ["level", "prefix"]),
        "term_counts": pdf(term_counts.drop("doc_freq"), ["level", "prefix", "term"]),
        "category_counts": pdf(cats, ["level", "prefix", "category"]),
        "examples": pdf(ex, ["level", "prefix", S.item_id]),
        "doc_freq": pdf(term_counts.select("term", "doc_freq").distinct(), ["term"]),
        "items": n_items,
    }
    term_counts.unpersist()
    levelled.unpersist()
    return out

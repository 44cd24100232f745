"""Spark transforms of the fuse stage: DataFrame -> DataFrame, no I/O.

Positions inside a user's history are re-derived with ``row_number`` over (seq_index, item_id), so
gaps or ties in ``seq_index`` cannot change which events are held out or which pairs co-occur.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from jobs.fuse.config import FuseConfig
from jobs.fuse.fusion import FusionWeights, build_space
from schemas.convert import to_spark
from schemas.embeddings import EMBEDDINGS
from schemas.embeddings import C as E
from schemas.interactions import C as I

POSITION = "_position"
HISTORY_LENGTH = "_history_length"
IS_HELDOUT = "_is_heldout"
ITEM_A, ITEM_B, COUNT = "item_a", "item_b", "count"
QUERY_ITEM, TARGET_ITEM = "query_item", "target_item"
COLLAB_EMBEDDING = "_collab_embedding"
INDEX = "item_index"


def mark_heldout(interactions: DataFrame, *, cfg: FuseConfig) -> DataFrame:
    """Add the event's position in its user's history and whether it is held out of training.

    The last ``holdout_last`` events of a user are held out when the user keeps at least
    ``min_train_events`` for training; shorter histories are kept whole.
    """
    by_user = Window.partitionBy(I.user_id)
    ordered = by_user.orderBy(I.seq_index, I.item_id)
    df = interactions.withColumn(POSITION, F.row_number().over(ordered) - 1).withColumn(
        HISTORY_LENGTH, F.count(F.lit(1)).over(by_user)
    )
    eligible = F.col(HISTORY_LENGTH) >= cfg.holdout_last + cfg.min_train_events
    heldout = eligible & (F.col(POSITION) >= F.col(HISTORY_LENGTH) - cfg.holdout_last)
    return df.withColumn(IS_HELDOUT, heldout & F.lit(cfg.holdout_last > 0))


def _windowed_pairs(events: DataFrame, window: int) -> DataFrame:
    """(user, earlier item, later item, later event's held-out flag) for events <= ``window`` apart."""
    left = events.select(
        I.user_id, F.col(POSITION).alias("_pos_a"), F.col(I.item_id).alias(ITEM_A),
        F.explode(F.sequence(F.lit(1), F.lit(window))).alias("_offset"),
    ).withColumn("_pos_b", F.col("_pos_a") + F.col("_offset"))
    right = events.select(I.user_id, F.col(POSITION).alias("_pos_b"), F.col(I.item_id).alias(ITEM_B), IS_HELDOUT)
    return left.join(right, on=[I.user_id, "_pos_b"], how="inner").where(F.col(ITEM_A) != F.col(ITEM_B))


def cooccurrence_counts(marked: DataFrame, *, window: int) -> DataFrame:
    """Symmetric co-occurrence counts (item_a, item_b, count) over the training events only.

    Held-out events are the last of each history, so training positions stay contiguous; the counts
    are integers, so the sum does not depend on the order Spark adds them in.
    """
    train = marked.where(~F.col(IS_HELDOUT)).select(I.user_id, I.item_id, POSITION)
    pairs = _windowed_pairs(train.withColumn(IS_HELDOUT, F.lit(False)), window)
    both = pairs.select(ITEM_A, ITEM_B).unionByName(pairs.select(F.col(ITEM_B).alias(ITEM_A), F.col(ITEM_A).alias(ITEM_B)))
    return both.groupBy(ITEM_A, ITEM_B).agg(F.count(F.lit(1)).cast("long").alias(COUNT))


def heldout_pairs(marked: DataFrame, *, window: int) -> DataFrame:
    """Evaluation pairs (query_item, target_item): a held-out event and each event up to ``window`` before it."""
    pairs = _windowed_pairs(marked, window).where(F.col(IS_HELDOUT))
    return pairs.select(F.col(ITEM_A).alias(QUERY_ITEM), F.col(ITEM_B).alias(TARGET_ITEM), I.user_id)


def training_items(marked: DataFrame) -> DataFrame:
    """Distinct items with at least one training event, with a dense index in item_id order."""
    items = marked.where(~F.col(IS_HELDOUT)).select(I.item_id).distinct()
    return items.withColumn(INDEX, F.row_number().over(Window.orderBy(I.item_id)) - 1)


def index_counts(counts: DataFrame, items: DataFrame) -> DataFrame:
    """Replace item ids in the count triplets by dense indices (what the driver-side SVD consumes)."""
    a = items.select(F.col(I.item_id).alias(ITEM_A), F.col(INDEX).alias("_ia"))
    b = items.select(F.col(I.item_id).alias(ITEM_B), F.col(INDEX).alias("_ib"))
    return counts.join(a, ITEM_A).join(b, ITEM_B).select(F.col("_ia").alias(ITEM_A), F.col("_ib").alias(ITEM_B), COUNT)


def attach_collab(text_embeddings: DataFrame, collab_embeddings: DataFrame) -> DataFrame:
    """Text rows with their collaborative vector (null for items without training interactions)."""
    collab = collab_embeddings.select(E.item_id, F.col(E.embedding).alias(COLLAB_EMBEDDING))
    return text_embeddings.join(collab, on=E.item_id, how="left")


def project_space(joined: DataFrame, *, space: str, fusion: str, weights: FusionWeights, fingerprint: str) -> DataFrame:
    """Map (text, collaborative-or-null) rows to ``space`` in the workers with :func:`build_space`.

    The text space passes rows through untouched (keeping their model fingerprint).
    """
    if space == "text":
        return joined.select(E.item_id, E.embedding, F.lit("text").alias(E.space), E.text_hash, E.model_fingerprint)
    arrays = weights.to_arrays()
    out_schema = to_spark(EMBEDDINGS)
    label = "collaborative" if space == "collaborative" else "fused"

    def apply(batches):
        local = FusionWeights(**arrays)
        for pdf in batches:
            if pdf.empty:
                continue
            text = np.stack(pdf[E.embedding].to_numpy()).astype(np.float32)
            has_collab = pdf[COLLAB_EMBEDDING].notna().to_numpy()
            d_collab = local.cold_map.shape[1]
            collab = np.zeros((len(pdf), d_collab), dtype=np.float32)
            if has_collab.any():
                collab[has_collab] = np.stack(pdf.loc[has_collab, COLLAB_EMBEDDING].to_numpy())
            vectors = build_space(space, text, collab, has_collab, local, fusion=fusion)
            yield pd.DataFrame({
                E.item_id: pdf[E.item_id].to_numpy(),
                E.embedding: list(vectors),
                E.space: label,
                E.text_hash: pdf[E.text_hash].to_numpy(),
                E.model_fingerprint: fingerprint,
            })

    return joined.select(E.item_id, E.embedding, E.text_hash, COLLAB_EMBEDDING).mapInPandas(apply, out_schema)

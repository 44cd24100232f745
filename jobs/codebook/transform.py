"""Pure DataFrame functions of the codebook and sids stages (validation, sampling, encoding)."""

from __future__ import annotations

from typing import Any

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from schemas.embeddings import C as E
from tokenizer.errors import EmbeddingError

MAX_NAMED = 10
PROBLEM = "problem"  # column of validate_embeddings' bad rows: which check a vector failed


def embedding_space(df: DataFrame) -> dict[str, Any]:
    """The single space / model fingerprint / dimension of an embeddings table (bounded collect)."""
    rows = df.select(E.space, E.model_fingerprint, F.size(E.embedding).alias("dim")).distinct().limit(MAX_NAMED + 1).collect()
    spaces = sorted({r[E.space] for r in rows if r[E.space] is not None})
    fps = sorted({r[E.model_fingerprint] for r in rows if r[E.model_fingerprint] is not None})
    if len(spaces) > 1 or len(fps) > 1:
        raise EmbeddingError(f"embeddings mix spaces {spaces} / model fingerprints {fps}: a codebook needs one space")
    dims = sorted({r["dim"] for r in rows})
    return {"space": spaces[0] if spaces else None, "model_fingerprint": fps[0] if fps else None, "dims": dims}


def validate_embeddings(df: DataFrame, dim: int) -> None:
    """Raise :class:`EmbeddingError` naming items whose vector is null, NaN/inf or not ``dim`` long.

    One pass over the table, checked in numpy on the Arrow batches (Spark's per-element ``exists``
    took two passes and 10 s at 100k items); only the bad rows leave the workers.
    """
    from pyspark import StorageLevel

    wrong_dim, not_finite = f"have the wrong dimension (expected {dim})", "contain NaN or inf"
    bad = df.select(E.item_id, E.embedding).mapInArrow(
        _bad_vectors(dim, wrong_dim, not_finite), f"{E.item_id} string, {PROBLEM} string"
    ).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        counts = {r[PROBLEM]: r["count"] for r in bad.groupBy(PROBLEM).count().collect()}
        for what in (wrong_dim, not_finite):  # a wrong dimension is reported first, as it hides the values
            if counts.get(what):
                total = counts[what]
                named = [r[0] for r in bad.where(F.col(PROBLEM) == what).select(E.item_id).orderBy(E.item_id).limit(MAX_NAMED).collect()]
                more = f" (+{total - len(named)} more)" if total > len(named) else ""
                raise EmbeddingError(f"{total} embeddings {what}: items {', '.join(named)}{more}")
    finally:
        bad.unpersist()


def _bad_vectors(dim: int, wrong_dim: str, not_finite: str):
    """mapInArrow function: (item_id, problem) of each row whose vector is null, not ``dim`` long, or
    holds a null, NaN or inf value."""

    def find(batches):
        import numpy as np
        import pyarrow as pa
        import pyarrow.compute as pc

        for batch in batches:
            ids, vectors = batch.column(0), batch.column(1)
            wrong = pc.fill_null(pc.not_equal(pc.list_value_length(vectors), dim), True).to_numpy(zero_copy_only=False)
            # null elements come out of to_numpy as NaN, so they are caught with NaN and inf
            values = pc.list_flatten(vectors).to_numpy(zero_copy_only=False)
            rows = pc.list_parent_indices(vectors).to_numpy(zero_copy_only=False)
            nonfinite = np.zeros(len(wrong), dtype=bool)
            nonfinite[rows[~np.isfinite(values)]] = True
            nonfinite &= ~wrong
            if wrong.any() or nonfinite.any():
                picked = np.flatnonzero(wrong | nonfinite)
                yield pa.RecordBatch.from_arrays(
                    [ids.take(picked), pa.array(np.where(wrong[picked], wrong_dim, not_finite))], [E.item_id, PROBLEM]
                )

    return find


def training_sample(df: DataFrame, *, max_items: int, seed: int) -> DataFrame:
    """Deterministic bounded sample: the ``max_items`` items with the smallest seeded hash of item_id."""
    key = F.xxhash64(F.col(E.item_id), F.lit(int(seed)))
    return df.withColumn("_sample_key", key).orderBy("_sample_key", E.item_id).limit(max_items).drop("_sample_key")


def encode_codes(df: DataFrame, codebook, *, keep: tuple[str, ...] = ()) -> DataFrame:
    """Add ``codes`` (array<int>) by encoding each partition with the frozen, broadcast codebook."""
    import numpy as np
    from pyspark.sql.types import ArrayType, IntegerType, StructField, StructType

    bc = df.sparkSession.sparkContext.broadcast(codebook)
    cols = [E.item_id, *keep]
    out_schema = StructType([df.schema[c] for c in cols] + [StructField("codes", ArrayType(IntegerType(), False), False)])

    def encode(batches):
        cb = bc.value
        for pdf in batches:
            if len(pdf) == 0:
                continue
            codes = cb.encode(list(pdf[E.embedding]), list(pdf[E.item_id]))
            out = pdf[cols].copy()
            out["codes"] = [np.asarray(c, dtype=np.int32) for c in codes]
            yield out

    return df.select(*dict.fromkeys([*cols, E.embedding])).mapInPandas(encode, out_schema)


def frozen_drift(df: DataFrame, codebook, *, previous_items: DataFrame | None) -> dict[str, float]:
    """Drift of a catalog under a frozen codebook: the new-item share, new items' first-level
    reconstruction error relative to returning items', and the raw full-code collision rate.

    The error is compared at the first level and against returning items measured now: deeper levels
    are fitted on a handful of training items each, so their in-sample error says more about the
    codebook's capacity than about whether new items come from the distribution it was trained on.
    """
    import numpy as np
    from pyspark.sql.types import BooleanType, DoubleType, StructField, StructType

    total = df.count()
    if previous_items is not None:
        flagged = df.join(previous_items.select(E.item_id, F.lit(False).alias("is_new")), E.item_id, "left").fillna(True, ["is_new"])
    else:
        flagged = df.withColumn("is_new", F.lit(True))
    bc = df.sparkSession.sparkContext.broadcast(codebook)

    def errors(batches):
        cb = bc.value
        for pdf in batches:
            if len(pdf):
                x = np.stack([np.asarray(v, dtype=np.float64) for v in pdf[E.embedding]])
                yield pdf[["is_new"]].assign(err=(cb.residuals(x, 1) ** 2).sum(1))

    err_schema = StructType([StructField("is_new", BooleanType(), False), StructField("err", DoubleType(), False)])
    by_group = {r["is_new"]: (r["n"], r["err"]) for r in flagged.select(E.embedding, "is_new").mapInPandas(errors, err_schema)
                .groupBy("is_new").agg(F.count("*").alias("n"), F.avg("err").alias("err")).collect()}
    n_new, new_err = by_group.get(True, (0, None))
    _, returning_err = by_group.get(False, (0, None))
    codes = encode_codes(df, codebook)
    colliding = codes.groupBy("codes").count().where("count > 1").agg(F.sum("count")).first()[0] or 0
    ratio = new_err / returning_err if new_err is not None and returning_err else 0.0
    return {
        "items": total,
        "new_items": int(n_new),
        "new_item_share": n_new / total if total else 0.0,
        "new_item_recon_mse": float(new_err or 0.0),
        "returning_item_recon_mse": float(returning_err or 0.0),
        "recon_error_ratio": float(ratio),
        "frozen_collision_rate": colliding / total if total else 0.0,
    }

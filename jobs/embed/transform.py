"""Pure DataFrame -> DataFrame steps of the embed stage; the Python work runs in ``mapInPandas``."""

from __future__ import annotations

import pyarrow as pa

from jobs.embed.config import EmbedConfig
from jobs.embed.encoder import EncoderSpec
from schemas.catalog import CATALOG
from schemas.catalog import C as CAT
from schemas.convert import to_spark
from schemas.embeddings import EMBEDDING_CACHE
from schemas.embeddings import C as E
from schemas.quarantine import C as Q

STAGE = "embed"
SPACE = "text"

# Intermediate columns of the rendered catalog (never written: the stage's outputs are EMBEDDINGS,
# QUARANTINE and the cache).
TEXT = "text"
REASON = "reason"
FALLBACK = "text_fallback"
RECORD = "record"

RENDERED = pa.schema(
    [
        pa.field(CAT.item_id, pa.string(), nullable=False),
        pa.field(TEXT, pa.string()),
        pa.field(E.text_hash, pa.string()),
        pa.field(REASON, pa.string()),  # a Reason value when the item cannot be embedded
        pa.field(FALLBACK, pa.bool_()),  # the first template part was empty: text from the other fields
        pa.field(RECORD, pa.string()),  # the catalog row as JSON, only for refused items
    ]
)


def render_items(catalog, *, cfg: EmbedConfig):
    """Catalog -> RENDERED: each item's text per the template and its hash, or why it has none."""
    import pandas as pd

    from jobs.embed.text import Reason, primary_field_missing, record_json, render_text, text_hash

    columns = list(CATALOG.names)

    def render_partition(frames):
        for pdf in frames:
            rows = []
            for item in pdf.to_dict("records"):
                text = render_text(item, cfg)
                if text:
                    rows.append(
                        (
                            item[CAT.item_id],
                            text,
                            text_hash(text),
                            None,
                            primary_field_missing(item, cfg),
                            None,
                        )
                    )
                else:
                    rows.append(
                        (
                            item[CAT.item_id],
                            None,
                            None,
                            Reason.NO_TEXT.value,
                            None,
                            record_json(item, columns),
                        )
                    )
            yield pd.DataFrame.from_records(rows, columns=RENDERED.names)

    return catalog.select(*columns).mapInPandas(render_partition, schema=to_spark(RENDERED))


def usable_items(rendered):
    from pyspark.sql import functions as F

    return rendered.filter(F.col(REASON).isNull())


def quarantine_rows(rendered):
    """Refused items as QUARANTINE rows."""
    from pyspark.sql import functions as F

    return rendered.filter(F.col(REASON).isNotNull()).select(
        F.lit(STAGE).alias(Q.stage),
        F.lit("catalog").alias(Q.source),
        F.col(REASON).alias(Q.reason),
        F.concat(F.lit("no text in any template field; item_id="), F.col(CAT.item_id)).alias(Q.detail),
        F.col(RECORD).alias(Q.record),
    )


def texts_to_embed(usable, cached, *, partitions: int):
    """Distinct (text_hash, text) not yet in the cache, spread over ``partitions`` by hash.

    Identical texts (duplicate listings) are embedded once; hash partitioning keeps each partition's
    content independent of read order, so batches, and therefore vectors, are reproducible.
    """
    texts = usable.select(E.text_hash, TEXT).dropDuplicates([E.text_hash])
    if cached is not None:
        texts = texts.join(cached.select(E.text_hash), on=E.text_hash, how="left_anti")
    return texts.repartition(partitions, E.text_hash)


def encode_texts(texts, *, spec: EncoderSpec):
    """(text_hash, text) -> EMBEDDING_CACHE rows, with the model loaded once per Python worker."""
    import numpy as np
    import pandas as pd

    def encode_partition(frames):
        from jobs.embed.encoder import get_encoder

        frames = [f for f in frames if len(f)]
        if not frames:
            return
        # The whole partition at once, in hash order: batch composition (and so the last bits of each
        # vector) must not depend on how Arrow happened to slice the input.
        pdf = pd.concat(frames, ignore_index=True).sort_values(E.text_hash, kind="stable", ignore_index=True)
        vectors = get_encoder(spec).encode(pdf[TEXT].tolist())
        yield pd.DataFrame(
            {E.text_hash: pdf[E.text_hash], E.embedding: list(vectors.astype(np.float32, copy=False))}
        )

    return texts.mapInPandas(encode_partition, schema=to_spark(EMBEDDING_CACHE))


def cache_usage(usable, cached):
    """(items whose vector was cached, items that need a new one), in one pass."""
    from pyspark.sql import functions as F

    hit = "_cache_hit"
    row = (
        usable.join(cached.select(E.text_hash).withColumn(hit, F.lit(1)), on=E.text_hash, how="left")
        .agg(F.count(F.lit(1)).alias("n"), F.coalesce(F.sum(hit), F.lit(0)).alias("hits"))
        .first()
    )
    return int(row["hits"]), int(row["n"]) - int(row["hits"])


def attach_embeddings(usable, cached, *, model_fingerprint: str, files: int = 0):
    """Usable items joined with their vectors -> EMBEDDINGS rows, sorted by item_id.

    Written as one file (``files=1``), a sort inside the single partition orders it without the
    sampling job a global ``orderBy`` costs.
    """
    from pyspark.sql import functions as F

    joined = usable.join(cached, on=E.text_hash, how="left").select(
        F.col(CAT.item_id).alias(E.item_id),
        F.col(E.embedding),
        F.lit(SPACE).alias(E.space),
        F.col(E.text_hash),
        F.lit(model_fingerprint).alias(E.model_fingerprint),
    )
    if files == 1:
        return joined.coalesce(1).sortWithinPartitions(E.item_id)
    return joined.orderBy(E.item_id)

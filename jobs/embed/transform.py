"""Pure DataFrame -> DataFrame steps of the embed stage; the Python work runs in ``mapInPandas``."""

from __future__ import annotations

import pyarrow as pa

from jobs.embed.cache import SOURCE, first_per_hash
from jobs.embed.config import EmbedConfig
from jobs.embed.encoder import EncoderSpec
from schemas.catalog import CATALOG
from schemas.catalog import C as CAT
from schemas.convert import to_spark
from schemas.embeddings import EMBEDDING_CACHE, EMBEDDINGS
from schemas.embeddings import C as E
from schemas.quarantine import C as Q

STAGE = "embed"
SPACE = "text"

# Intermediate columns of the rendered catalog (never written: the stage's outputs are EMBEDDINGS,
# QUARANTINE and the cache).
TEXT = "text"
TEXTS = "texts"  # [main text, view texts...] (jobs.embed.text.render_views), null where empty
HASHES = "text_hashes"  # the cache key of each of TEXTS
VIEW = "view"  # index into TEXTS
VECTORS = "vectors"
REASON = "reason"
FALLBACK = "text_fallback"
RECORD = "record"
ITEM_KEY = "item_key"  # the item's text_hash while per-text hashes are in play
FRESH = "fresh"  # the item needed a vector this run embedded: a cache miss
PREVIOUS = "previous_embedding"  # the item's vector in the previous version, when its key is unchanged
REUSED = "reused"  # the item's vector was taken as is from the previous version

RENDERED = pa.schema(
    [
        pa.field(CAT.item_id, pa.string(), nullable=False),
        pa.field(TEXTS, pa.list_(pa.string())),
        pa.field(HASHES, pa.list_(pa.string())),
        pa.field(E.text_hash, pa.string()),  # jobs.embed.text.item_key
        pa.field(REASON, pa.string()),  # a Reason value when the item cannot be embedded
        pa.field(FALLBACK, pa.bool_()),  # the first template part was empty: text from the other fields
        pa.field(RECORD, pa.string()),  # the catalog row as JSON, only for refused items
    ]
)

# Output of the blend step: an item's key, its blended vector, and whether this run embedded a text of it.
BLENDED = pa.schema(
    [RENDERED.field(CAT.item_id), RENDERED.field(E.text_hash), EMBEDDINGS.field(E.embedding), pa.field(FRESH, pa.bool_())]
)


def render_items(catalog, *, cfg: EmbedConfig):
    """Catalog -> RENDERED: each item's texts per the template and views with their hashes, or why it has none."""
    import pandas as pd

    from jobs.embed.text import Reason, item_key, primary_field_missing, record_json, render_views, text_hash

    columns = list(CATALOG.names)

    def render_partition(frames):
        for pdf in frames:
            rows = []
            for item in pdf.to_dict("records"):
                texts = render_views(item, cfg)
                if texts[0]:
                    rows.append(
                        (
                            item[CAT.item_id],
                            [t or None for t in texts],
                            [text_hash(t) if t else None for t in texts],
                            item_key(texts, cfg),
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


def item_texts(usable, *keep: str):
    """One row per (item, non-empty text): item_id, the item's columns ``keep``, VIEW, text_hash (of
    that text), TEXT."""
    from pyspark.sql import functions as F

    pair = "_pair"
    return (
        usable.select(
            CAT.item_id,
            *keep,
            F.posexplode(F.arrays_zip(F.col(TEXTS).alias(TEXT), F.col(HASHES).alias(E.text_hash))).alias(
                VIEW, pair
            ),
        )
        .select(
            CAT.item_id,
            *keep,
            VIEW,
            F.col(f"{pair}.{E.text_hash}").alias(E.text_hash),
            F.col(f"{pair}.{TEXT}").alias(TEXT),
        )
        .filter(F.col(TEXT).isNotNull())
    )


def texts_to_embed(usable, cached, *, partitions: int):
    """Distinct (text_hash, text) not yet in the cache, spread over ``partitions`` by hash.

    Identical texts (duplicate listings, the category path many items share) are embedded once; hash
    partitioning keeps each partition's content independent of read order, so batches, and therefore
    vectors, are reproducible.
    """
    texts = item_texts(usable).select(E.text_hash, TEXT).join(cached.select(E.text_hash), on=E.text_hash, how="left_anti")
    # Deduplicated after the hash repartition, which already groups each hash: one shuffle, not two.
    return texts.repartition(partitions, E.text_hash).dropDuplicates([E.text_hash])


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


def attach_embeddings(
    usable, cached, *, model_fingerprint: str, weights: list[float], fresh_files, files: int = 0, previous=None
):
    """Usable items with their texts' vectors blended (jobs.embed.text.blend_views) -> EMBEDDINGS rows
    plus FRESH: whether a vector of the item came from a cache file of ``fresh_files`` (added by this
    run), which is how the run counts its cache hits and misses while writing, and REUSED: whether
    the vector came as is from ``previous`` (the previous version's EMBEDDINGS rows of the same model
    and views; None when there is none).

    ``cached`` is :meth:`EmbeddingCache.read`'s rows. Sorted by item_id; written as one file
    (``files=1``), a sort inside the single partition orders it without the sampling job a global
    ``orderBy`` costs.
    """
    from pyspark.sql import functions as F

    reused = None
    if previous is not None:
        # An item whose key (all its texts, the template, the views) is unchanged since the previous
        # version gets that version's vector as is: the same cached vectors, blended the same way, so
        # only new and changed items are gathered and blended.
        keyed = usable.join(
            previous.select(CAT.item_id, E.text_hash, F.col(E.embedding).alias(PREVIOUS)),
            on=[CAT.item_id, E.text_hash],
            how="left",
        )
        reused = keyed.filter(F.col(PREVIOUS).isNotNull()).select(
            CAT.item_id, E.text_hash, F.col(PREVIOUS).alias(E.embedding), F.lit(False).alias(FRESH), F.lit(True).alias(REUSED)
        )
        usable = keyed.filter(F.col(PREVIOUS).isNull()).drop(PREVIOUS)
    if len(weights) == 1:  # the main text alone: its vector as cached
        vectors = (
            usable.select(CAT.item_id, E.text_hash, F.col(HASHES)[0].alias(TEXT))
            .join(first_per_hash(cached).withColumnRenamed(E.text_hash, TEXT), on=TEXT, how="left")
            .withColumn(FRESH, F.col(SOURCE).isin(sorted(fresh_files)))
        )
    else:
        vectors = _blended(usable, cached, weights, fresh_files)
    vectors = vectors.withColumn(REUSED, F.lit(False))
    if reused is not None:
        vectors = vectors.select(*reused.columns).unionByName(reused)
    joined = vectors.select(
        F.col(CAT.item_id).alias(E.item_id),
        F.col(E.embedding),
        F.lit(SPACE).alias(E.space),
        F.col(E.text_hash),
        F.lit(model_fingerprint).alias(E.model_fingerprint),
        F.coalesce(F.col(FRESH), F.lit(False)).alias(FRESH),
        F.col(REUSED),
    )
    if files == 1:
        return joined.coalesce(1).sortWithinPartitions(E.item_id)
    return joined.orderBy(E.item_id)


def _blended(usable, cached, weights: list[float], fresh_files):
    """(item_id, text_hash, embedding, FRESH): each item's text vectors, gathered per item and blended."""
    import pandas as pd
    from pyspark.sql import functions as F

    from jobs.embed.text import blend_views

    fresh_files = frozenset(fresh_files)
    gathered = (
        item_texts(usable.withColumnRenamed(E.text_hash, ITEM_KEY), ITEM_KEY)
        .join(cached, on=E.text_hash, how="left")
        .groupBy(CAT.item_id, ITEM_KEY)
        .agg(F.collect_list(F.struct(VIEW, E.embedding, SOURCE)).alias(VECTORS))
    )

    def blend_partition(frames):
        for pdf in frames:
            vectors, fresh = [], []
            for parts in pdf[VECTORS]:
                # A hash cached twice (racing runs) has two rows: the one from the first-sorting file wins.
                chosen: dict[int, tuple] = {}
                for p in sorted(parts, key=lambda p: (p[SOURCE] is None, p[SOURCE] or "")):
                    chosen.setdefault(int(p[VIEW]), (p[SOURCE], p[E.embedding]))
                if any(vector is None for _, vector in chosen.values()):  # a text without a cached vector
                    vectors.append(None)
                else:
                    vectors.append(blend_views([chosen[i][1] if i in chosen else None for i in range(len(weights))], weights))
                fresh.append(any(source in fresh_files for source, _ in chosen.values()))
            yield pd.DataFrame(
                {CAT.item_id: pdf[CAT.item_id], E.text_hash: pdf[ITEM_KEY], E.embedding: vectors, FRESH: fresh}
            )

    return gathered.mapInPandas(blend_partition, schema=to_spark(BLENDED))

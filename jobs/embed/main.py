"""Embed stage: catalog -> one normalised text embedding per item (layout.text_embeddings).

Reads ``layout.catalog``, and the previous version's text embeddings when there is one (unchanged
items keep their vectors); writes ``layout.text_embeddings`` (EMBEDDINGS, space="text"), refused
items to ``layout.quarantine / "embed"`` (QUARANTINE) and new vectors to the incremental cache in
``ctx.cache_dir / "embeddings"`` (compacted when small files pile up). Rows in = rows out + rows
quarantined, checked before returning.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time

from jobs.common.io import read_table, write_empty_table, write_table
from jobs.common.stage import StageContext, StageResult, stage_main
from jobs.embed.cache import EmbeddingCache
from jobs.embed.encoder import EncoderSpec
from jobs.embed.text import vector_fingerprint, view_weights
from jobs.embed.transform import (
    FALLBACK,
    FRESH,
    REASON,
    REUSED,
    STAGE,
    attach_embeddings,
    encode_texts,
    quarantine_rows,
    render_items,
    texts_to_embed,
    usable_items,
)
from schemas.catalog import CATALOG
from schemas.embeddings import EMBEDDINGS
from schemas.embeddings import C as E
from schemas.quarantine import QUARANTINE

log = logging.getLogger("sidpipe.embed")


def quarantine_path(ctx: StageContext):
    return ctx.layout.quarantine / STAGE


def previous_vectors(ctx: StageContext, model_fingerprint: str):
    """The previous version's text vectors made by the same model and views, or None."""
    from pyspark.sql import functions as F

    if ctx.previous_layout is None:
        return None
    path = ctx.previous_layout.text_embeddings
    if not path.exists():
        return None
    return read_table(ctx.spark, path, EMBEDDINGS).filter(F.col(E.model_fingerprint) == model_fingerprint)


def run(ctx: StageContext) -> StageResult:
    from pyspark.sql import Observation
    from pyspark.sql import functions as F

    cfg = ctx.config.embed
    started = time.perf_counter()
    steps = StepTimer()
    # Resolve the model first: a wrong path or an unusable device fails here, before any Spark job.
    spec = EncoderSpec.from_config(cfg, threads=cfg.torch_threads_per_worker)
    spark = ctx.spark

    catalog = read_table(spark, ctx.layout.catalog, CATALOG)
    rendered = render_items(catalog, cfg=cfg).cache()
    try:
        with steps("render"):
            summary = rendered.agg(
                F.count(F.lit(1)).alias("items"),
                F.count(REASON).alias("refused"),
                F.count(F.when(F.col(FALLBACK), 1)).alias("fallbacks"),
            ).first()
        with steps("quarantine"):
            if summary["refused"]:
                write_table(quarantine_rows(rendered), quarantine_path(ctx), QUARANTINE, num_files=1)
            else:
                write_empty_table(quarantine_path(ctx), QUARANTINE)

        usable = usable_items(rendered)
        cache = EmbeddingCache(ctx.cache_dir / "embeddings", spec.fingerprint)
        partitions = cfg.partitions or spark.sparkContext.defaultParallelism
        with steps("encode"):
            # Texts not cached yet, each once; cache hits and misses are counted while writing below.
            added = cache.add(encode_texts(texts_to_embed(usable, cache.read(spark), partitions=partitions), spec=spec))
        texts_embedded = _row_count(added)
        cached = cache.read(spark)

        with steps("write"):
            output = attach_embeddings(
                usable,
                cached,
                model_fingerprint=vector_fingerprint(spec.fingerprint, cfg),
                weights=view_weights(cfg),
                fresh_files={f.name for f in added},
                files=cfg.output_files,
                previous=previous_vectors(ctx, vector_fingerprint(spec.fingerprint, cfg)),
            )
            # Counted while writing (no second pass): rows out, rows that found no vector, misses.
            check = Observation("embed_output")
            output = output.observe(
                check,
                F.count(F.lit(1)).alias("rows"),
                F.count(E.embedding).alias("with_vector"),
                F.count(F.when(F.col(FRESH), 1)).alias("misses"),
                F.count(F.when(F.col(REUSED), 1)).alias("reused"),
                F.min(F.size(E.embedding)).alias("min_dim"),
                F.max(F.size(E.embedding)).alias("max_dim"),
            )
            write_table(output, ctx.layout.text_embeddings, EMBEDDINGS, num_files=cfg.output_files or None)
            written = check.get
        with steps("compact"):
            # Last: every read of the cache above is done, and FRESH named this run's own files.
            compaction = cache.compact(spark, min_files=cfg.cache_compact_files, file_bytes=cfg.cache_compact_file_mb << 20)
    finally:
        rendered.unpersist()

    items_in, refused = int(summary["items"]), int(summary["refused"])
    items_out, misses = int(written["rows"]), int(written["misses"])
    hits = items_out - misses
    if items_in != items_out + refused:
        raise RuntimeError(f"embed lost rows: {items_in} in, {items_out} out, {refused} quarantined")
    if written["with_vector"] != items_out or written["min_dim"] != written["max_dim"]:
        raise RuntimeError(
            f"embed wrote {items_out - written['with_vector']} items without a vector, or vectors of "
            f"different sizes ({written['min_dim']}..{written['max_dim']}): the cache under {cache.dir} is inconsistent"
        )

    total_seconds = time.perf_counter() - started
    metrics = {
        "model_id": spec.model_id,
        "model_weights_fingerprint": spec.weights_fingerprint,
        "encoder_fingerprint": spec.fingerprint,
        "vector_fingerprint": vector_fingerprint(spec.fingerprint, cfg),
        "device": spec.device,
        "precision": spec.precision,
        "max_seq_length": spec.max_seq_length,
        "batch_size": spec.batch_size,
        "embedding_dim": int(written["max_dim"] or 0),
        "cache_hits": hits,
        "cache_misses": misses,
        "texts_embedded": texts_embedded,
        # Of the hits: vectors taken as is from the previous version (key unchanged), not re-blended.
        "reused_from_previous_version": int(written["reused"]),
        "text_fallbacks": int(summary["fallbacks"]),
        "cache_files": len(cache.files()),
        "cache_compaction": compaction,
        "encode_seconds": steps.seconds.get("encode", 0.0),
        "encode_items_per_second": round(texts_embedded / steps.seconds["encode"], 1)
        if texts_embedded
        else None,
        "stage_seconds": round(total_seconds, 3),
        "step_seconds": steps.seconds,
        "model_path": spec.model_path,
    }
    log.info("embed: %d items, %d quarantined, cache %d hits / %d misses", items_out, refused, hits, misses)
    return StageResult(
        counts={"items_in": items_in, "items_out": items_out, "quarantined": refused},
        metrics=metrics,
        outputs={
            "text_embeddings": str(ctx.layout.text_embeddings),
            "quarantine": str(quarantine_path(ctx)),
            "cache": str(cache.dir),
        },
    )


class StepTimer:
    """Wall time per named step, for the manifest (where a slow run spent its time)."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str):
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = round(self.seconds.get(name, 0.0) + time.perf_counter() - started, 3)


def _row_count(files) -> int:
    import pyarrow.parquet as pq

    return sum(pq.read_metadata(f).num_rows for f in files)


if __name__ == "__main__":
    sys.exit(stage_main("embed", run))

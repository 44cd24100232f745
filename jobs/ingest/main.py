"""Ingest stage: raw catalog + interaction log (Parquet, JSONL, CSV or LC-Rec) -> curated tables + quarantine."""

from __future__ import annotations

import logging
import sys

from pyspark import StorageLevel
from pyspark.sql import functions as F

from jobs.common.io import write_table
from jobs.common.stage import StageContext, StageResult, stage_main
from jobs.ingest import transform as T
from jobs.ingest.readers import check_input_exists, detect_format, read_raw
from schemas.catalog import CATALOG
from schemas.interactions import INTERACTIONS
from schemas.quarantine import QUARANTINE
from schemas.quarantine import C as Q

log = logging.getLogger("sidpipe.ingest")


def _reason_counts(quarantine, source: str) -> dict[str, int]:
    rows = quarantine.where(F.col(Q.source) == source).groupBy(Q.reason).count().collect()
    return {r[Q.reason]: r["count"] for r in sorted(rows, key=lambda r: r[Q.reason])}


def run(ctx: StageContext) -> StageResult:
    cfg = ctx.config.ingest
    spark = ctx.spark
    # Fail on unusable inputs before Spark starts work.
    for path in (ctx.inputs.catalog, ctx.inputs.interactions):
        check_input_exists(path)
        detect_format(path, ctx.inputs.format)

    raw_catalog = read_raw(spark, ctx.inputs.catalog, ctx.inputs.format, kind="catalog")
    raw_inter = read_raw(spark, ctx.inputs.interactions, ctx.inputs.format, kind="interactions")

    checked_catalog = T.validate_catalog(raw_catalog, cfg).persist(StorageLevel.MEMORY_AND_DISK)
    checked_inter = T.validate_interactions(raw_inter, cfg).persist(StorageLevel.MEMORY_AND_DISK)

    valid_catalog, bad_catalog = T.split_rejected(checked_catalog, source="catalog")
    catalog, duplicates = T.dedupe_items(valid_catalog)
    catalog = catalog.persist(StorageLevel.MEMORY_AND_DISK)

    valid_inter, bad_inter = T.split_rejected(checked_inter, source="interactions")
    known_inter, unknown_inter = T.drop_unknown_items(valid_inter, catalog)
    interactions = T.add_seq_index(known_inter)

    quarantine = bad_catalog.unionByName(duplicates).unionByName(bad_inter).unionByName(unknown_inter)
    quarantine = quarantine.persist(StorageLevel.MEMORY_AND_DISK)

    files = cfg.output_files or None
    write_table(T.curated_catalog(catalog), ctx.layout.catalog, CATALOG, num_files=files)
    write_table(T.curated_interactions(interactions), ctx.layout.interactions, INTERACTIONS, num_files=files)
    write_table(T.sorted_quarantine(quarantine), ctx.layout.quarantine / "ingest", QUARANTINE, num_files=files)

    counts = {
        "catalog_rows_in": checked_catalog.count(),
        "interaction_rows_in": checked_inter.count(),
    }
    out = spark.read.parquet(str(ctx.layout.catalog)).count(), spark.read.parquet(str(ctx.layout.interactions)).count()
    counts["items_out"], counts["interactions_out"] = out
    q_catalog = _reason_counts(quarantine, "catalog")
    q_inter = _reason_counts(quarantine, "interactions")
    counts["catalog_quarantined"] = sum(q_catalog.values())
    counts["interactions_quarantined"] = sum(q_inter.values())
    counts["users_out"] = interactions.select("user_id").distinct().count()
    has_timestamps = interactions.where(F.col("timestamp").isNotNull()).limit(1).count() > 0

    # The accounting promise of the project: every input row is either output or quarantined.
    for source, rows_in, rows_out, rows_q in (
        ("catalog", counts["catalog_rows_in"], counts["items_out"], counts["catalog_quarantined"]),
        ("interactions", counts["interaction_rows_in"], counts["interactions_out"], counts["interactions_quarantined"]),
    ):
        if rows_in != rows_out + rows_q:
            raise RuntimeError(f"ingest lost rows of {source}: {rows_in} in != {rows_out} out + {rows_q} quarantined")

    for df in (checked_catalog, checked_inter, catalog, quarantine):
        df.unpersist()
    log.info("ingest: %s", counts)
    return StageResult(
        counts=counts,
        metrics={
            "quarantine_reasons": {"catalog": q_catalog, "interactions": q_inter},
            "log_has_timestamps": has_timestamps,
            "ordering": "timestamp" if has_timestamps else "log order",
        },
        outputs={
            "catalog": str(ctx.layout.catalog),
            "interactions": str(ctx.layout.interactions),
            "quarantine": str(ctx.layout.quarantine / "ingest"),
        },
    )


if __name__ == "__main__":
    sys.exit(stage_main("ingest", run))

"""Ingest transforms: raw records -> curated catalog / interactions + quarantine. DataFrame in, DataFrame out."""

from __future__ import annotations

from typing import Callable, Iterator

import pyarrow as pa
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.window import Window

from jobs.ingest.config import IngestConfig
from jobs.ingest.readers import FILE, POS, RECORD
from jobs.ingest.records import Reason, Rejected, validate_catalog_record, validate_interaction_record
from schemas.catalog import CATALOG
from schemas.catalog import C as CAT
from schemas.convert import to_spark
from schemas.interactions import INTERACTIONS, RAW_INTERACTIONS
from schemas.interactions import C as INT
from schemas.quarantine import QUARANTINE
from schemas.quarantine import C as Q

STAGE = "ingest"
REASON, DETAIL = "_reason", "_detail"
_TRACE_FIELDS = [
    pa.field(FILE, pa.string()),
    pa.field(POS, pa.int64()),
    pa.field(RECORD, pa.string()),
    pa.field(REASON, pa.string()),
    pa.field(DETAIL, pa.string()),
]
CATALOG_CHECKED = pa.schema([f.with_nullable(True) for f in CATALOG] + _TRACE_FIELDS)
INTERACTIONS_CHECKED = pa.schema([f.with_nullable(True) for f in RAW_INTERACTIONS] + _TRACE_FIELDS)


def _validate_batches(validate: Callable[[str | None], dict], out_schema: pa.Schema) -> Callable:
    data_fields = [f.name for f in out_schema if f.name not in {FILE, POS, RECORD, REASON, DETAIL}]

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            rows = []
            for file, pos, raw_bytes in zip(*(batch.column(n).to_pylist() for n in (FILE, POS, RECORD))):
                # Undecodable bytes (non-UTF-8 input) become U+FFFD here and are dropped by normalisation.
                raw = None if raw_bytes is None else raw_bytes.decode("utf-8", errors="replace")
                try:
                    row = validate(raw)
                    row.update({REASON: None, DETAIL: None})
                except Rejected as rej:
                    row = dict.fromkeys(data_fields) | {REASON: str(rej.reason), DETAIL: rej.detail[:500]}
                row.update({FILE: file, POS: pos, RECORD: raw})
                rows.append(row)
            yield pa.RecordBatch.from_pylist(rows, schema=out_schema)

    return run


def validate_catalog(raw: DataFrame, cfg: IngestConfig) -> DataFrame:
    """Every raw row, typed and normalised, with a quarantine reason where it is unusable."""

    def validate(record):
        return validate_catalog_record(
            record, usable_text_fields=cfg.usable_text_fields, strip_html=cfg.strip_html, category_separator=cfg.category_separator
        )

    return _as_bytes(raw).mapInArrow(_validate_batches(validate, CATALOG_CHECKED), to_spark(CATALOG_CHECKED))


def validate_interactions(raw: DataFrame, cfg: IngestConfig) -> DataFrame:
    def validate(record):
        return validate_interaction_record(record, default_event_type=cfg.default_event_type, strip_html=cfg.strip_html)

    return _as_bytes(raw).mapInArrow(_validate_batches(validate, INTERACTIONS_CHECKED), to_spark(INTERACTIONS_CHECKED))


def _as_bytes(raw: DataFrame) -> DataFrame:
    return raw.withColumn(RECORD, F.col(RECORD).cast("binary"))


def to_quarantine(df: DataFrame, *, source: str, reason=None, detail=None) -> DataFrame:
    """Project rejected rows onto the QUARANTINE schema."""
    return df.select(
        F.lit(STAGE).alias(Q.stage),
        F.lit(source).alias(Q.source),
        (F.lit(str(reason)) if reason is not None else F.col(REASON)).alias(Q.reason),
        (detail if detail is not None else F.col(DETAIL)).alias(Q.detail),
        F.col(RECORD).alias(Q.record),
    )


def split_rejected(checked: DataFrame, *, source: str) -> tuple[DataFrame, DataFrame]:
    return checked.where(F.col(REASON).isNull()), to_quarantine(checked.where(F.col(REASON).isNotNull()), source=source)


def dedupe_items(valid: DataFrame) -> tuple[DataFrame, DataFrame]:
    """One row per item_id: the latest ``updated_at`` wins; ties broken by content, never by read order."""
    order = Window.partitionBy(CAT.item_id).orderBy(
        F.col(CAT.updated_at).desc_nulls_last(), F.col(CAT.text_hash).asc(), F.col(RECORD).asc(), F.col(FILE), F.col(POS)
    )
    ranked = valid.withColumn("_rank", F.row_number().over(order))
    superseded = ranked.where(F.col("_rank") > 1)
    detail = F.concat(F.lit("item_id "), F.col(CAT.item_id), F.lit(" superseded by a later or preferred row"))
    return (
        ranked.where(F.col("_rank") == 1).drop("_rank"),
        to_quarantine(superseded, source="catalog", reason=Reason.DUPLICATE_ITEM_ID, detail=detail),
    )


def drop_unknown_items(interactions: DataFrame, catalog: DataFrame) -> tuple[DataFrame, DataFrame]:
    known = catalog.select(F.col(CAT.item_id).alias("_known_id")).distinct()
    joined = interactions.join(known, interactions[INT.item_id] == known["_known_id"], "left")
    unknown = joined.where(F.col("_known_id").isNull())
    detail = F.concat(F.lit("item_id "), F.col(INT.item_id), F.lit(" not in the curated catalog"))
    return (
        joined.where(F.col("_known_id").isNotNull()).drop("_known_id"),
        to_quarantine(unknown, source="interactions", reason=Reason.UNKNOWN_ITEM, detail=detail),
    )


def add_seq_index(interactions: DataFrame) -> DataFrame:
    """0-based position in the user's history: by timestamp when present, else by order in the log."""
    order = Window.partitionBy(INT.user_id).orderBy(F.col(INT.timestamp).asc_nulls_last(), F.col(FILE), F.col(POS))
    return interactions.withColumn(INT.seq_index, F.row_number().over(order) - 1)


def curated_catalog(catalog: DataFrame) -> DataFrame:
    return catalog.select(*CATALOG.names).orderBy(CAT.item_id)


def curated_interactions(interactions: DataFrame) -> DataFrame:
    return interactions.select(*INTERACTIONS.names).orderBy(INT.user_id, INT.seq_index)


def sorted_quarantine(quarantine: DataFrame) -> DataFrame:
    return quarantine.select(*QUARANTINE.names).orderBy(Q.source, Q.reason, Q.record, Q.detail)

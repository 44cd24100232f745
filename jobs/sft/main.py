"""Stage "sft": catalog + SIDs + interactions -> the multi-task SFT corpus (Parquet, HF DatasetDict, card).

Reads ``layout.catalog``, ``layout.interactions``, ``layout.sids`` and ``layout.sid_artifacts /
glossary.json``; writes ``layout.sft`` (``split=<s>/task=<t>/part-00000.parquet``, every file carrying
all SFT_RECORDS columns so the folder also loads with ``load_dataset("parquet", data_files=...)``),
``layout.sft / README.md`` (dataset card), ``layout.hf_dataset`` (``save_to_disk``) and
``layout.quarantine / "sft"``. The built records pass through ``run_dir / _sft_staging`` (see
:mod:`jobs.sft.write`), removed when the stage ends; ``metrics["seconds"]`` has the time of every step.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
from pathlib import Path

from pyspark import StorageLevel
from pyspark.sql import functions as F

from jobs.common.io import atomic_write_text, fingerprint_path, read_table, write_table
from jobs.common.stage import GateFailed, StageContext, StageResult, stage_main
from jobs.sft import transform as T
from jobs.sft.write import read_corpus, write_corpus
from schemas.catalog import CATALOG
from schemas.interactions import INTERACTIONS
from schemas.quarantine import QUARANTINE
from schemas.quarantine import C as Q
from schemas.sft import SPLITS
from schemas.sids import SIDS
from schemas.sids import C as S
from sft_builder.card import render_card
from sft_builder.hf import write_dataset_dict
from sft_builder.validate import find_leaks

log = logging.getLogger("sidpipe.sft")
STAGE = "sft"
GLOSSARY = "glossary.json"
CARD = "README.md"
STAGING = "_sft_staging"  # the built records before dedup and mixture; removed when the stage ends


def read_glossary(sid_artifacts: Path) -> dict | None:
    path = Path(sid_artifacts) / GLOSSARY
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"SID glossary {path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("prefixes"), dict):
        raise ValueError(f"SID glossary {path} must be an object with a 'prefixes' mapping (prefix token -> entry)")
    return data


def run(ctx: StageContext) -> StageResult:
    cfg, layout, spark = ctx.config.sft, ctx.layout, ctx.spark
    catalog = read_table(spark, layout.catalog, CATALOG)
    interactions = read_table(spark, layout.interactions, INTERACTIONS)
    sids = read_table(spark, layout.sids, SIDS)
    glossary = read_glossary(layout.sid_artifacts)

    timings: dict = {}
    staging = layout.run_dir / STAGING
    if staging.exists():
        shutil.rmtree(staging)
    with T.timed(timings, "prepare"):
        parts = T.build_corpus(spark, catalog, interactions, sids, glossary, cfg, ctx.seed)
    partitions = cfg.build_partitions or int(spark.conf.get("spark.sql.shuffle.partitions"))
    # The records are built exactly once: written to staging, their small keys kept in memory.
    keys = parts.stage(staging).persist(StorageLevel.MEMORY_AND_DISK)
    dup_ids = kept = None
    try:
        with T.timed(timings, "build_records"):
            keys.count()
        with T.timed(timings, "dedup"):
            dup_ids = T.duplicate_ids(keys).persist(StorageLevel.MEMORY_AND_DISK) if cfg.dedup else None
            duplicates = dup_ids.count() if dup_ids is not None else 0
        kept = parts.final_records(keys, dup_ids, cfg).persist(StorageLevel.MEMORY_AND_DISK)
        with T.timed(timings, "write_parquet"):
            counts, stats = write_corpus(kept, staging, layout.sft, partitions=partitions)
        with T.timed(timings, "quarantine"):
            quarantine_dir = layout.quarantine / STAGE
            write_table(parts.quarantine.repartition(1).sortWithinPartitions(Q.source, Q.reason, Q.detail, Q.record), quarantine_dir,
                        QUARANTINE)
            reasons = {f"quarantined_{r[Q.source]}_{r[Q.reason]}": r["count"]
                       for r in spark.read.parquet(str(quarantine_dir)).groupBy(Q.source, Q.reason).count().collect()}
            n_used = parts.events.where(F.col(T.REASON).isNull()).count()
    finally:
        for df in (keys, dup_ids, kept):
            if df is not None:
                df.unpersist()
        parts.release()
        shutil.rmtree(staging, ignore_errors=True)
    for note in parts.notes:
        log.info("sft: %s", note)
    n_interactions = parts.metrics.pop("interactions_in")
    leaks = 0
    if cfg.check_leaks:
        with T.timed(timings, "leak_check"):
            leaks = find_leaks(read_corpus(spark, layout.sft), valid_start_us=parts.metrics.get("valid_start_us")).count()
        if leaks:
            raise GateFailed(f"sft leakage check: {leaks} training records mention an item their user holds out "
                             "(sft_builder.validate.find_leaks lists them)")
    codebook_ids = sorted(r[0] for r in sids.select(S.codebook_id).distinct().collect() if r[0])

    with T.timed(timings, "hf_dataset"):
        hf_rows = write_dataset_dict(layout.sft, layout.hf_dataset) if cfg.write_hf_dataset else {}
    fingerprints = {"catalog": fingerprint_path(layout.catalog), "interactions": fingerprint_path(layout.interactions),
                    "sids": fingerprint_path(layout.sids)}
    if glossary is not None:
        fingerprints["glossary"] = fingerprint_path(layout.sid_artifacts / GLOSSARY)
    card = render_card(dataset=ctx.config.dataset, counts=counts, token_stats=stats, codebook_ids=codebook_ids,
                       fingerprints=fingerprints, split_mode=parts.metrics["split_mode"], notes=parts.notes, config=cfg.to_dict())
    atomic_write_text(layout.sft / CARD, card)
    if cfg.write_hf_dataset:
        atomic_write_text(layout.hf_dataset / CARD, card)

    total = {split: sum(c.get(split, 0) for c in counts.values()) for split in SPLITS}
    result_counts = {"interactions_in": n_interactions, "interactions_used": n_used,
                     "interactions_quarantined": sum(v for k, v in reasons.items() if k.startswith("quarantined_interactions_")),
                     "duplicates_removed": duplicates, "leaks": leaks,
                     **reasons, **{f"records_{s}": n for s, n in total.items()},
                     **{f"records_{t}_{s}": n for t, c in counts.items() for s, n in c.items()}}
    metrics = {**parts.metrics, "seconds": {**parts.metrics.get("seconds", {}), **timings.get("seconds", {})}, "token_stats": stats, "codebook_ids": codebook_ids, "fingerprints": fingerprints, "hf_rows": hf_rows}
    outputs = {"sft": str(layout.sft), "card": str(layout.sft / CARD), "quarantine": str(quarantine_dir)}
    if cfg.write_hf_dataset:
        outputs["hf_dataset"] = str(layout.hf_dataset)
    return StageResult(counts=result_counts, metrics=metrics, outputs=outputs, notes=list(parts.notes))


if __name__ == "__main__":
    sys.exit(stage_main(STAGE, run))

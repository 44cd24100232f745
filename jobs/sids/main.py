"""Stage "sids": assign raw codes with the frozen codebook, resolve collisions, render LLM tokens,
export the special-token list, prefix trie, glossary, hybrid item-token map and retired SIDs.

Artifacts in ``layout.sid_artifacts``: ``special_tokens.json``, ``sid_trie.json`` (see
:mod:`tokenizer.trie`), ``glossary.json`` (see :mod:`tokenizer.glossary`), ``item_tokens.json``
(hybrid only: item token -> item_id), ``retired.json`` (SIDs never to be reused), ``sid_format.json``.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
from dataclasses import replace

from pyspark.sql import functions as F

from jobs.codebook.main import read_valid_embeddings
from jobs.codebook.transform import encode_codes
from jobs.common.io import atomic_write_text, read_table, write_table
from jobs.common.stage import GateFailed, StageContext, StageResult, stage_main
from jobs.sids.transform import (
    KEPT,
    fill_item_ordinals,
    glossary_aggregates,
    max_group_size,
    render_tokens,
    resolve,
)
from schemas.catalog import CATALOG
from schemas.embeddings import C as E
from schemas.sids import SIDS
from schemas.sids import C as S
from tokenizer.codebook import Codebook
from tokenizer.glossary import build_glossary
from tokenizer.metrics import usage_from_counts
from tokenizer.resolve import ResolutionOverflow, sid_length
from tokenizer.trie import build_trie

log = logging.getLogger("sidpipe.sids")
ARTIFACT_FORMAT = "1"


def _dump(obj) -> str:
    return json.dumps(obj, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def load_previous(ctx: StageContext, codebook: Codebook):
    """(previous SIDs table or None, previous retired list). SIDs only count under the same codebook."""
    previous = ctx.previous_layout
    if previous is None:
        return None, []
    retired_path = previous.sid_artifacts / "retired.json"
    retired = json.loads(retired_path.read_text())["retired"] if retired_path.is_file() else []
    sids_path = previous.sids
    if not sids_path.exists():
        return None, retired
    prev = read_table(ctx.spark, sids_path, SIDS)
    row = prev.select(S.codebook_id).first()
    if row is None or row[0] != codebook.codebook_id:
        return prev, retired  # other codebook: used for churn only, nothing is kept
    return prev, retired


def run(ctx: StageContext) -> StageResult:
    cfg = ctx.config.sids
    spark = ctx.spark
    codebook = Codebook.load(ctx.layout.codebook)
    df, space, dim = read_valid_embeddings(ctx)
    codebook.check_space(dim=dim, model_fingerprint=space["model_fingerprint"], space=space["space"])
    levels, k = codebook.levels, codebook.codebook_size
    fmt = cfg.token_format()

    coded = encode_codes(df, codebook, keep=(E.text_hash,)).cache()
    n_items = coded.count()

    prev, retired = load_previous(ctx, codebook)
    frozen = prev is not None and cfg.keep_unchanged and prev.select(S.codebook_id).first()[0] == codebook.codebook_id
    if frozen:
        p = prev.select(S.item_id, F.col(S.sid).alias("_prev_sid"), F.col(S.text_hash).alias("_prev_th"), F.col(S.codes).alias("_prev_codes"))
        j = coded.join(p, S.item_id, "left")
        unchanged = F.col("_prev_sid").isNotNull() & (
            (F.col(E.text_hash).isNotNull() & (F.col(E.text_hash) == F.col("_prev_th"))) | (F.col(S.codes) == F.col("_prev_codes"))
        )
        current = j.withColumn(KEPT, F.when(unchanged, F.col("_prev_sid"))).drop("_prev_sid", "_prev_th", "_prev_codes")
        kept_ids = current.where(F.col(KEPT).isNotNull()).select(S.item_id)
        newly_retired = prev.join(kept_ids, S.item_id, "left_anti").select(S.item_id, S.sid, S.sid_tokens).orderBy(S.item_id).collect()
        retired = retired + [{"item_id": r[S.item_id], "sid": list(r[S.sid]), "sid_tokens": r[S.sid_tokens], "retired_in": ctx.snapshot_id} for r in newly_retired]
        length = len(prev.select(S.sid).first()[0])
    else:
        current = coded.withColumn(KEPT, F.lit(None).cast("array<int>"))
        length = None
    taken = spark.createDataFrame([(list(map(int, r["sid"])),) for r in retired], "sid array<int>") if retired else spark.createDataFrame([], "sid array<int>")

    method = cfg.resolution
    overflow = max_group_size(current, taken, levels) > k
    needed = sid_length(method, levels, overflow=overflow)
    if length is None:
        length = needed
    elif needed > length:
        raise ResolutionOverflow(f"a prefix group now exceeds {k} items, so SIDs would need {needed} levels but the frozen SIDs have {length}: retrain the codebook")
    taken = taken.where(F.size(S.sid) == length)

    resolved = resolve(current.select(S.item_id, S.codes, KEPT), taken, codebook, method=method, length=length,
                       vectors=df.select(E.item_id, E.embedding))
    if method == "hybrid":
        used = [r["sid"][-1] for r in retired] + ([prev.agg(F.max(F.element_at(S.sid, -1))).first()[0]] if frozen else [])
        resolved = fill_item_ordinals(resolved, first_ordinal=max([u for u in used if u is not None], default=-1) + 1)
    table = coded.select(S.item_id, S.codes, E.text_hash).join(resolved, S.item_id, "inner")
    table = render_tokens(table, fmt).withColumn(S.codebook_id, F.lit(codebook.codebook_id))
    table = table.withColumn(S.resolution, F.when(F.col(S.resolution).isNotNull(), F.col(S.resolution)))
    write_table(table, ctx.layout.sids, SIDS, num_files=cfg.output_files, sort_by=(S.item_id,))
    sids = read_table(spark, ctx.layout.sids, SIDS).cache()

    # -- gates: every item has exactly one SID, fixed length, injective ---------------------------
    n_out = sids.count()
    if n_out != n_items:
        raise GateFailed(f"sids has {n_out} rows for {n_items} embedded items")
    lengths = [r[0] for r in sids.select(F.size(S.sid)).distinct().collect()]
    if lengths != [length]:
        raise GateFailed(f"SID lengths {lengths}, expected fixed length {length}")
    dup = sids.groupBy(S.sid).count().where("count > 1")
    if dup.limit(1).count():
        raise GateFailed(f"{dup.agg(F.sum('count')).first()[0]} items share a SID after resolution")

    metrics = sid_metrics(sids, coded, codebook, length)
    metrics["resolution_method"] = method
    metrics["sid_length"] = length
    metrics["codebook_id"] = codebook.codebook_id
    metrics["churn"] = churn(sids, prev, frozen) if prev is not None else None
    write_artifacts(ctx, sids, codebook, fmt, retired, length, method)
    coded.unpersist()
    sids.unpersist()
    return StageResult(
        counts={"items": n_items, "sids": n_out, "retired": len(retired)},
        metrics=metrics,
        outputs={"sids": str(ctx.layout.sids), "sid_artifacts": str(ctx.layout.sid_artifacts)},
        notes=[f"{method}: {metrics['raw_colliding_items']} raw colliding items "
               f"({metrics['identical_text_items']} with text identical to another item) -> 0 after resolution"],
    )


def sid_metrics(sids, coded, codebook: Codebook, length: int) -> dict:
    k = codebook.codebook_size
    raw = sids.groupBy(S.codes).count()
    agg = raw.agg(F.sum(F.when(F.col("count") > 1, F.col("count")).otherwise(0)).alias("c"), F.max("count").alias("m"), F.count("*").alias("d")).first()
    n = sids.count()
    levels = []
    for lv in range(codebook.levels):
        counts = {r[0]: r[1] for r in sids.groupBy(F.element_at(S.codes, lv + 1)).count().collect()}
        levels.append(usage_from_counts(counts, k))
    same_text = coded.where(F.col(E.text_hash).isNotNull()).groupBy(E.text_hash).count().where("count > 1").agg(F.sum("count")).first()[0] or 0
    # raw collisions that identical text explains: colliding items whose bucket also shares a text_hash
    buckets = sids.join(raw.where("count > 1").select(S.codes), S.codes, "inner")
    explained = buckets.groupBy(S.codes, S.text_hash).count().where("count > 1 AND text_hash IS NOT NULL").agg(F.sum("count")).first()[0] or 0
    res = {r[0] or "untouched": r[1] for r in sids.groupBy(S.resolution).count().collect()}
    colliding = int(agg["c"] or 0)
    return {
        "items": n,
        "raw_colliding_items": colliding,
        "raw_collision_rate": colliding / n if n else 0.0,
        "raw_max_bucket": int(agg["m"] or 0),
        "raw_distinct_codes": int(agg["d"] or 0),
        "identical_text_items": int(same_text),
        "identical_text_floor": same_text / n if n else 0.0,
        "raw_colliding_items_identical_text": int(explained),
        "raw_collision_rate_beyond_identical_text": (colliding - explained) / n if n else 0.0,
        "levels": levels,
        "level1_used": levels[0]["used"],
        "perplexity": [lv["perplexity"] for lv in levels],
        "resolution_counts": dict(sorted(res.items())),
        "collisions_after_resolution": 0,
    }


def churn(sids, prev, frozen: bool) -> dict:
    p = prev.select(S.item_id, F.col(S.sid).alias("_p"))
    j = sids.select(S.item_id, S.sid).join(p, S.item_id, "full_outer")
    row = j.agg(
        F.sum(F.when(F.col("_p").isNotNull() & F.col(S.sid).isNotNull() & (F.col("_p") == F.col(S.sid)), 1).otherwise(0)).alias("kept"),
        F.sum(F.when(F.col("_p").isNotNull() & F.col(S.sid).isNotNull() & (F.col("_p") != F.col(S.sid)), 1).otherwise(0)).alias("changed"),
        F.sum(F.when(F.col("_p").isNull(), 1).otherwise(0)).alias("new"),
        F.sum(F.when(F.col(S.sid).isNull(), 1).otherwise(0)).alias("removed"),
    ).first()
    prev_n = (row["kept"] or 0) + (row["changed"] or 0) + (row["removed"] or 0)
    return {
        "frozen_codebook": frozen,
        "kept": int(row["kept"] or 0),
        "changed": int(row["changed"] or 0),
        "new": int(row["new"] or 0),
        "removed": int(row["removed"] or 0),
        "churn_rate": ((row["changed"] or 0) + (row["removed"] or 0)) / prev_n if prev_n else 0.0,
    }


def write_artifacts(ctx: StageContext, sids, codebook: Codebook, fmt, retired: list, length: int, method: str) -> None:
    out = ctx.layout.sid_artifacts
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    cfg = ctx.config.sids
    levels = codebook.levels
    # level sizes: K codes per quantizer level; an appended level needs as many tokens as its largest value
    sizes = [k for k in [codebook.codebook_size] * levels]
    if length > levels:
        top = sids.agg(F.max(F.element_at(S.sid, -1))).first()[0] or 0
        top = max([top] + [r["sid"][-1] for r in retired if len(r["sid"]) == length])
        sizes.append(max(codebook.codebook_size, int(top) + 1) if method != "hybrid" else int(top) + 1)
    tokens = fmt.special_tokens(sizes)
    atomic_write_text(out / "special_tokens.json", _dump({"format": ARTIFACT_FORMAT, "sid_length": length, "level_sizes": sizes, "tokens": tokens}))
    atomic_write_text(out / "sid_format.json", _dump({
        "format": ARTIFACT_FORMAT, "codebook_id": codebook.codebook_id, "resolution": method, "sid_length": length,
        "token_template": fmt.template, "level_names": fmt.level_names, "item_template": fmt.item_template, "hybrid": fmt.hybrid,
    }))
    rows = sids.select(S.item_id, S.sid, S.item_token).orderBy(S.sid).toLocalIterator()
    entries, item_tokens = [], {}
    for r in rows:  # streamed: the trie itself is the one O(items) artifact
        toks = [fmt.token(i, c, length=length) for i, c in enumerate(r[S.sid])]
        entries.append((toks, r[S.item_id]))
        if r[S.item_token] is not None:
            item_tokens[r[S.item_token]] = r[S.item_id]
    atomic_write_text(out / "sid_trie.json", json.dumps(build_trie(entries), sort_keys=True, ensure_ascii=False, separators=(",", ":")) + "\n")
    if fmt.hybrid:
        atomic_write_text(out / "item_tokens.json", _dump({"format": ARTIFACT_FORMAT, "item_tokens": item_tokens}))
    atomic_write_text(out / "retired.json", _dump({"format": ARTIFACT_FORMAT, "retired": retired}))
    catalog = read_table(ctx.spark, ctx.layout.catalog, CATALOG)
    prefix_levels = [lv for lv in (1, 2) if lv <= levels]
    agg = glossary_aggregates(sids, catalog, prefix_levels=prefix_levels, examples=cfg.glossary_examples,
                              top_terms=cfg.glossary_top_terms)
    glossary = build_glossary(agg, render_prefix=replace(fmt, hybrid=False).render, top_terms=cfg.glossary_top_terms)
    glossary["codebook_id"] = codebook.codebook_id
    atomic_write_text(out / "glossary.json", _dump(glossary))


if __name__ == "__main__":
    sys.exit(stage_main("sids", run))

"""Stage "fuse": collaborative item vectors from the interaction log, fused with the text space.

Reads  layout.text_embeddings (EMBEDDINGS, space=text), layout.interactions, layout.catalog.
Writes layout.collab_embeddings (space=collaborative, items with training interactions only) and
       layout.embeddings (the space chosen by ``fuse.space``; one row per item with a text vector).

Driver-side work is bounded by catalog size, never by log size: the item x item co-occurrence
counts (sparse), the text vectors of items with interactions (for training) plus an evaluation sample
of at most ``fuse.eval_max_items`` items, and at most ``fuse.eval_max_pairs`` held-out pairs.
"""

from __future__ import annotations

import hashlib
import logging
import sys
import time

import numpy as np
import pandas as pd
from pyspark.sql import functions as F

from jobs.common.io import read_table, write_table
from jobs.common.stage import StageContext, StageResult, stage_main
from jobs.fuse import transform as T
from jobs.fuse.collab import ppmi_svd, procrustes_align
from jobs.fuse.config import FuseConfig
from jobs.fuse.fusion import build_space, collaborative_space, fit_cold_map, train_contrastive
from jobs.fuse.metrics import evaluate_spaces
from jobs.fuse.model import FusionModel
from schemas.catalog import CATALOG
from schemas.catalog import C as K
from schemas.convert import to_spark
from schemas.embeddings import EMBEDDINGS
from schemas.embeddings import C as E
from schemas.interactions import INTERACTIONS
from schemas.interactions import C as I

log = logging.getLogger("sidpipe.fuse")


def run(ctx: StageContext) -> StageResult:
    cfg: FuseConfig = ctx.config.fuse
    spark, layout, seed = ctx.spark, ctx.layout, ctx.seed
    timings: dict[str, float] = {}
    started = time.perf_counter()

    text_df = read_table(spark, layout.text_embeddings, EMBEDDINGS)
    interactions = read_table(spark, layout.interactions, INTERACTIONS)
    catalog = read_table(spark, layout.catalog, CATALOG)
    text_dims = [r[0] for r in text_df.select(F.size(E.embedding)).distinct().collect()]
    if len(text_dims) != 1 or text_dims[0] < 1:
        raise ValueError(f"{layout.text_embeddings}: text embeddings must all have one positive width, found {text_dims}")
    text_fingerprint = "+".join(sorted(str(r[0]) for r in text_df.select(E.model_fingerprint).distinct().collect()))

    # 1. Collaborative signal in Spark: hold out each user's last events, count windowed co-occurrences.
    marked = T.mark_heldout(interactions, cfg=cfg).cache()
    event_counts = {bool(r[0]): r[1] for r in marked.groupBy(T.IS_HELDOUT).count().collect()}
    items = T.training_items(marked).cache()
    n_collab = items.count()
    if n_collab > cfg.max_collab_items:
        raise ValueError(f"{n_collab} items have interactions, more than fuse.max_collab_items={cfg.max_collab_items}")
    if n_collab < 3:
        raise ValueError(f"{layout.interactions}: only {n_collab} items have training interactions; the collaborative "
                         "space needs at least 3 (check the interaction log, or fuse.holdout_last)")
    indexed_ids = items.orderBy(T.INDEX).select(I.item_id).toPandas()[I.item_id].to_numpy()
    triplets = T.index_counts(T.cooccurrence_counts(marked, window=cfg.window), items).toPandas()
    timings["cooccurrence_s"] = time.perf_counter() - started

    t0 = time.perf_counter()
    collab = ppmi_svd(triplets[T.ITEM_A].to_numpy(), triplets[T.ITEM_B].to_numpy(), triplets[T.COUNT].to_numpy(),
                      n_collab, dim=cfg.collab_dim, seed=seed, alpha=cfg.ppmi_alpha, shift=cfg.ppmi_shift)
    # Items whose only co-occurrences fell below the PPMI threshold have no signal: they count as cold.
    has_signal = np.linalg.norm(collab, axis=1) > 0
    collab_ids, collab = indexed_ids[has_signal], collab[has_signal]
    timings["ppmi_svd_s"] = time.perf_counter() - t0
    previous, decision = _reusable_model(ctx, cfg, text_fingerprint)
    if previous is not None:
        collab, previous, decision = _align_to_previous(ctx, cfg, collab_ids, collab, previous, decision)
    collab_fingerprint = "ppmi-svd:" + _digest(collab)
    collab_df = spark.createDataFrame(
        pd.DataFrame({E.item_id: collab_ids, E.embedding: list(collab), E.space: "collaborative",
                      E.text_hash: None, E.model_fingerprint: collab_fingerprint}),
        schema=to_spark(EMBEDDINGS),
    )
    write_table(collab_df, layout.collab_embeddings, EMBEDDINGS, num_files=cfg.output_files, sort_by=(E.item_id,))
    collab_df = read_table(spark, layout.collab_embeddings, EMBEDDINGS)

    # 2. Driver sample: text vectors of items with interactions (training) plus the evaluation sample.
    t0 = time.perf_counter()
    n_text = text_df.count()
    eval_ids_df = _evaluation_items(text_df, cfg, seed, n_text)
    wanted = collab_df.select(E.item_id).unionByName(eval_ids_df).distinct()
    local = text_df.join(wanted, E.item_id).select(E.item_id, E.embedding).orderBy(E.item_id).toPandas()
    local_ids = local[E.item_id].to_numpy()
    text = np.stack(local[E.embedding].to_numpy()).astype(np.float32) if len(local) else np.zeros((0, text_dims[0]))
    row_of = {item: i for i, item in enumerate(local_ids)}
    collab_row_of = {item: i for i, item in enumerate(collab_ids)}
    has_collab = np.array([item in collab_row_of for item in local_ids], dtype=bool)
    local_collab = np.zeros((len(local_ids), collab.shape[1]), dtype=np.float32)
    local_collab[has_collab] = collab[[collab_row_of[item] for item in local_ids[has_collab]]]
    if has_collab.sum() < 3:
        raise ValueError(f"only {int(has_collab.sum())} items have both interactions and a text embedding; "
                         "check that interactions and text embeddings use the same item ids")

    # 3. Fusion: ridge map for cold items, then the contrastive residual projection (or the previous
    #    version's model, whose basis the collaborative vectors were just rotated into).
    pair_a, pair_b, pair_w = _training_pairs(triplets, indexed_ids=indexed_ids, row_of=row_of)
    timings["driver_collect_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    if previous is not None:
        weights = previous.weights
    else:
        cold_map = fit_cold_map(text[has_collab], local_collab[has_collab], ridge=cfg.cold_ridge)
        c_space = collaborative_space(text, local_collab, has_collab, cold_map)
        weights = train_contrastive(
            text, c_space, pair_a, pair_b, pair_w, cold_map=cold_map, seed=seed, steps=cfg.train_steps,
            batch_size=cfg.batch_size, temperature=cfg.temperature, retention_weight=cfg.retention_weight,
            learning_rate=cfg.learning_rate, weight_decay=cfg.weight_decay, threads=cfg.train_threads,
        )
    timings["train_s"] = time.perf_counter() - t0

    # 4. Measure every space on the evaluation sample with held-out pairs.
    t0 = time.perf_counter()
    metrics = _measure(marked, catalog, eval_ids_df, local_ids, text, local_collab, has_collab, weights, cfg, seed)
    timings["evaluate_s"] = time.perf_counter() - t0

    # 5. Output space, computed in the workers.
    t0 = time.perf_counter()
    if cfg.space == "text":
        fingerprint = text_fingerprint
    elif previous is not None:
        fingerprint = previous.fingerprint
    else:
        fingerprint = f"{text_fingerprint}|{collab_fingerprint}|fuse:{cfg.space}:{cfg.fusion}:{_digest(*weights.to_arrays().values())}"
    FusionModel(weights=weights, fingerprint=fingerprint, text_fingerprint=text_fingerprint, space=cfg.space,
                fusion=cfg.fusion, fitted_in=previous.fitted_in if previous else ctx.snapshot_id).save(layout.fusion_model)
    joined = T.attach_collab(text_df, collab_df)
    out = T.project_space(joined, space=cfg.space, fusion=cfg.fusion, weights=weights, fingerprint=fingerprint)
    write_table(out, layout.embeddings, EMBEDDINGS, num_files=cfg.output_files, sort_by=(E.item_id,))
    n_out = read_table(spark, layout.embeddings, EMBEDDINGS).count()
    timings["write_space_s"] = time.perf_counter() - t0
    timings["total_s"] = time.perf_counter() - started

    n_interaction_items = marked.select(I.item_id).distinct().count()
    n_interaction_items_without_text = marked.select(I.item_id).distinct().join(text_df, I.item_id, "left_anti").count()
    n_catalog_without_text = catalog.select(K.item_id).distinct().join(text_df, K.item_id, "left_anti").count()
    marked.unpersist()
    items.unpersist()
    counts = {
        "text_items": n_text,
        "output_items": n_out,
        "collab_items": len(collab_ids),
        "collab_items_without_signal": int((~has_signal).sum()),
        "cold_items": n_text - int(has_collab.sum()) if n_text == len(local_ids) else -1,
        "train_events": int(event_counts.get(False, 0)),
        "heldout_events": int(event_counts.get(True, 0)),
        "cooccurrence_nonzeros": len(triplets),
        "training_pairs": len(pair_a),
        "interaction_items": n_interaction_items,
        "interaction_items_without_text": n_interaction_items_without_text,
        "catalog_items_without_text_embedding": n_catalog_without_text,
    }
    notes = []
    if n_out != n_text:
        raise RuntimeError(f"fuse wrote {n_out} rows for {n_text} text embeddings")
    if n_interaction_items_without_text:
        notes.append(f"{n_interaction_items_without_text} items in the interactions have no text embedding: they "
                     "shape the collaborative space but are not in layout.embeddings")
    metrics.update({"timings": {k: round(v, 3) for k, v in timings.items()},
                    "space": cfg.space, "fusion": cfg.fusion, "collab_dim": int(collab.shape[1]),
                    "fusion_model": decision,
                    "final_pair_loss": _tail_mean(weights.history.get("pair_loss", [])),
                    "final_retention_loss": _tail_mean(weights.history.get("retention_loss", []))})
    notes.append(f"fusion model: {decision['decision']} ({decision['reason']})")
    return StageResult(
        counts=counts,
        metrics=metrics,
        outputs={"collab_embeddings": str(layout.collab_embeddings), "embeddings": str(layout.embeddings),
                 "fusion_model": str(layout.fusion_model)},
        notes=notes,
    )


def _reusable_model(ctx: StageContext, cfg: FuseConfig, text_fingerprint: str) -> tuple[FusionModel | None, dict]:
    """(previous version's fusion model if it may be reused, decision record)."""
    if ctx.previous_version is None:
        return None, {"decision": "fit", "reason": "no previous version"}
    if not cfg.reuse_previous:
        return None, {"decision": "fit", "reason": "fuse.reuse_previous is false"}
    previous = FusionModel.load(ctx.previous_layout.fusion_model)
    if previous is None:
        return None, {"decision": "fit", "reason": "the previous version has no fusion model"}
    wanted = {"text_fingerprint": text_fingerprint, "space": cfg.space, "fusion": cfg.fusion}
    differs = [f"{k} {getattr(previous, k)!r} != {v!r}" for k, v in wanted.items() if getattr(previous, k) != v]
    if differs:
        return None, {"decision": "fit", "reason": "previous fusion model differs: " + "; ".join(differs)}
    return previous, {"decision": "reuse", "reason": "previous fusion model matches", "fitted_in": previous.fitted_in}


def _align_to_previous(ctx: StageContext, cfg: FuseConfig, collab_ids, collab, previous: FusionModel, decision: dict):
    """Rotate this snapshot's collaborative vectors into the previous version's basis, or give up reuse."""
    prev_path = ctx.previous_layout.collab_embeddings
    prev = read_table(ctx.spark, prev_path, EMBEDDINGS).select(E.item_id, E.embedding).orderBy(E.item_id).toPandas()
    if len(prev) == 0 or len(prev[E.embedding].iloc[0]) != collab.shape[1]:
        return collab, None, {"decision": "fit", "reason": f"{prev_path} is empty or of another width"}
    aligned, fit = procrustes_align(collab, collab_ids, np.stack(prev[E.embedding].to_numpy()), prev[E.item_id].to_numpy())
    fit["alignment_error"] = round(fit["alignment_error"], 6)
    if fit["shared_items"] < cfg.min_alignment_items:
        return collab, None, {**fit, "decision": "fit", "reason": f"only {fit['shared_items']} items shared with the previous log"}
    if fit["alignment_error"] > cfg.max_alignment_error:
        return collab, None, {**fit, "decision": "fit",
                              "reason": f"alignment error {fit['alignment_error']:.4f} > fuse.max_alignment_error {cfg.max_alignment_error}"}
    return aligned, previous, {**decision, **fit}


def _evaluation_items(text_df, cfg: FuseConfig, seed: int, n_text: int):
    """All items when they fit the bound, else a seeded hash sample of ``eval_max_items`` (no collect)."""
    ids = text_df.select(E.item_id)
    if n_text <= cfg.eval_max_items:
        return ids
    ranked = ids.withColumn("_h", F.xxhash64(E.item_id, F.lit(seed)))
    return ranked.orderBy("_h", E.item_id).limit(cfg.eval_max_items).select(E.item_id)


def _training_pairs(triplets: pd.DataFrame, *, indexed_ids: np.ndarray, row_of: dict):
    """Co-interacted pairs (one direction) as rows of the driver matrix, weighted by co-occurrence count."""
    ids = indexed_ids
    upper = triplets[triplets[T.ITEM_A] < triplets[T.ITEM_B]]
    a = pd.Series(ids[upper[T.ITEM_A].to_numpy()]).map(row_of)
    b = pd.Series(ids[upper[T.ITEM_B].to_numpy()]).map(row_of)
    keep = (a.notna() & b.notna()).to_numpy()
    order = np.lexsort((upper[T.ITEM_B].to_numpy()[keep], upper[T.ITEM_A].to_numpy()[keep]))
    return (a.to_numpy()[keep][order].astype(np.int64), b.to_numpy()[keep][order].astype(np.int64),
            upper[T.COUNT].to_numpy()[keep][order].astype(np.float64))


def _measure(marked, catalog, eval_ids_df, local_ids, text, local_collab, has_collab, weights, cfg, seed):
    """Metrics of all four spaces on the evaluation items (rows of the driver matrix) and held-out pairs."""
    row_of = {item: i for i, item in enumerate(local_ids)}
    eval_ids = eval_ids_df.orderBy(E.item_id).toPandas()[E.item_id].to_numpy()
    rows = np.array([row_of[i] for i in eval_ids if i in row_of], dtype=np.int64)
    eval_items = local_ids[rows]
    eval_row = {item: j for j, item in enumerate(eval_items)}
    pairs = T.heldout_pairs(marked, window=cfg.window)
    pairs = pairs.withColumn("_h", F.xxhash64(T.QUERY_ITEM, T.TARGET_ITEM, I.user_id, F.lit(seed)))
    pairs = pairs.orderBy("_h", I.user_id, T.QUERY_ITEM, T.TARGET_ITEM).limit(cfg.eval_max_pairs).toPandas()
    q = pairs[T.QUERY_ITEM].map(eval_row)
    t = pairs[T.TARGET_ITEM].map(eval_row)
    keep = (q.notna() & t.notna()).to_numpy()
    leaf = F.element_at(K.category_path, -1)
    labels_pdf = catalog.select(K.item_id, F.when(F.size(K.category_path) > 0, leaf).alias("_leaf")).toPandas()
    label_of = dict(zip(labels_pdf[K.item_id], labels_pdf["_leaf"]))
    labels = [label_of.get(item) for item in eval_items]
    sub_text, sub_collab, sub_has = text[rows], local_collab[rows], has_collab[rows]
    spaces = {name: build_space(name, sub_text, sub_collab, sub_has, weights) for name in ("text", "collaborative", "concat", "fused")}
    report = evaluate_spaces(
        spaces, k=cfg.eval_k, pair_queries=q[keep].to_numpy(np.int64), pair_targets=t[keep].to_numpy(np.int64),
        labels=labels, cold_rows=np.flatnonzero(~sub_has),
    )
    return {
        "spaces": report,
        "eval_items": len(rows),
        "eval_cold_items": int((~sub_has).sum()),
        "eval_pairs": int(keep.sum()),
        "eval_pairs_dropped": int((~keep).sum()),
    }


def _digest(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


def _tail_mean(values: list[float], n: int = 20) -> float | None:
    return float(np.mean(values[-n:])) if values else None  # None: not trained in this run


if __name__ == "__main__":
    sys.exit(stage_main("fuse", run))

"""Stage "codebook": train a residual-quantization codebook on a bounded sample, or reuse the frozen one.

Reuse rule: with a previous published version that holds a codebook of the same embedding space, keep
it unless ``force_retrain`` or a drift metric exceeds its threshold (new-item share, new items'
reconstruction error relative to training, collision rate under the frozen codebook). The decision
and its reasons go into the StageResult metrics.
"""

from __future__ import annotations

import logging
import shutil
import sys
import time

from jobs.codebook.transform import embedding_space, frozen_drift, training_sample, validate_embeddings
from jobs.common.io import read_table
from jobs.common.stage import StageContext, StageResult, stage_main
from schemas.embeddings import EMBEDDINGS
from schemas.embeddings import C as E
from schemas.sids import SIDS
from tokenizer.codebook import Codebook
from tokenizer.errors import CodebookMismatch

log = logging.getLogger("sidpipe.codebook")


def read_valid_embeddings(ctx: StageContext):
    """Embeddings table, checked: one space, one dimension, finite values (errors name items)."""
    df = read_table(ctx.spark, ctx.layout.embeddings, EMBEDDINGS)
    space = embedding_space(df)
    dims = [d for d in space["dims"] if d is not None and d > 0]
    if not dims:
        raise ValueError(f"embeddings table at {ctx.layout.embeddings} is empty")
    dim = max(dims, key=lambda d: df.where(f"size({E.embedding}) = {d}").count()) if len(dims) > 1 else dims[0]
    validate_embeddings(df, dim)
    return df, {"space": space["space"], "model_fingerprint": space["model_fingerprint"]}, dim


def previous_codebook(ctx: StageContext) -> Codebook | None:
    if ctx.previous_layout is None:
        return None
    path = ctx.previous_layout.codebook
    return Codebook.load(path) if (path / "codebook.json").is_file() else None


def decide_reuse(ctx: StageContext, df, space: dict, dim: int) -> tuple[Codebook | None, dict]:
    """(previous codebook to reuse or None, decision metrics)."""
    cfg = ctx.config.codebook
    prev = previous_codebook(ctx)
    if prev is None:
        return None, {"decision": "train", "reason": "no previous codebook"}
    if cfg.force_retrain:
        return None, {"decision": "train", "reason": "force_retrain", "previous_codebook_id": prev.codebook_id}
    try:
        prev.check_space(dim=dim, model_fingerprint=space["model_fingerprint"], space=space["space"])
    except CodebookMismatch as exc:
        return None, {"decision": "train", "reason": f"embedding space changed: {exc}", "previous_codebook_id": prev.codebook_id}
    prev_sids_path = ctx.previous_layout.sids
    prev_items = read_table(ctx.spark, prev_sids_path, SIDS).select(E.item_id) if prev_sids_path.exists() else None
    drift = frozen_drift(df, prev, previous_items=prev_items)
    exceeded = [
        f"{name} {drift[key]:.4f} > {limit}"
        for name, key, limit in (
            ("new_item_share", "new_item_share", cfg.max_new_item_share),
            ("recon_error_ratio", "recon_error_ratio", cfg.max_recon_error_ratio),
            ("frozen_collision_rate", "frozen_collision_rate", cfg.max_frozen_collision_rate),
        )
        if drift[key] > limit
    ]
    decision = {"previous_codebook_id": prev.codebook_id, "drift": drift}
    if exceeded:
        return None, {**decision, "decision": "train", "reason": "drift: " + "; ".join(exceeded)}
    return prev, {**decision, "decision": "reuse", "reason": "drift within thresholds"}


def run(ctx: StageContext) -> StageResult:
    import numpy as np

    from tokenizer.train import fit

    cfg = ctx.config.codebook
    df, space, dim = read_valid_embeddings(ctx)
    reused, decision = decide_reuse(ctx, df, space, dim)
    out = ctx.layout.codebook
    if out.exists():
        shutil.rmtree(out)
    train_seconds = 0.0
    if reused is not None:
        codebook = reused
        codebook.save(out)
    else:
        sample = training_sample(df.select(E.item_id, E.embedding), max_items=cfg.max_train_items, seed=ctx.seed)
        pdf = sample.toPandas().sort_values(E.item_id, kind="stable")
        emb = np.stack([np.asarray(v, dtype=np.float32) for v in pdf[E.embedding]])
        started = time.perf_counter()
        codebook = fit(emb, ctx.seed, method=cfg.method, space=space, item_ids=list(pdf[E.item_id]), **cfg.fit_settings())
        train_seconds = time.perf_counter() - started
        codebook = codebook.with_metadata(metrics={**codebook.metrics, "max_train_items": cfg.max_train_items})
        codebook.save(out)
        log.info("trained %s codebook %s on %d items in %.1fs", cfg.method, codebook.codebook_id, len(pdf), train_seconds)
    m = codebook.metrics
    return StageResult(
        counts={"train_items": int(m.get("train_items", 0))},
        metrics={
            "codebook_id": codebook.codebook_id,
            "method": codebook.method,
            "train_seconds": round(train_seconds, 3),
            "train_recon_mse": m.get("train_recon_mse"),
            "train_collision_rate": m.get("train_collisions", {}).get("collision_rate"),
            "train_levels": m.get("train_levels"),
            **{k: v for k, v in decision.items()},
        },
        outputs={"codebook": str(out)},
        notes=[f"codebook {decision['decision']}: {decision['reason']}"],
    )


if __name__ == "__main__":
    sys.exit(stage_main("codebook", run))

"""Residual k-means (faiss-seeded, optionally balanced per level): the fast, non-neural codebook."""

from __future__ import annotations

from typing import Any

import numpy as np

from tokenizer.codebook import Codebook, check_embeddings
from tokenizer.kmeans import assign, fit_level
from tokenizer.metrics import collision_stats, level_usage, reconstruction_mse


def fit_rq_kmeans(
    emb: np.ndarray,
    *,
    seed: int,
    levels: int = 3,
    codebook_size: int = 256,
    balanced: bool = True,
    capacity_slack: float = 1.0,
    iters: int = 5,
    space: dict[str, Any] | None = None,
    item_ids=None,
) -> Codebook:
    """Fit ``levels`` residual k-means codebooks of ``codebook_size`` codes each.

    ``balanced`` caps every code at ``ceil(n / K * capacity_slack)`` training points via per-code prices
    (see :mod:`tokenizer.kmeans`), so level-1 codes are used evenly and fewer items share a full code.
    """
    x = check_embeddings(emb, None, item_ids)
    residual = x.copy()
    centroids, prices = [], []
    for level in range(levels):
        c, p = fit_level(residual, codebook_size, seed=seed + 1000 * level, balanced=balanced, iters=iters, capacity_slack=capacity_slack)
        codes = assign(residual, c, p)
        residual = residual - c[codes]
        centroids.append(c)
        prices.append(p)
    cb = Codebook(
        method="rq_kmeans",
        centroids=np.stack(centroids).astype(np.float32),
        prices=np.stack(prices).astype(np.float32),
        input_dim=x.shape[1],
        space=dict(space or {}),
        config={
            "method": "rq_kmeans",
            "seed": seed,
            "levels": levels,
            "codebook_size": codebook_size,
            "balanced": balanced,
            "capacity_slack": capacity_slack,
            "iters": iters,
        },
    )
    return cb.with_metadata(metrics=training_metrics(cb, x))


def training_metrics(cb: Codebook, x: np.ndarray) -> dict[str, Any]:
    """Deterministic metrics of a codebook on its own training sample (stored in the artifact)."""
    codes = cb.encode(x)
    return {
        "train_items": len(x),
        "train_recon_mse": reconstruction_mse(x, cb.decode(codes)),
        "train_levels": level_usage(codes, cb.codebook_size),
        "train_collisions": collision_stats(codes),
    }

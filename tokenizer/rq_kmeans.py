"""Residual k-means (faiss-seeded, optionally balanced per level): the fast, non-neural codebook."""

from __future__ import annotations

from typing import Any

import numpy as np

from tokenizer.codebook import Codebook, PrefixPrices, check_embeddings
from tokenizer.kmeans import fit_level, pairwise_sq_dist, prefix_prices
from tokenizer.metrics import collision_stats, level_usage, reconstruction_mse

PREFIX_BALANCE = ("off", "last", "deep")


def prefix_levels(prefix_balance: str, levels: int) -> range:
    """Levels (0-based) that get per-prefix capacity prices: none, the last, or every level below the first."""
    if prefix_balance not in PREFIX_BALANCE:
        raise ValueError(f"prefix_balance must be one of {PREFIX_BALANCE}, got {prefix_balance!r}")
    if prefix_balance == "off" or levels < 2:
        return range(0)
    return range(levels - 1, levels) if prefix_balance == "last" else range(1, levels)


def fit_rq_kmeans(
    emb: np.ndarray,
    *,
    seed: int,
    levels: int = 3,
    codebook_size: int = 256,
    balanced: bool = True,
    capacity_slack: float = 1.0,
    iters: int = 5,
    prefix_balance: str = "last",
    space: dict[str, Any] | None = None,
    item_ids=None,
) -> Codebook:
    """Fit ``levels`` residual k-means codebooks of ``codebook_size`` codes each.

    ``balanced`` caps every code at ``ceil(n / K * capacity_slack)`` training points via per-code prices
    (see :mod:`tokenizer.kmeans`), so level-1 codes are used evenly and fewer items share a full code.
    ``prefix_balance`` ("last", the default; "deep": every level below the first; "off") adds the
    same capacity rule *inside each prefix group* at those levels, frozen as sparse per-prefix prices:
    items that share their first codes are spread over distinct codes of the next level, which is what
    keeps full SIDs apart (a global price cannot: the few items under one prefix all sit near the same
    couple of residual centroids).
    """
    x = check_embeddings(emb, None, item_ids)
    residual = x.copy()
    centroids, prices, tables = [], [], []
    codes = np.zeros((len(x), levels), dtype=np.int32)
    by_prefix = prefix_levels(prefix_balance, levels)
    for level in range(levels):
        c, p = fit_level(residual, codebook_size, seed=seed + 1000 * level, balanced=balanced, iters=iters, capacity_slack=capacity_slack)
        # what the frozen (float32) codebook will compute, so the training codes are the encoded codes
        c, p = c.astype(np.float32).astype(np.float64), p.astype(np.float32).astype(np.float64)
        cost = pairwise_sq_dist(residual, c) + p[None, :]
        table = None
        if level in by_prefix:
            keys, tcodes, values, _ = prefix_prices(residual, cost, codes[:, :level], capacity_slack=capacity_slack)
            table = PrefixPrices.build(keys, tcodes, values)
            table.add_to(cost, codes[:, :level])
        codes[:, level] = cost.argmin(1)
        residual = residual - c[codes[:, level]]
        centroids.append(c)
        prices.append(p)
        tables.append(table)
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
            **({"prefix_balance": prefix_balance} if prefix_balance != "off" else {}),
        },
        prefix_prices=tuple(tables) if any(t is not None and len(t) for t in tables) else (),
    )
    return cb.with_metadata(metrics=training_metrics(cb, x))


def training_metrics(cb: Codebook, x: np.ndarray) -> dict[str, Any]:
    """Deterministic metrics of a codebook on its own training sample (stored in the artifact)."""
    codes = cb.encode(x)
    out = {
        "train_items": len(x),
        "train_recon_mse": reconstruction_mse(x, cb.decode(codes)),
        "train_levels": level_usage(codes, cb.codebook_size),
        "train_collisions": collision_stats(codes),
    }
    if cb.prefix_prices:
        out["prefix_price_entries"] = {str(lv): len(t) for lv, t in enumerate(cb.prefix_prices) if t is not None and len(t)}
    return out

"""Quality numbers of a set of codes: utilisation, perplexity, collisions, category coherence."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def level_usage(codes: np.ndarray, codebook_size: int) -> list[dict[str, float]]:
    """Per level: codes used, utilisation share, perplexity (exp entropy) and the largest bucket."""
    out = []
    for level in range(codes.shape[1]):
        counts = np.bincount(codes[:, level], minlength=codebook_size)
        p = counts[counts > 0] / counts.sum() if counts.sum() else np.array([1.0])
        out.append(
            {
                "used": int((counts > 0).sum()),
                "utilisation": float((counts > 0).mean()),
                "perplexity": float(np.exp(-(p * np.log(p)).sum())),
                "max_count": int(counts.max()) if counts.size else 0,
            }
        )
    return out


def colliding_mask(codes: np.ndarray) -> np.ndarray:
    """Boolean mask: items whose full code tuple another item shares."""
    if len(codes) == 0:
        return np.zeros(0, dtype=bool)
    _, inverse, counts = np.unique(codes, axis=0, return_inverse=True, return_counts=True)
    return counts[inverse.ravel()] > 1


def collision_stats(codes: np.ndarray) -> dict[str, Any]:
    """Items that share their full code tuple with another item, and the largest shared bucket."""
    n = len(codes)
    if n == 0:
        return {"items": 0, "colliding_items": 0, "collision_rate": 0.0, "max_bucket": 0, "distinct": 0}
    _, counts = np.unique(codes, axis=0, return_counts=True)
    colliding = int(counts[counts > 1].sum())
    return {
        "items": n,
        "colliding_items": colliding,
        "collision_rate": colliding / n,
        "max_bucket": int(counts.max()),
        "distinct": len(counts),
    }


def identical_groups(keys: Sequence[Any]) -> np.ndarray:
    """Boolean mask: rows whose key (e.g. text_hash) is shared with another row (nulls never match)."""
    import pandas as pd

    s = pd.Series(list(keys), dtype=object)
    return (s.notna() & s.duplicated(keep=False)).to_numpy()


def reconstruction_mse(x: np.ndarray, x_hat: np.ndarray) -> float:
    """Mean squared L2 error per item."""
    return float(((np.asarray(x, np.float64) - np.asarray(x_hat, np.float64)) ** 2).sum(1).mean()) if len(x) else 0.0


def usage_from_counts(counts: dict[int, int], codebook_size: int) -> dict[str, float]:
    """Same numbers as :func:`level_usage` for one level, from code -> item count (Spark aggregates)."""
    arr = np.zeros(max(codebook_size, max(counts, default=-1) + 1), dtype=np.int64)
    for code, c in counts.items():
        arr[int(code)] = int(c)
    return level_usage(np.repeat(np.arange(len(arr)), arr)[:, None], codebook_size)[0] if arr.sum() else {
        "used": 0, "utilisation": 0.0, "perplexity": 0.0, "max_count": 0}

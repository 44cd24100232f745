"""``fit(emb, seed) -> Codebook``: the one entry point that trains a codebook of either method."""

from __future__ import annotations

from typing import Any

import numpy as np

from tokenizer.codebook import Codebook

METHODS = ("rq_kmeans", "rqvae")


def fit(emb: np.ndarray, seed: int, *, method: str = "rq_kmeans", space: dict[str, Any] | None = None, item_ids=None, **settings: Any) -> Codebook:
    """Train a codebook of ``method`` on embeddings (n, d). ``settings`` are the method's keywords."""
    if method == "rq_kmeans":
        from tokenizer.rq_kmeans import fit_rq_kmeans

        return fit_rq_kmeans(emb, seed=seed, space=space, item_ids=item_ids, **settings)
    if method == "rqvae":
        from tokenizer.rqvae import RQVAESettings, fit_rqvae

        return fit_rqvae(emb, seed=seed, settings=RQVAESettings(**settings), space=space, item_ids=item_ids)
    raise ValueError(f"unknown codebook method {method!r}; choose one of {METHODS}")

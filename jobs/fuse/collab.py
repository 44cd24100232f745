"""Collaborative item vectors from co-occurrence counts: PPMI + truncated SVD (plain numpy/scipy).

The Spark side (``transform.cooccurrence_counts``) reduces the interaction log to an item x item
count matrix; everything here works on that bounded sparse matrix and is callable without Spark.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import svds


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, eps)).astype(np.float32)


def count_matrix(rows: np.ndarray, cols: np.ndarray, counts: np.ndarray, n_items: int) -> sp.csr_matrix:
    """Symmetric item x item co-occurrence matrix; entries are sorted so the result is order-independent."""
    rows = np.asarray(rows, dtype=np.int64)
    cols = np.asarray(cols, dtype=np.int64)
    counts = np.asarray(counts, dtype=np.float64)
    order = np.lexsort((cols, rows))
    m = sp.csr_matrix((counts[order], (rows[order], cols[order])), shape=(n_items, n_items))
    m.sum_duplicates()
    m = ((m + m.T) * 0.5).tocsr()  # tolerate callers that pass one or both directions
    m.sort_indices()
    return m


def ppmi(counts: sp.csr_matrix, *, alpha: float = 0.75, shift: float = 1.0) -> sp.csr_matrix:
    """Positive (shifted) PMI with context-distribution smoothing ``alpha``."""
    counts = counts.tocsr().astype(np.float64)
    row_sum = np.asarray(counts.sum(axis=1)).ravel()
    col_smoothed = np.asarray(counts.sum(axis=0)).ravel() ** alpha
    total_smoothed = col_smoothed.sum()
    coo = counts.tocoo()
    with np.errstate(divide="ignore"):
        pmi = np.log(coo.data * total_smoothed / (row_sum[coo.row] * col_smoothed[coo.col])) - np.log(shift)
    keep = pmi > 0
    out = sp.csr_matrix((pmi[keep], (coo.row[keep], coo.col[keep])), shape=counts.shape)
    out.sort_indices()
    return out


def truncated_svd_vectors(matrix: sp.csr_matrix, dim: int, *, seed: int) -> np.ndarray:
    """Rows of ``U * sqrt(S)`` of the rank-``dim`` SVD, signs fixed, L2-normalised.

    ARPACK gets a seeded start vector, and each component's sign is chosen so that its largest-magnitude
    entry is positive: the same matrix and seed give the same vectors.
    """
    n = matrix.shape[0]
    if n < 3:
        raise ValueError(f"a collaborative space needs at least 3 items with co-occurrences, got {n}")
    k = min(dim, n - 2)
    v0 = np.random.default_rng(seed).standard_normal(n)
    u, s, _ = svds(matrix.astype(np.float64), k=k, v0=v0, which="LM", random_state=seed)
    order = np.argsort(-s, kind="stable")
    u, s = u[:, order], s[order]
    signs = np.sign(u[np.argmax(np.abs(u), axis=0), np.arange(u.shape[1])])
    signs[signs == 0] = 1.0
    vectors = u * signs * np.sqrt(np.maximum(s, 0.0))
    # An item whose PPMI row is empty, or lies in a small component outside the top `dim` singular
    # directions, has no signal in this space: its row is float noise (~1e-17) and becomes exactly zero
    # (callers treat zero rows as items without collaborative vector).
    norms = np.linalg.norm(vectors, axis=1)
    vectors[(np.diff(matrix.tocsr().indptr) == 0) | (norms <= 1e-6 * max(norms.max(), 1e-30))] = 0.0
    if k < dim:  # keep the declared width so downstream shapes never depend on catalog size
        vectors = np.pad(vectors, ((0, 0), (0, dim - k)))
    return l2_normalize(vectors)


def ppmi_svd(
    rows: np.ndarray, cols: np.ndarray, counts: np.ndarray, n_items: int, *, dim: int, seed: int,
    alpha: float = 0.75, shift: float = 1.0,
) -> np.ndarray:
    """Item vectors (n_items x dim, unit rows) from co-occurrence triplets on dense indices 0..n_items-1."""
    return truncated_svd_vectors(ppmi(count_matrix(rows, cols, counts, n_items), alpha=alpha, shift=shift), dim, seed=seed)


def fit_ridge_map(source: np.ndarray, target: np.ndarray, *, ridge: float) -> np.ndarray:
    """W minimising ||source W - target||^2 + ridge ||W||^2 (closed form, float64)."""
    x = np.asarray(source, dtype=np.float64)
    y = np.asarray(target, dtype=np.float64)
    gram = x.T @ x + ridge * np.eye(x.shape[1])
    return np.linalg.solve(gram, x.T @ y).astype(np.float32)


def procrustes_align(
    vectors: np.ndarray, ids: np.ndarray, reference: np.ndarray, reference_ids: np.ndarray
) -> tuple[np.ndarray, dict]:
    """Rotate ``vectors`` into the basis of ``reference`` (orthogonal Procrustes on shared ids).

    SVD bases are only defined up to rotation and sign, so two fits on overlapping logs disagree even
    where the items' neighbourhoods agree; the rotation fitted on shared items maps the new fit onto the
    old one. Returns the rotated vectors (unit rows) and the fit: shared items and the relative
    Frobenius residual on them (0 = identical geometry, ~1.4 = unrelated).
    """
    from scipy.linalg import orthogonal_procrustes

    row_of = {item: i for i, item in enumerate(reference_ids)}
    mine = np.array([i for i, item in enumerate(ids) if item in row_of], dtype=np.int64)
    theirs = np.array([row_of[ids[i]] for i in mine], dtype=np.int64)
    if len(mine) == 0:
        return vectors, {"shared_items": 0, "alignment_error": float("inf")}
    x = np.asarray(vectors, dtype=np.float64)
    y = np.asarray(reference, dtype=np.float64)[theirs]
    rotation, _ = orthogonal_procrustes(x[mine], y)
    aligned = x @ rotation
    error = float(np.linalg.norm(aligned[mine] - y) / max(np.linalg.norm(y), 1e-12))
    return l2_normalize(aligned.astype(np.float32)), {"shared_items": int(len(mine)), "alignment_error": error}

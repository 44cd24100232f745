"""How good a space is, measured: kNN agreement with held-out co-interactions and with text semantics,
and whether it is still usable for residual quantisation (unit norm, not collapsed). Plain numpy + faiss.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def knn(vectors: np.ndarray, k: int) -> np.ndarray:
    """Exact inner-product k nearest neighbours of every row among the other rows (n x k indices).

    The row itself is removed by index, not by rank, so duplicate vectors cannot hide a neighbour.
    """
    import faiss

    x = np.ascontiguousarray(vectors, dtype=np.float32)
    n = x.shape[0]
    if k >= n:
        raise ValueError(f"k={k} needs more than {k} items, got {n}")
    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x)
    _, found = index.search(x, k + 1)
    out = np.empty((n, k), dtype=np.int64)
    for i in range(n):
        row = found[i][found[i] != i]
        out[i] = row[:k]
    return out


def pair_recall_at_k(neighbours: np.ndarray, queries: np.ndarray, targets: np.ndarray) -> float:
    """Fraction of (query, target) pairs whose target is among the query's neighbours."""
    queries = np.asarray(queries, dtype=np.int64)
    targets = np.asarray(targets, dtype=np.int64)
    if len(queries) == 0:
        return float("nan")
    return float((neighbours[queries] == targets[:, None]).any(axis=1).mean())


def label_agreement_at_k(neighbours: np.ndarray, labels: Sequence) -> float:
    """Mean share of an item's neighbours that carry its label (items without a label are skipped)."""
    codes, _uniques = _encode_labels(labels)
    has = codes >= 0
    if not has.any():
        return float("nan")
    same = codes[neighbours[has]] == codes[has][:, None]
    return float(same.mean())


def neighbour_overlap_at_k(a: np.ndarray, b: np.ndarray, rows: np.ndarray | None = None) -> float:
    """Mean |N_a(i) & N_b(i)| / k over ``rows`` (all by default): how much of one kNN graph the other keeps."""
    if rows is not None:
        a, b = a[rows], b[rows]
    if len(a) == 0:
        return float("nan")
    k = a.shape[1]
    hits = [len(np.intersect1d(x, y, assume_unique=False)) for x, y in zip(a, b)]
    return float(np.mean(hits) / k)


def mean_pairwise_cosine(vectors: np.ndarray) -> float:
    """Mean cosine over distinct pairs, exactly, in O(n d): (|sum|^2 - sum |x|^2) / (n (n - 1))."""
    x = np.asarray(vectors, dtype=np.float64)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    n = len(x)
    if n < 2:
        return float("nan")
    total = x.sum(axis=0)
    return float((total @ total - n) / (n * (n - 1)))


def effective_rank(vectors: np.ndarray) -> float:
    """exp(entropy) of the normalised singular values of the centred matrix (Roy & Vetterli 2007)."""
    x = np.asarray(vectors, dtype=np.float64)
    x = x - x.mean(axis=0, keepdims=True)
    s = np.linalg.svd(x, compute_uv=False)
    s = s[s > 1e-12]
    if len(s) == 0:
        return 0.0
    p = s / s.sum()
    return float(np.exp(-(p * np.log(p)).sum()))


def norm_deviation(vectors: np.ndarray) -> float:
    return float(np.abs(np.linalg.norm(np.asarray(vectors, dtype=np.float64), axis=1) - 1.0).max())


def space_report(
    vectors: np.ndarray,
    *,
    k: int,
    pair_queries: np.ndarray,
    pair_targets: np.ndarray,
    labels: Sequence,
    text_neighbours: np.ndarray,
    cold_rows: np.ndarray,
) -> dict[str, float]:
    """All metrics of one space; ``text_neighbours`` is the text space's kNN (the retention reference)."""
    nbrs = knn(vectors, k)
    return {
        f"heldout_pair_recall@{k}": pair_recall_at_k(nbrs, pair_queries, pair_targets),
        f"category_agreement@{k}": label_agreement_at_k(nbrs, labels),
        f"text_knn_overlap@{k}": neighbour_overlap_at_k(nbrs, text_neighbours),
        f"cold_text_knn_overlap@{k}": neighbour_overlap_at_k(nbrs, text_neighbours, cold_rows),
        "mean_pairwise_cosine": mean_pairwise_cosine(vectors),
        "effective_rank": effective_rank(vectors),
        "dim": int(vectors.shape[1]),
        "max_norm_deviation": norm_deviation(vectors),
    }


def _encode_labels(labels: Sequence) -> tuple[np.ndarray, list]:
    uniques: dict = {}
    codes = np.full(len(labels), -1, dtype=np.int64)
    for i, label in enumerate(labels):
        if label is None or label == "":
            continue
        codes[i] = uniques.setdefault(label, len(uniques))
    return codes, list(uniques)


def evaluate_spaces(
    spaces: dict[str, np.ndarray],
    *,
    k: int,
    pair_queries: np.ndarray,
    pair_targets: np.ndarray,
    labels: Sequence,
    cold_rows: np.ndarray,
) -> dict[str, dict[str, float]]:
    """:func:`space_report` for every space; the reference for retention is ``spaces["text"]``."""
    text_neighbours = knn(spaces["text"], k)
    return {
        name: space_report(
            vectors, k=k, pair_queries=pair_queries, pair_targets=pair_targets, labels=labels,
            text_neighbours=text_neighbours, cold_rows=cold_rows,
        )
        for name, vectors in spaces.items()
    }

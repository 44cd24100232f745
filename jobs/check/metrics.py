"""Plain-Python math of the SID quality metrics, callable without Spark.

Spark jobs (``jobs.check.transform``) reduce tables to small aggregates (code counts, bucket-size
histograms, entropy sums); these functions turn the aggregates into metrics.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import Any


def entropy(counts: Iterable[int]) -> float:
    """Shannon entropy (nats) of the distribution given by non-negative counts."""
    values = [c for c in counts if c > 0]
    total = sum(values)
    if total == 0:
        return 0.0
    return -sum(c / total * math.log(c / total) for c in values)


def perplexity(counts: Iterable[int]) -> float:
    """exp(entropy): the effective number of codes in use (K when usage is uniform over K codes)."""
    return math.exp(entropy(counts))


def gini(counts: Sequence[int], size: int | None = None) -> float:
    """Gini coefficient of code usage over ``size`` codes (unused codes count as zeros).

    0 = every code used equally often; (size-1)/size = one code takes everything.
    """
    size = max(size or 0, len(counts))
    values = sorted(list(counts) + [0] * (size - len(counts)))
    total = sum(values)
    if size == 0 or total == 0:
        return 0.0
    weighted = sum((i + 1) * v for i, v in enumerate(values))
    return 2.0 * weighted / (size * total) - (size + 1) / size


def category_information(n: int, sum_x: float, sum_y: float, sum_xy: float) -> dict[str, float]:
    """How much of labeling Y (the category) labeling X (the level-1 code) carries.

    Takes ``n`` and the sums of ``c * log(c)`` over the marginal counts of X, of Y and over the
    joint counts, which Spark computes as three aggregates: H(X) = log n - sum_x / n, and so on.

    - ``nmi``: normalized mutual information, arithmetic mean normalisation (scikit-learn's default);
      1.0 when both labelings are constant (nothing to disagree on), as scikit-learn does.
    - ``nmi_ceiling``: the highest NMI these marginals allow, 2 min(H(X), H(Y)) / (H(X) + H(Y)). A
      balanced 256-code level has H(X) = log 256, far above a category's entropy, so its NMI is capped
      well below 1 however pure its codes are; a level using 32 codes is capped much higher.
    - ``info_share``: I(X; Y) / H(Y), the share of the category's information the code carries
      (scikit-learn's homogeneity of the categories under the codes); comparable across code counts.
    """
    if n <= 0:
        return {"nmi": 0.0, "nmi_ceiling": 0.0, "info_share": 0.0}
    log_n = math.log(n)
    h_x = log_n - sum_x / n
    h_y = log_n - sum_y / n
    h_xy = log_n - sum_xy / n
    if h_x <= 1e-15 and h_y <= 1e-15:
        return {"nmi": 1.0, "nmi_ceiling": 1.0, "info_share": 1.0}
    mutual = max(h_x + h_y - h_xy, 0.0)
    denominator = (h_x + h_y) / 2.0
    return {
        "nmi": min(mutual / denominator, 1.0) if denominator > 0 else 0.0,
        "nmi_ceiling": min(h_x, h_y) / denominator if denominator > 0 else 0.0,
        "info_share": min(mutual / h_y, 1.0) if h_y > 1e-15 else 1.0,
    }


def labels_information(labels_x: Sequence[Hashable], labels_y: Sequence[Hashable]) -> dict[str, float]:
    """:func:`category_information` of two in-memory labelings (the twin of the Spark computation)."""
    if len(labels_x) != len(labels_y):
        raise ValueError(f"labelings differ in length: {len(labels_x)} vs {len(labels_y)}")

    def clogc(counter: Counter) -> float:
        return sum(c * math.log(c) for c in counter.values())

    return category_information(
        len(labels_x),
        clogc(Counter(labels_x)),
        clogc(Counter(labels_y)),
        clogc(Counter(zip(labels_x, labels_y))),
    )


def normalized_mutual_information(labels_a: Sequence[Hashable], labels_b: Sequence[Hashable]) -> float:
    """NMI of two labelings of the same items."""
    return labels_information(labels_a, labels_b)["nmi"]


def bucket_metrics(histogram: Mapping[int, int]) -> dict[str, Any]:
    """Collision metrics from a bucket-size histogram {bucket size: number of buckets of that size}.

    ``collision_rate``: share of items that share their key with at least one other item.
    ``duplicate_rate``: 1 - distinct keys / items (items that would need a new key to be unique).
    """
    items = sum(size * count for size, count in histogram.items())
    buckets = sum(histogram.values())
    colliding = sum(size * count for size, count in histogram.items() if size > 1)
    largest = max(histogram) if histogram else 0
    return {
        "items": items,
        "distinct": buckets,
        "colliding_items": colliding,
        "collision_rate": colliding / items if items else 0.0,
        "duplicate_rate": 1.0 - buckets / items if items else 0.0,
        "largest_bucket": largest,
        "largest_bucket_share": largest / items if items else 0.0,
    }


def level_usage_metrics(code_counts: Mapping[int, int], codebook_size: int | None) -> dict[str, Any]:
    """Utilisation, dead codes, perplexity and Gini of one level's code counts {code: items}."""
    used = sum(1 for c in code_counts.values() if c > 0)
    size = codebook_size or (max(code_counts) + 1 if code_counts else 0)
    counts = list(code_counts.values())
    return {
        "codebook_size": size,
        "used_codes": used,
        "dead_codes": max(size - used, 0),
        "utilisation": used / size if size else 0.0,
        "perplexity": perplexity(counts),
        "perplexity_ratio": perplexity(counts) / size if size else 0.0,
        "gini": gini(counts, size),
    }


def same_code_baseline(code_counts: Mapping[int, int]) -> float:
    """Chance that a random other item shares an item's code: the NN-preservation score of a
    codebook that ignores the embedding geometry, for comparison."""
    n = sum(code_counts.values())
    if n < 2:
        return 0.0
    return sum(c * (c - 1) for c in code_counts.values()) / (n * (n - 1))

"""Seeded k-means for one residual level, plain or balanced (capacity-constrained).

Balanced assignment is a pointwise rule ``argmin_k ||x - c_k||^2 + price_k``: the per-code prices are
found during training (raised on over-full codes until every code holds at most ``capacity`` points),
then frozen with the centroids. Encoding an item therefore needs no other item, so it runs per
partition in Spark, and the codes of an item never depend on which other items are in the batch.
"""

from __future__ import annotations

import numpy as np

_CHUNK = 8192
# margin by which exact_group_prices keeps each row's code ahead, relative to the group's cost spread
_EXACT_MARGIN = 1e-6


def pairwise_sq_dist(x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Squared L2 distances (n, K) in float64 (ties and sums stable across runs)."""
    x = np.asarray(x, dtype=np.float64)
    c = np.asarray(centroids, dtype=np.float64)
    d = (x * x).sum(1, keepdims=True) - 2.0 * (x @ c.T) + (c * c).sum(1)[None, :]
    return np.maximum(d, 0.0)


def assign(x: np.ndarray, centroids: np.ndarray, prices: np.ndarray | None = None) -> np.ndarray:
    """Nearest code (after prices) for every row, chunked so memory stays bounded."""
    out = np.empty(len(x), dtype=np.int32)
    for start in range(0, len(x), _CHUNK):
        d = pairwise_sq_dist(x[start : start + _CHUNK], centroids)
        if prices is not None:
            d += np.asarray(prices, dtype=np.float64)[None, :]
        out[start : start + _CHUNK] = d.argmin(1)
    return out


def balance_prices(dist: np.ndarray, capacity: int, *, prices: np.ndarray | None = None, max_rounds: int = 200) -> np.ndarray:
    """Raise per-code prices until no code is chosen by more than ``capacity`` rows.

    Each round, every over-full code in turn raises its price just enough (plus a small bid
    increment) to push out its excess rows (those with the smallest margin to their next choice).
    Prices only grow, so rows settle; the loop stops when every code is within capacity or after
    ``max_rounds`` (then the remaining excess is small).

    Every row's choice is kept equal to ``argmin(dist + prices)`` without recomputing the (n, K) sum
    each round: prices only rise, so a row's best code can change only when that code's own price
    rose, and a row that stays on a raised code keeps it unless its margin to the next code was
    within the raise. Only those few rows are re-evaluated (the same float sums, so the same prices
    as a full recomputation, 2x faster on 25k rows).
    """
    n, k = dist.shape
    _require_room(n, k, capacity)
    p = np.zeros(k) if prices is None else np.array(prices, dtype=np.float64)
    # bid increment (as in the auction algorithm): without it two full codes can pass a row back and
    # forth, each raising its price by a vanishing amount, and never settle
    step = 1e-3 * float(dist.std()) + 1e-12
    choice = (dist + p[None, :]).argmin(1)
    for _ in range(max_rounds):
        counts = np.bincount(choice, minlength=k)
        full = np.flatnonzero(counts > capacity)
        if len(full) == 0:
            break
        recheck = []
        # one over-full code at a time (Gauss-Seidel): raising all at once can trade rows back and
        # forth between two full codes whose prices then rise in lockstep and never settle
        for code in full[np.argsort(-counts[full], kind="stable")]:
            rows = np.flatnonzero(choice == code)  # rows pushed here earlier this round included
            excess = len(rows) - capacity
            if excess <= 0:
                continue
            cost = dist[rows] + p[None, :]
            own = cost[:, code].copy()
            cost[:, code] = np.inf
            second = cost.argmin(1)
            margin = cost[np.arange(len(rows)), second] - own
            order = np.argsort(margin, kind="stable")
            leave, stay = order[:excess], order[excess:]
            # the `excess` rows that lose least by moving leave
            raised_by = margin[order[excess - 1]] + step
            p[code] += raised_by
            choice[rows[leave]] = second[leave]
            # stayers whose margin the raise (about) used up may now prefer another code
            recheck.append(rows[stay[margin[stay] <= raised_by * (1 + 1e-9) + 1e-12]])
        rows = np.concatenate(recheck)
        choice[rows] = (dist[rows] + p[None, :]).argmin(1)
    return p


def _require_room(n: int, k: int, capacity: int) -> None:
    if capacity * k < n:
        raise ValueError(f"capacity {capacity} x {k} codes cannot hold {n} points")


def exact_group_prices(cost: np.ndarray, capacity: int, *, margin: float) -> np.ndarray | None:
    """Prices under which ``argmin(cost + prices)`` is a least-cost assignment of the rows that puts
    at most ``capacity`` on any code, each row's code ahead of every other by ``margin``; None when
    the rows are too alike for that (then only :func:`balance_prices`' auction can split them).

    The assignment is solved exactly (``linear_sum_assignment`` over ``capacity`` slots per code), and
    its prices are the smallest ones that make every row prefer its code: longest paths in the graph
    of "row i's code must cost at least ``margin`` more than code v's for i to stay" constraints. They
    are zero on codes with room left, as :func:`balance_prices`' are, and hold after rounding to
    float32 (the codebook stores them so): a group is a few rows, where the auction can bid for
    thousands of rounds, and this takes about 0.15 ms (the 2,682 groups of 25k items: 0.4 s).
    """
    from scipy.optimize import linear_sum_assignment

    m, k = cost.shape
    _require_room(m, k, capacity)
    slots = np.repeat(np.arange(k), capacity)
    _, columns = linear_sum_assignment(cost[:, slots])
    assigned = slots[columns]
    # gain[i, v]: how much code v's price must exceed code assigned[i]'s for row i to stay put
    gain = cost[np.arange(m), assigned][:, None] - cost + margin
    gain[np.arange(m), assigned] = -np.inf
    prices = np.zeros(k)
    for _ in range(m + 1):  # Bellman-Ford: a longest path visits each row's code at most once
        longer = np.maximum(0.0, (prices[assigned][:, None] + gain).max(0))
        if np.array_equal(longer, prices):
            break
        prices = longer
    else:
        return None  # a cycle of near-ties: no margin-separated prices exist
    if (prices[np.bincount(assigned, minlength=k) < capacity] > 0).any():
        return None
    stored = prices.astype(np.float32).astype(np.float64)
    if not np.array_equal((cost + stored[None, :]).argmin(1), assigned):
        return None
    return prices


def prefix_prices(
    residual: np.ndarray,
    cost: np.ndarray,
    prefixes: np.ndarray,
    *,
    capacity_slack: float = 1.0,
    max_rounds: int = 20000,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Capacity prices per (prefix, code): balance one level *inside* every prefix group.

    ``cost`` (n, K) is the level's pointwise cost (distance + global price) of each training row,
    ``prefixes`` (n, l) the codes of the levels above. In every prefix group of m distinct residuals,
    no code may be chosen by more than ``ceil(m / K * capacity_slack)`` of them (1 on small data), so
    items that share a prefix are spread over the level's codes instead of piling onto the few
    nearest ones. Rows with identical residuals count once (nothing pointwise can separate them).
    Each group is solved exactly (:func:`exact_group_prices`: the least-cost assignment and the
    smallest prices that reproduce it). Only a group whose rows are too alike for that goes to the
    auction (:func:`balance_prices`), which can take thousands of rounds on tight groups of
    near-duplicates. On 25k items, 1 group in 2,682 did.

    Returns ``(keys (m, l) int32, codes (m,) int32, values (m,) float64, choice (n,) int32)``: the
    sparse price table (sorted by prefix, then code; only groups that needed prices) and every row's
    code under it. Encoding adds ``values`` to the cost of ``codes`` for rows whose prefix is
    ``keys``, so it stays a function of the item alone.
    """
    n, k = cost.shape
    prefixes = np.asarray(prefixes, dtype=np.int32).reshape(n, -1)
    choice = cost.argmin(1).astype(np.int32)
    keys, codes, values = [], [], []
    if n == 0:
        return np.zeros((0, prefixes.shape[1]), np.int32), np.zeros(0, np.int32), np.zeros(0), choice
    _, inverse = np.unique(prefixes, axis=0, return_inverse=True)
    inverse = inverse.ravel()
    order = np.argsort(inverse, kind="stable")
    for rows in np.split(order, np.flatnonzero(np.diff(inverse[order])) + 1):  # groups in prefix order
        if len(rows) < 2:
            continue
        _, first = np.unique(residual[rows], axis=0, return_index=True)
        distinct = rows[np.sort(first)]
        capacity = max(1, int(np.ceil(len(distinct) / k * capacity_slack)))
        if np.bincount(choice[distinct], minlength=k).max() <= capacity:
            continue
        group_cost = cost[distinct]
        p = exact_group_prices(group_cost, capacity, margin=_EXACT_MARGIN * (float(group_cost.std()) + 1e-12))
        if p is None:
            p = balance_prices(group_cost, capacity, max_rounds=max_rounds)
        choice[rows] = (cost[rows] + p[None, :]).argmin(1)
        used = np.flatnonzero(p)
        keys.append(np.repeat(prefixes[rows[:1]], len(used), axis=0))
        codes.append(used.astype(np.int32))
        values.append(p[used])
    if not keys:
        return np.zeros((0, prefixes.shape[1]), np.int32), np.zeros(0, np.int32), np.zeros(0), choice
    return np.concatenate(keys), np.concatenate(codes), np.concatenate(values), choice


def kmeans_pp_init(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding (deterministic for a given generator)."""
    n = len(x)
    centers = np.empty((k, x.shape[1]), dtype=np.float64)
    first = int(rng.integers(n))
    centers[0] = x[first]
    closest = pairwise_sq_dist(x, centers[:1])[:, 0]
    for i in range(1, k):
        total = closest.sum()
        idx = int(rng.choice(n, p=closest / total)) if total > 0 else int(rng.integers(n))
        centers[i] = x[idx]
        closest = np.minimum(closest, pairwise_sq_dist(x, centers[i : i + 1])[:, 0])
    return centers


def faiss_kmeans(x: np.ndarray, k: int, *, seed: int, iters: int = 25) -> np.ndarray:
    """Plain k-means with faiss (single-threaded so the result does not depend on the core count)."""
    import faiss

    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        km = faiss.Kmeans(x.shape[1], k, niter=iters, seed=int(seed), verbose=False, min_points_per_centroid=1, max_points_per_centroid=1 << 30)
        km.train(np.ascontiguousarray(x, dtype=np.float32))
        return np.asarray(km.centroids, dtype=np.float64)
    finally:
        faiss.omp_set_num_threads(threads)


def fit_level(
    x: np.ndarray,
    k: int,
    *,
    seed: int,
    balanced: bool,
    iters: int = 25,
    capacity_slack: float = 1.0,
    inner_rounds: int = 50,
) -> tuple[np.ndarray, np.ndarray]:
    """Fit one level: faiss k-means init, then (if balanced) Lloyd steps under capacity prices.

    Returns ``(centroids (k, d) float64, prices (k,) float64)``; prices are zeros when unbalanced.
    Codes left empty are re-seeded from the points farthest from their centroid (dead-code restart).
    The price rounds between Lloyd steps are capped at ``inner_rounds`` (prices are warm-started, so
    they only need to follow the centroids); the final prices get the full ``balance_prices`` rounds.
    """
    x = np.asarray(x, dtype=np.float64)
    if len(x) < k:
        raise ValueError(f"need at least {k} training points for {k} codes, got {len(x)}")
    centroids = faiss_kmeans(x, k, seed=seed, iters=iters)
    prices = np.zeros(k)
    if not balanced:
        return _restart_dead(x, centroids, prices), prices
    capacity = max(1, int(np.ceil(len(x) / k * capacity_slack)))
    for _ in range(iters):
        dist = pairwise_sq_dist(x, centroids)
        prices = balance_prices(dist, capacity, prices=prices, max_rounds=inner_rounds)
        codes = (dist + prices[None, :]).argmin(1)
        new = _means(x, codes, k, centroids)
        if np.allclose(new, centroids, atol=1e-7):
            break
        centroids = new
    dist = pairwise_sq_dist(x, centroids)
    prices = balance_prices(dist, capacity, prices=prices)
    return _restart_dead(x, centroids, prices), prices


def _means(x: np.ndarray, codes: np.ndarray, k: int, previous: np.ndarray) -> np.ndarray:
    sums = np.zeros((k, x.shape[1]))
    np.add.at(sums, codes, x)
    counts = np.bincount(codes, minlength=k)
    out = previous.copy()
    used = counts > 0
    out[used] = sums[used] / counts[used, None]
    return out


def _restart_dead(x: np.ndarray, centroids: np.ndarray, prices: np.ndarray) -> np.ndarray:
    """Move codes nobody uses onto the worst-served points so every code can be chosen."""
    codes = assign(x, centroids, prices)
    dead = np.flatnonzero(np.bincount(codes, minlength=len(centroids)) == 0)
    return reseed_dead_codes(x, centroids, dead, ((x - centroids[codes]) ** 2).sum(1))


def reseed_dead_codes(points: np.ndarray, centroids: np.ndarray, dead: np.ndarray, error: np.ndarray) -> np.ndarray:
    """``centroids`` with each ``dead`` code moved onto one of the points worst served (largest
    ``error``, ties by position): a restarted code starts where the codebook fits the data least."""
    if len(dead) == 0:
        return centroids
    worst = np.argsort(-error, kind="stable")[: len(dead)]
    out = centroids.copy()
    out[dead[: len(worst)]] = points[worst]
    return out

"""Per-prefix capacity prices: they separate items that share a prefix, stay pointwise, and survive storage."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from tokenizer.codebook import Codebook
from tokenizer.kmeans import balance_prices, exact_group_prices, pairwise_sq_dist, prefix_prices
from tokenizer.metrics import collision_stats
from tokenizer.train import fit


def near_duplicates(groups=40, per_group=6, dim=16, noise=1e-2, seed=0) -> np.ndarray:
    """Tight groups of near-duplicates: a global residual codebook cannot tell their members apart."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(groups, dim))
    x = np.repeat(centers, per_group, axis=0) + rng.normal(size=(groups * per_group, dim)) * noise
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


SETTINGS = dict(levels=2, codebook_size=32, iters=5)


@pytest.fixture(scope="module")
def dups():
    return near_duplicates()


@pytest.fixture(scope="module")
def separated(dups):
    return fit(dups, 11, **SETTINGS)  # prefix_balance="last" is the default


def test_prefix_prices_separate_near_duplicates_plain_rq_collides_on(dups, separated):
    plain = fit(dups, 11, prefix_balance="off", **SETTINGS)
    assert collision_stats(plain.encode(dups))["collision_rate"] > 0.5
    assert collision_stats(separated.encode(dups))["colliding_items"] == 0
    # the first level is untouched by prefix prices: same centroids, prices and level-1 codes
    np.testing.assert_array_equal(plain.centroids[0], separated.centroids[0])
    np.testing.assert_array_equal(plain.encode(dups)[:, 0], separated.encode(dups)[:, 0])
    assert separated.prefix_prices[0] is None and len(separated.prefix_prices[1]) > 0
    assert separated.metrics["train_collisions"]["colliding_items"] == 0


def test_identical_items_count_once_and_do_not_block_the_others(dups):
    x = np.concatenate([dups, dups[:3]])  # three exact copies: nothing pointwise can split them
    cb = fit(x, 11, **SETTINGS)
    codes = cb.encode(x)
    np.testing.assert_array_equal(codes[-3:], codes[:3])
    # the copies collide with their originals; the auction still separates (almost) all the rest
    # (counted as one row each, they cannot make their group's capacity unreachable)
    assert collision_stats(codes)["colliding_items"] <= 6 + 4
    plain = fit(x, 11, prefix_balance="off", **SETTINGS)
    assert collision_stats(plain.encode(x))["colliding_items"] > 100


def test_encode_is_batch_independent(dups, separated):
    codes = separated.encode(dups)
    rng = np.random.default_rng(3)
    perm = rng.permutation(len(dups))
    np.testing.assert_array_equal(separated.encode(dups[perm]), codes[perm])
    np.testing.assert_array_equal(np.concatenate([separated.encode(dups[i : i + 1]) for i in range(0, len(dups), 17)]), codes[::17])
    np.testing.assert_array_equal(separated.encode(dups[perm[:5]]), codes[perm[:5]])


def test_level_costs_with_prefixes_reproduce_encode(dups, separated):
    codes = separated.encode(dups)
    r = separated.residuals(dups, 1)
    np.testing.assert_array_equal(separated.level_costs(r, 1, codes).argmin(1), codes[:, 1])
    # without prefixes the old signature still works (distance + global price only)
    assert separated.level_costs(r, 1).shape == (len(dups), 32)
    np.testing.assert_array_equal(separated.decode(codes), separated.quantize(dups))


def test_fixed_seed_gives_identical_prefix_tables(dups, separated):
    again = fit(dups, 11, **SETTINGS)
    assert again.codebook_id == separated.codebook_id
    for a, b in zip(again.prefix_prices[1:], separated.prefix_prices[1:]):
        np.testing.assert_array_equal(a.keys, b.keys)
        np.testing.assert_array_equal(a.values, b.values)


def test_save_load_roundtrip_keeps_tables_id_and_codes(dups, separated, tmp_path, assert_round_trip):
    separated.save(tmp_path / "meta")
    meta = json.loads((tmp_path / "meta" / "codebook.json").read_text())
    assert meta["format"] == "2" and meta["prefix_price_levels"] == [1]
    # the tables are part of the content hash: tampering with one is refused
    assert_round_trip(separated, dups, "prefix_1_prices.npy", separated.prefix_prices[1].values * 2)


def test_codebooks_without_tables_keep_format_1(dups, tmp_path):
    plain = fit(dups, 11, prefix_balance="off", **SETTINGS)
    assert plain.prefix_prices == () and "prefix_balance" not in plain.config
    plain.save(tmp_path)
    meta = json.loads((tmp_path / "codebook.json").read_text())
    assert meta["format"] == "1" and "prefix_price_levels" not in meta
    assert not list(tmp_path.glob("prefix_*"))
    with pytest.raises(ValueError, match="prefix_balance"):
        fit(dups, 11, prefix_balance="sometimes", **SETTINGS)


def test_prefix_prices_respect_capacity_inside_every_prefix():
    rng = np.random.default_rng(5)
    r = rng.normal(size=(60, 4))
    centroids = rng.normal(size=(8, 4)) * 0.1  # every row's nearest code is one of few
    cost = pairwise_sq_dist(r, centroids)
    prefixes = np.repeat(np.arange(3), 20)[:, None]  # three prefix groups of 20 rows, 8 codes: capacity 3
    keys, codes, values, choice = prefix_prices(r, cost, prefixes)
    for g in range(3):
        assert np.bincount(choice[prefixes[:, 0] == g], minlength=8).max() <= 3
    # the sparse table applied row by row gives the same choice
    extra = np.zeros_like(cost)
    for k, c, v in zip(keys[:, 0], codes, values):
        extra[prefixes[:, 0] == k, c] += v
    np.testing.assert_array_equal((cost + extra).argmin(1), choice)


def _least_total_cost(cost: np.ndarray, capacity: int) -> float:
    """Brute force over every assignment of the rows to codes that respects the capacity."""
    m, k = cost.shape
    best = np.inf
    for assignment in itertools.product(range(k), repeat=m):
        if np.bincount(assignment, minlength=k).max() <= capacity:
            best = min(best, cost[np.arange(m), assignment].sum())
    return best


@pytest.mark.parametrize("capacity", [1, 2])
def test_exact_group_prices_reproduce_a_least_cost_assignment_with_the_smallest_prices(capacity):
    rng = np.random.default_rng(3)
    solved = 0
    for _ in range(60):
        k = 4
        m = int(rng.integers(2, min(6, k * capacity + 1)))
        cost = pairwise_sq_dist(rng.normal(size=(m, 3)) * 0.3, rng.normal(size=(k, 3)))
        margin = 1e-6
        prices = exact_group_prices(cost, capacity, margin=margin)
        if prices is None:
            continue
        solved += 1
        choice = (cost + prices.astype(np.float32)).argmin(1)
        counts = np.bincount(choice, minlength=k)
        assert counts.max() <= capacity
        assert cost[np.arange(m), choice].sum() == pytest.approx(_least_total_cost(cost, capacity), abs=1e-9)
        # every row ahead of its other codes by the margin; prices only on full codes, never negative
        total = cost + prices
        others = np.where(np.arange(k)[None, :] == choice[:, None], np.inf, total)
        assert (others.min(1) - total[np.arange(m), choice] >= margin * (1 - 1e-6)).all()
        assert (prices >= 0).all() and (prices[counts < capacity] == 0).all()
        # the smallest such prices: lowering any positive price lets some row leave its code
        for code in np.flatnonzero(prices):
            lower = prices.copy()
            lower[code] -= 2 * margin
            assert ((cost + lower).argmin(1) != choice).any() or (lower[code] < 0)
    assert solved >= 50


def test_rows_too_alike_for_the_margin_go_to_the_auction():
    rng = np.random.default_rng(4)
    row = pairwise_sq_dist(rng.normal(size=(1, 3)), rng.normal(size=(6, 3)))
    cost = np.concatenate([row, row + 1e-9 * rng.random(row.shape)])  # preferences apart by < the margin
    assert exact_group_prices(cost, 1, margin=1e-6) is None
    _, _, _, choice = prefix_prices(rng.normal(size=(2, 3)), cost, np.zeros((2, 1), np.int32))
    np.testing.assert_array_equal(choice, (cost + balance_prices(cost, 1, max_rounds=20000)).argmin(1))


@pytest.mark.parametrize("solve", [exact_group_prices, balance_prices])
def test_more_rows_than_the_codes_can_hold_is_refused(solve):
    cost = np.random.default_rng(6).random((9, 4))  # 9 rows, 4 codes of capacity 2
    kwargs = {"margin": 1e-6} if solve is exact_group_prices else {}
    with pytest.raises(ValueError, match="capacity 2 x 4 codes cannot hold 9 points"):
        solve(cost, 2, **kwargs)


def test_rqvae_exports_prefix_prices(dups):
    settings = dict(levels=2, codebook_size=16, latent_dim=8, hidden=(32,), epochs=3, batch_size=128)
    cb = fit(dups, 5, method="rqvae", **settings)
    off = fit(dups, 5, method="rqvae", prefix_balance="off", **settings)
    codes = cb.encode(dups)
    assert collision_stats(codes)["colliding_items"] <= collision_stats(off.encode(dups))["colliding_items"]
    np.testing.assert_array_equal(cb.encode(dups[::-1]), codes[::-1])
    np.testing.assert_array_equal(cb.decode(codes), cb.quantize(dups))

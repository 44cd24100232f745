"""The tokenizer contract: fit / encode / decode, determinism, balance, bad input, artifact round trip."""

from __future__ import annotations

import numpy as np
import pytest

from tokenizer.errors import CodebookMismatch, EmbeddingError
from tokenizer.kmeans import balance_prices, pairwise_sq_dist
from tokenizer.metrics import colliding_mask, collision_stats, level_usage
from tokenizer.train import fit


def clustered(n=480, dim=16, clusters=12, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(clusters, dim)) * 3
    x = centers[rng.integers(clusters, size=n)] + rng.normal(size=(n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def data():
    return clustered()


@pytest.fixture(scope="module")
def rq(data):
    return fit(data, 7, levels=3, codebook_size=16, iters=5, space={"space": "text", "model_fingerprint": "m1"})


def test_decode_of_encode_is_the_quantized_vector(rq, data):
    codes = rq.encode(data)
    assert codes.shape == (len(data), 3) and codes.dtype == np.int32
    q = rq.decode(codes)
    np.testing.assert_array_equal(q, rq.quantize(data))
    # quantization is lossy but closer than the mean vector
    err = ((data - q) ** 2).sum(1).mean()
    assert err < ((data - data.mean(0)) ** 2).sum(1).mean() * 0.5
    # residual levels add up: decode equals the sum of the chosen centroids
    manual = sum(rq.centroids[lv][codes[:, lv]].astype(np.float64) for lv in range(3))
    np.testing.assert_allclose(q, manual, rtol=1e-6)


def test_fixed_seed_gives_identical_codes_and_id(rq, data):
    again = fit(data, 7, levels=3, codebook_size=16, iters=5, space={"space": "text", "model_fingerprint": "m1"})
    assert again.codebook_id == rq.codebook_id
    np.testing.assert_array_equal(again.encode(data), rq.encode(data))
    other = fit(data, 8, levels=3, codebook_size=16, iters=5, space={"space": "text", "model_fingerprint": "m1"})
    assert other.codebook_id != rq.codebook_id


def test_balanced_levels_use_codes_evenly(data):
    plain = fit(data, 3, levels=2, codebook_size=32, balanced=False)
    balanced = fit(data, 3, levels=2, codebook_size=32, balanced=True)
    p_use = level_usage(plain.encode(data), 32)[0]
    b_use = level_usage(balanced.encode(data), 32)[0]
    # capacity ceil(480/32)=15 is met up to the small excess left when price rounds stop
    assert b_use["max_count"] <= 18 < p_use["max_count"]
    assert b_use["perplexity"] > p_use["perplexity"]
    assert b_use["used"] == 32


def test_balance_prices_respect_capacity():
    rng = np.random.default_rng(1)
    dist = pairwise_sq_dist(rng.normal(size=(200, 4)), rng.normal(size=(10, 4)))
    p = balance_prices(dist, 20, max_rounds=1000)
    counts = np.bincount((dist + p).argmin(1), minlength=10)
    assert counts.max() <= 20 and counts.sum() == 200


def _prices_recomputing_every_choice(dist, capacity, prices, max_rounds):
    """balance_prices as its docstring states it, with argmin(dist + prices) recomputed for all rows
    each round: the incrementally tracked choices must give exactly these prices."""
    k = dist.shape[1]
    p, step = prices.copy(), 1e-3 * float(dist.std()) + 1e-12
    for _ in range(max_rounds):
        choice = (dist + p[None, :]).argmin(1)
        counts = np.bincount(choice, minlength=k)
        over = np.flatnonzero(counts > capacity)
        if len(over) == 0:
            break
        for code in over[np.argsort(-counts[over], kind="stable")]:
            members = np.flatnonzero(choice == code)
            cost = dist[members] + p[None, :]
            own = cost[:, code].copy()
            cost[:, code] = np.inf
            nxt = cost.argmin(1)
            gap = cost[np.arange(len(members)), nxt] - own
            ranked = np.argsort(gap, kind="stable")[: len(members) - capacity]
            p[code] += gap[ranked[-1]] + step
            choice[members[ranked]] = nxt[ranked]
    return p


@pytest.mark.parametrize("ties", [False, True])
def test_balance_prices_track_choices_exactly(ties):
    rng = np.random.default_rng(7)
    for trial in range(40):
        # small groups and larger sets alike
        n, k = int(rng.integers(20, 400) if trial % 4 < 2 else rng.integers(600, 1500)), int(rng.integers(4, 32))
        dist = pairwise_sq_dist(rng.normal(size=(n, 3)) * rng.uniform(0.2, 3, size=(n, 1)), rng.normal(size=(k, 3)))
        if ties:
            dist = np.round(dist, 1)
        capacity = int(np.ceil(n / k * rng.choice([1.0, 1.1])))
        warm = rng.uniform(0, 0.5, size=k) * (trial % 2)
        expected = _prices_recomputing_every_choice(dist, capacity, warm, 300)
        np.testing.assert_array_equal(balance_prices(dist, capacity, prices=warm, max_rounds=300), expected)


def test_save_load_roundtrip_is_byte_identical(rq, data, assert_round_trip):
    assert_round_trip(rq, data, "centroids.npy", rq.centroids + 1)


def test_bad_embeddings_name_the_items(rq, data):
    bad = data[:5].copy()
    bad[3, 0] = np.nan
    with pytest.raises(EmbeddingError, match="item-3"):
        rq.encode(bad, [f"item-{i}" for i in range(5)])
    ragged = [list(v) for v in data[:4]] + [list(data[4][:-1])]
    with pytest.raises(EmbeddingError, match="wrong dimension.*item-4"):
        rq.encode(ragged, [f"item-{i}" for i in range(5)])
    with pytest.raises(EmbeddingError, match="dimension 8, expected 16"):
        rq.encode(np.zeros((3, 8), np.float32))


def test_codebook_refuses_another_space(rq):
    rq.check_space(dim=16, model_fingerprint="m1", space="text")
    with pytest.raises(CodebookMismatch, match="fingerprint"):
        rq.check_space(dim=16, model_fingerprint="m2")
    with pytest.raises(CodebookMismatch, match="dimension"):
        rq.check_space(dim=32, model_fingerprint="m1")


def test_rqvae_contract_and_determinism(data):
    settings = dict(levels=2, codebook_size=16, latent_dim=8, hidden=(32,), epochs=5, batch_size=128)
    data = data[:256]
    a = fit(data, 5, method="rqvae", **settings)
    b = fit(data, 5, method="rqvae", **settings)
    assert a.method == "rqvae" and a.codebook_id == b.codebook_id
    codes = a.encode(data)
    np.testing.assert_array_equal(codes, b.encode(data))
    np.testing.assert_array_equal(a.decode(codes), a.quantize(data))
    assert a.decode(codes).shape == data.shape
    m = a.metrics
    assert m["train_levels"][0]["used"] >= 12  # k-means init + restart + balancing keep codes alive
    assert m["loss_history"] and m["final_loss"]["recon"] < m["loss_history"][0]["recon"]


def skewed(n=480, dim=16, seed=0) -> np.ndarray:
    """70% of the points in one tight cluster: nearest-code training lets codes there die."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(12, dim)) * 3
    label = np.where(rng.uniform(size=n) < 0.7, 0, rng.integers(12, size=n))
    x = centers[label] + rng.normal(size=(n, dim)) * 0.3
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_sinkhorn_codes_spread_a_batch_that_prefers_one_code_and_keep_a_balanced_choice():
    import torch

    from tokenizer.rqvae import sinkhorn_codes

    rng = np.random.default_rng(0)
    dist = rng.uniform(size=(64, 8))
    dist[:, 0] -= 5  # every row's nearest code is 0
    counts = np.bincount(sinkhorn_codes(torch.tensor(dist), epsilon=0.01, iters=30).numpy(), minlength=8)
    assert counts.max() <= 10 and counts.min() >= 6  # 8 each when exact
    near = rng.uniform(1, 2, size=(64, 8))
    near[np.arange(64), np.arange(64) % 8] = 0  # nearest codes already balanced: nothing to move
    np.testing.assert_array_equal(sinkhorn_codes(torch.tensor(near), epsilon=0.01, iters=30).numpy(), np.arange(64) % 8)


def test_balanced_rqvae_keeps_every_code_in_use_in_every_epoch():
    settings = dict(levels=2, codebook_size=16, latent_dim=8, hidden=(32,), epochs=4, batch_size=128)
    x = skewed()
    balanced = fit(x, 5, method="rqvae", **settings).metrics["loss_history"]
    plain = fit(x, 5, method="rqvae", balanced=False, **settings).metrics["loss_history"]
    assert len(balanced) == 4 and all(h["codes_used"] == [16, 16] for h in balanced)
    assert min(min(h["codes_used"]) for h in plain) < 16  # the data is hard enough to lose codes


def test_metrics():
    codes = np.array([[0, 1], [0, 1], [1, 2], [2, 3]])
    s = collision_stats(codes)
    assert s["colliding_items"] == 2 and s["max_bucket"] == 2 and s["distinct"] == 3
    assert colliding_mask(codes).tolist() == [True, True, False, False]
    u = level_usage(codes, 4)
    assert u[0]["used"] == 3 and u[1]["used"] == 3

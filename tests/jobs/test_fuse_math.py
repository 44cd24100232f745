"""Plain-Python core of the fuse stage: PPMI-SVD, the spaces, the contrastive fusion and the metrics."""

from __future__ import annotations

import numpy as np
import pytest

from jobs.common.config import ConfigError
from jobs.common.pipeline_config import PipelineConfig
from jobs.fuse.collab import l2_normalize, ppmi_svd
from jobs.fuse.config import FuseConfig
from jobs.fuse.fusion import FusionWeights, build_space, collaborative_space, fit_cold_map, train_contrastive
from jobs.fuse.metrics import (
    effective_rank,
    knn,
    label_agreement_at_k,
    mean_pairwise_cosine,
    neighbour_overlap_at_k,
    pair_recall_at_k,
)


def clique_triplets(groups: list[list[int]]):
    rows, cols, counts = [], [], []
    for g in groups:
        for a in g:
            for b in g:
                if a != b:
                    rows.append(a), cols.append(b), counts.append(3)
    return np.array(rows), np.array(cols), np.array(counts)


def test_ppmi_svd_separates_co_occurrence_cliques_and_is_deterministic():
    groups = [list(range(0, 6)), list(range(6, 12)), list(range(12, 18))]
    rows, cols, counts = clique_triplets(groups)
    vectors = ppmi_svd(rows, cols, counts, 18, dim=4, seed=3)
    assert vectors.shape == (18, 4)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)
    nbrs = knn(vectors, 5)
    for g in groups:
        for item in g:
            assert set(nbrs[item]) == set(g) - {item}
    # Same triplets in another order: byte-identical vectors.
    perm = np.random.default_rng(0).permutation(len(rows))
    again = ppmi_svd(rows[perm], cols[perm], counts[perm], 18, dim=4, seed=3)
    assert again.tobytes() == vectors.tobytes()


def test_knn_skips_self_even_with_duplicate_vectors():
    x = l2_normalize(np.array([[1, 0], [1, 0], [0, 1], [0.9, 0.1]], dtype=np.float32))
    nbrs = knn(x, 2)
    assert all(i not in nbrs[i] for i in range(4))
    assert nbrs[0][0] == 1 and nbrs[1][0] == 0


def test_metrics_on_a_case_with_a_known_answer():
    neighbours = np.array([[1, 2], [0, 2], [0, 1], [2, 1]])
    # Pairs (0->1) hit, (0->3) miss, (3->2) hit: recall 2/3.
    assert pair_recall_at_k(neighbours, np.array([0, 0, 3]), np.array([1, 3, 2])) == pytest.approx(2 / 3)
    # Labels a, a, b, None: item 0 has 1/2 same-label neighbours, item 1 1/2, item 2 0/2; item 3 skipped.
    assert label_agreement_at_k(neighbours, ["a", "a", "b", None]) == pytest.approx(1 / 3)
    other = np.array([[1, 3], [0, 2], [3, 0], [0, 1]])
    assert neighbour_overlap_at_k(neighbours, other) == pytest.approx((1 + 2 + 1 + 1) / 8)
    assert neighbour_overlap_at_k(neighbours, other, rows=np.array([1])) == pytest.approx(1.0)


def test_collapse_metrics_tell_collapsed_from_spread_spaces():
    eye = np.eye(8, dtype=np.float32)
    assert mean_pairwise_cosine(eye) == pytest.approx(0.0, abs=1e-9)
    assert mean_pairwise_cosine(np.ones((5, 3))) == pytest.approx(1.0)
    spread = l2_normalize(np.random.default_rng(1).standard_normal((400, 16)))
    collapsed = l2_normalize(np.outer(np.ones(400), np.arange(1, 17)) + 0.01 * spread)
    assert effective_rank(spread) > 14
    assert effective_rank(collapsed) < effective_rank(spread)
    assert mean_pairwise_cosine(collapsed) > 0.99


def _synthetic(n=240, d_text=32, n_groups=12, seed=0):
    """Text vectors carry one structure (topics); interactions another (groups crossing topics)."""
    rng = np.random.default_rng(seed)
    text = l2_normalize(rng.standard_normal((n, d_text)))
    group = np.arange(n) % n_groups
    pairs = [(a, b) for a in range(n) for b in range(a + 1, n) if group[a] == group[b]]
    a, b = map(np.array, zip(*pairs))
    return text, group, a, b


def _fit(text, a, b, has, *, seed=5, steps=60):
    n = len(text)
    rows = np.concatenate([a, b])
    cols = np.concatenate([b, a])
    collab = np.zeros((n, 8), dtype=np.float32)
    warm = np.flatnonzero(has)
    keep = has[rows] & has[cols]
    collab_warm = ppmi_svd(np.searchsorted(warm, rows[keep]), np.searchsorted(warm, cols[keep]),
                           np.ones(keep.sum()), len(warm), dim=8, seed=seed)
    collab[warm] = collab_warm
    cold_map = fit_cold_map(text[has], collab[has], ridge=1.0)
    c_space = collaborative_space(text, collab, has, cold_map)
    pick = has[a] & has[b]
    weights = train_contrastive(text, c_space, a[pick], b[pick], np.ones(pick.sum()), cold_map=cold_map, seed=seed,
                                steps=steps, batch_size=64, temperature=0.1, retention_weight=1.0, learning_rate=5e-3,
                                threads=1)
    return collab, weights


def test_contrastive_fusion_beats_text_and_keeps_cold_items_in_their_text_neighbourhood():
    text, group, a, b = _synthetic()
    has = np.ones(len(text), dtype=bool)
    has[-24:] = False  # cold items: no interactions at all
    collab, weights = _fit(text, a, b, has)
    fused = build_space("fused", text, collab, has, weights)
    np.testing.assert_allclose(np.linalg.norm(fused, axis=1), 1.0, atol=1e-5)

    # Held-out pairs: co-interactions among warm items of the same group.
    warm = np.flatnonzero(has)
    q = warm[:60]
    t = np.array([warm[(np.flatnonzero(group[warm] == group[i]) + 0)[-1]] for i in q])
    ok = q != t
    text_recall = pair_recall_at_k(knn(text, 10), q[ok], t[ok])
    fused_recall = pair_recall_at_k(knn(fused, 10), q[ok], t[ok])
    assert fused_recall > text_recall + 0.2

    # A cold item's fused vector depends on its text only (its collaborative row is ignored) ...
    poisoned = collab.copy()
    poisoned[~has] = 123.0
    np.testing.assert_array_equal(build_space("fused", text, poisoned, has, weights)[~has], fused[~has])
    # ... and it keeps much more of its text neighbourhood than a random placement would (10/240).
    cold = np.flatnonzero(~has)
    assert neighbour_overlap_at_k(knn(fused, 10), knn(text, 10), rows=cold) > 0.3
    assert mean_pairwise_cosine(fused) < 0.2


def test_untrained_fusion_is_the_text_space_and_training_is_seeded():
    text, _, a, b = _synthetic(n=120)
    has = np.ones(len(text), dtype=bool)
    zero = FusionWeights(cold_map=np.zeros((32, 8), np.float32), text_residual=np.zeros((32, 32), np.float32),
                         collab_proj=np.zeros((8, 32), np.float32))
    np.testing.assert_allclose(build_space("fused", text, np.zeros((120, 8)), has, zero), text, atol=1e-6)
    _, w1 = _fit(text, a, b, has, seed=9, steps=15)
    _, w2 = _fit(text, a, b, has, seed=9, steps=15)
    _, w3 = _fit(text, a, b, has, seed=10, steps=15)
    for key, value in w1.to_arrays().items():
        assert value.tobytes() == w2.to_arrays()[key].tobytes(), key
    assert w1.text_residual.tobytes() != w3.text_residual.tobytes()


def test_concat_and_collaborative_spaces():
    rng = np.random.default_rng(2)
    text = l2_normalize(rng.standard_normal((6, 4)))
    collab = l2_normalize(rng.standard_normal((6, 3)))
    has = np.array([True, True, True, True, False, False])
    cold_map = fit_cold_map(text[has], collab[has], ridge=0.1)
    weights = FusionWeights(cold_map=cold_map)
    c_space = build_space("collaborative", text, collab, has, weights)
    np.testing.assert_array_equal(c_space[has], collab[has])
    np.testing.assert_allclose(c_space[~has], l2_normalize(text[~has] @ cold_map), atol=1e-6)
    concat = build_space("concat", text, collab, has, weights)
    np.testing.assert_allclose(concat, np.hstack([text, c_space]) / np.sqrt(2), atol=1e-6)
    np.testing.assert_array_equal(build_space("fused", text, collab, has, weights, fusion="concat"), concat)
    with pytest.raises(ValueError, match="not trained"):
        build_space("fused", text, collab, has, weights)


def test_config_defaults_and_validation():
    cfg = PipelineConfig.load(overrides={"fuse": {"space": "collaborative", "window": 3}}).fuse
    assert (cfg.space, cfg.window, cfg.fusion) == ("collaborative", 3, "contrastive")
    assert FuseConfig().space == "fused"
    with pytest.raises(ConfigError, match="space"):
        FuseConfig.from_mapping({"space": "both"})
    with pytest.raises(ConfigError, match="windw"):
        FuseConfig.from_mapping({"windw": 3})
    with pytest.raises(ConfigError, match="eval_k"):
        FuseConfig.from_mapping({"eval_k": 50, "eval_max_items": 20})
    with pytest.raises(ConfigError, match="temperature"):
        FuseConfig.from_mapping({"temperature": 0})
    assert FuseConfig(window=3).config_hash() != FuseConfig(window=4).config_hash()


def test_procrustes_recovers_a_rotated_basis_and_reports_the_fit():
    from scipy.stats import ortho_group

    from jobs.fuse.collab import procrustes_align

    rng = np.random.default_rng(5)
    reference = l2_normalize(rng.normal(size=(40, 8)).astype(np.float32))
    ids = np.array([f"i{k:02d}" for k in range(40)])
    rotation = ortho_group.rvs(8, random_state=3).astype(np.float32)
    # the new fit: same geometry in another basis, 5 items dropped and 3 new ones
    new_ids = np.concatenate([ids[5:], ["n0", "n1", "n2"]])
    new = np.vstack([reference[5:] @ rotation, l2_normalize(rng.normal(size=(3, 8)).astype(np.float32))])
    aligned, fit = procrustes_align(new, new_ids, reference, ids)
    assert fit["shared_items"] == 35 and fit["alignment_error"] < 1e-5
    np.testing.assert_allclose(aligned[:35], reference[5:], atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(aligned, axis=1), 1.0, atol=1e-6)
    # unrelated geometry: large residual, so the stage refits instead of reusing
    _, unrelated = procrustes_align(l2_normalize(rng.normal(size=(35, 8)).astype(np.float32)), ids[5:], reference, ids)
    assert unrelated["alignment_error"] > 0.8
    _, none_shared = procrustes_align(new[35:], new_ids[35:], reference, ids)
    assert none_shared["shared_items"] == 0


def test_fusion_model_round_trips_with_deterministic_bytes(tmp_path):
    from jobs.fuse.model import FusionModel

    rng = np.random.default_rng(0)
    weights = FusionWeights(cold_map=rng.normal(size=(6, 4)).astype(np.float32),
                            text_residual=rng.normal(size=(6, 6)).astype(np.float32),
                            collab_proj=rng.normal(size=(4, 6)).astype(np.float32),
                            center=rng.normal(size=6).astype(np.float32))
    model = FusionModel(weights=weights, fingerprint="t|c|fuse", text_fingerprint="t", space="fused",
                        fusion="contrastive", fitted_in="2026-11-01")
    model.save(tmp_path / "a")
    model.save(tmp_path / "b")
    loaded = FusionModel.load(tmp_path / "a")
    assert loaded.fingerprint == "t|c|fuse" and loaded.fitted_in == "2026-11-01"
    for name, array in weights.to_arrays().items():
        np.testing.assert_array_equal(loaded.weights.to_arrays()[name], array)
        assert (tmp_path / "a" / f"{name}.npy").read_bytes() == (tmp_path / "b" / f"{name}.npy").read_bytes()
    assert FusionModel.load(tmp_path / "missing") is None

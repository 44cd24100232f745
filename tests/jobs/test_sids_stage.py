"""Codebook + sids stages end to end on a real slice of the sample (real Spark, real MiniLM)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from test_sids_fixtures import sample_items, write_inputs

from jobs.common.layout import RunLayout
from jobs.common.pipeline_config import PipelineConfig
from jobs.common.stage import Inputs, StageContext
from tokenizer.errors import CodebookMismatch, EmbeddingError
from tokenizer.render import TokenFormat
from tokenizer.trie import lookup

pytestmark = pytest.mark.spark

SMALL = {"codebook": {"levels": 3, "codebook_size": 32, "kmeans_iters": 5}}


def make_ctx(spark, run_dir: Path, *, overrides=None, previous=None) -> StageContext:
    from jobs.common.pipeline_config import deep_merge

    cfg = PipelineConfig.load(overrides=deep_merge(SMALL, overrides or {}))
    return StageContext(spark=spark, layout=RunLayout(run_dir), config=cfg, inputs=Inputs("", ""), snapshot_id="s1",
                        cache_dir=run_dir / "_cache", previous_version=previous)


def run_both(ctx):
    from jobs.codebook.main import run as run_codebook
    from jobs.sids.main import run as run_sids

    return run_codebook(ctx), run_sids(ctx)


def read_sids(layout) -> list[dict]:
    return pq.read_table(layout.sids).sort_by("item_id").to_pylist()


def check_stage_outputs(ctx, cb_result, result, method):
    """Every item one SID, fixed length, injective, parseable; artifacts consistent with the table."""
    sids = read_sids(ctx.layout)
    assert len(sids) == 300 == result.counts["items"]
    assert len({tuple(r["sid"]) for r in sids}) == 300
    assert len({len(r["sid"]) for r in sids}) == 1
    assert {r["codebook_id"] for r in sids} == {cb_result.metrics["codebook_id"]}
    fmt = TokenFormat(hybrid=method == "hybrid")
    assert all(fmt.parse(r["sid_tokens"], length=len(r["sid"])) == list(r["sid"]) for r in sids)
    art = ctx.layout.sid_artifacts
    trie = json.loads((art / "sid_trie.json").read_text())
    some = sids[7]
    assert lookup(trie, [fmt.token(i, c, length=len(some["sid"])) for i, c in enumerate(some["sid"])]) == some["item_id"]
    tokens = set(json.loads((art / "special_tokens.json").read_text())["tokens"])
    assert all(t in tokens for r in sids for t in TokenFormat(hybrid=method == "hybrid").render(r["sid"]).replace("><", ">\n<").split("\n"))
    glossary = json.loads((art / "glossary.json").read_text())
    level1 = [e for e in glossary["prefixes"].values() if e["level"] == 1]
    assert sum(e["item_count"] for e in level1) == 300
    assert all(e["example_titles"] for e in level1)
    # some sample items have no category path, so a small group may have none as its dominant path
    assert sum(bool(e["category_path"]) for e in level1) >= 0.8 * len(level1)
    assert glossary == plain_glossary(ctx, sids, glossary["codebook_id"])
    m = result.metrics
    assert m["raw_colliding_items"] >= 0 and m["level1_used"] <= 32
    if method == "hybrid":
        items = json.loads((art / "item_tokens.json").read_text())["item_tokens"]
        assert sorted(items.values()) == sorted(r["item_id"] for r in sids)
    if method == "reassign":
        # colliding items moved to free last-level codes: resolution says so, prefix unchanged
        moved = [r for r in sids if r["resolution"] == "reassigned"]
        assert all(list(r["sid"][:2]) == list(r["codes"][:2]) and r["sid"][2] != r["codes"][2] for r in moved)
        assert m["raw_colliding_items"] == 0 or moved


def plain_glossary(ctx, sids: list[dict], codebook_id: str) -> dict:
    """The glossary of the same SIDs and catalog by the plain-Python aggregates (every term kept)."""
    import pandas as pd

    from tokenizer.glossary import aggregates_from_items, build_glossary

    cfg = ctx.config.sids
    catalog = pq.read_table(ctx.layout.catalog, columns=["item_id", "title", "category_path"]).to_pandas()
    items = pd.DataFrame(sids)[["item_id", "sid"]].merge(catalog, on="item_id", how="left")
    glossary = build_glossary(aggregates_from_items(items, prefix_levels=(1, 2), examples=cfg.glossary_examples),
                              render_prefix=TokenFormat().render, top_terms=cfg.glossary_top_terms)
    return json.loads(json.dumps({**glossary, "codebook_id": codebook_id}))


def test_rerun_is_byte_identical_and_frozen_rerun_keeps_sids(spark, tmp_path):
    rows, emb = sample_items()
    first = make_ctx(spark, tmp_path / "v1")
    write_inputs(spark, first.layout, rows[:300], emb[:300])
    check_stage_outputs(first, *run_both(first), "reassign")
    again = make_ctx(spark, tmp_path / "v1b")
    write_inputs(spark, again.layout, rows[:300], emb[:300])
    run_both(again)
    files = lambda d: {p.relative_to(d): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file() and not p.name.startswith((".", "_"))}
    assert files(first.layout.sids) == files(again.layout.sids)
    assert files(first.layout.codebook) == files(again.layout.codebook)
    assert files(first.layout.sid_artifacts) == files(again.layout.sid_artifacts)

    # next snapshot: 20 items removed, 100 new; frozen codebook reused, unchanged items keep SIDs
    nxt = make_ctx(spark, tmp_path / "v2", previous=tmp_path / "v1", overrides={"codebook": {"max_new_item_share": 0.5, "max_recon_error_ratio": 3.0, "max_frozen_collision_rate": 1.0}})
    write_inputs(spark, nxt.layout, rows[20:400], emb[20:400])
    cb_result, result = run_both(nxt)
    assert cb_result.metrics["decision"] == "reuse", cb_result.metrics["reason"]
    old = {r["item_id"]: r["sid"] for r in read_sids(first.layout)}
    new = read_sids(nxt.layout)
    assert all(r["sid"] == old[r["item_id"]] for r in new if r["item_id"] in old)
    retired = json.loads((nxt.layout.sid_artifacts / "retired.json").read_text())["retired"]
    assert sorted(r["item_id"] for r in retired) == sorted(str(i) for i in range(20))
    retired_sids = {tuple(r["sid"]) for r in retired}
    assert not retired_sids & {tuple(r["sid"]) for r in new}
    assert len({tuple(r["sid"]) for r in new}) == len(new) == 380
    churn = result.metrics["churn"]
    assert churn == {**churn, "kept": 280, "changed": 0, "new": 100, "removed": 20}


def test_hybrid_stage(spark, tmp_path):
    rows, emb = sample_items()
    # few glossary terms: the Spark-side cut to the best 2 x top_terms per prefix is exercised
    ctx = make_ctx(spark, tmp_path / "h", overrides={"sids": {"resolution": "hybrid", "glossary_top_terms": 2}})
    write_inputs(spark, ctx.layout, rows[:300], emb[:300])
    check_stage_outputs(ctx, *run_both(ctx), "hybrid")


def test_force_retrain_and_bad_inputs(spark, tmp_path):
    rows, emb = sample_items()
    ctx = make_ctx(spark, tmp_path / "v1")
    write_inputs(spark, ctx.layout, rows[:300], emb[:300])
    run_both(ctx)
    forced = make_ctx(spark, tmp_path / "v2", overrides={"codebook": {"force_retrain": True}}, previous=tmp_path / "v1")
    write_inputs(spark, forced.layout, rows[:300], emb[:300])
    from jobs.codebook.main import run as run_codebook
    from jobs.sids.main import run as run_sids

    assert run_codebook(forced).metrics["decision"] == "train"

    bad = emb[:300].copy()
    bad[5, 3] = np.nan
    broken = make_ctx(spark, tmp_path / "bad")
    write_inputs(spark, broken.layout, rows[:300], bad)
    with pytest.raises(EmbeddingError, match=rows[5]["item_id"]):
        run_codebook(broken)

    # a codebook from another model space is refused when assigning
    other = make_ctx(spark, tmp_path / "other")
    write_inputs(spark, other.layout, rows[:300], emb[:300], fingerprint="some-other-model")
    import shutil

    shutil.copytree(ctx.layout.codebook, other.layout.codebook)
    with pytest.raises(CodebookMismatch, match="fingerprint"):
        run_sids(other)


def test_validate_embeddings_names_each_kind_of_bad_vector(spark):
    from jobs.codebook.transform import validate_embeddings

    def table(vectors):  # a null vector cannot be written as EMBEDDINGS, but a foreign table may hold one
        return spark.createDataFrame([(f"i{n:02d}", v) for n, v in enumerate(vectors)], "item_id string, embedding array<float>")

    good = [0.6, 0.8, 0.0]
    validate_embeddings(table([good] * 5), 3)  # clean: no error

    bad_values = [good] * 14 + [[0.6, float("nan"), 0.0], [float("inf"), 0.0, 0.0], [0.6, None, 0.0]]
    with pytest.raises(EmbeddingError, match=r"^3 embeddings contain NaN or inf: items i14, i15, i16$"):
        validate_embeddings(table(bad_values), 3)

    # a wrong dimension (or no vector) is reported before NaN, 10 items named in id order, then a count
    wrong = [[0.6, 0.8]] * 11 + [None, good, [float("nan")] * 3]
    with pytest.raises(EmbeddingError, match=r"^12 embeddings have the wrong dimension \(expected 3\): "
                                             r"items i00, i01, .*, i09 \(\+2 more\)$"):
        validate_embeddings(table(wrong), 3)

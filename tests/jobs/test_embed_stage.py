"""The embed stage end to end on a real SparkSession and the real MiniLM model (80 sample items).

One module fixture runs the stage on a cold cache, a warm rerun, a 5% changed snapshot (with the cold
run as its previous version, compacting the cache at its end), a rerun on the compacted cache and a
second cold cache; the tests check rows in = rows out + quarantined, fallbacks, cache hits/misses,
reuse of the previous version's vectors, compaction, determinism, and that the Spark job's vectors are
the plain-Python encoder's.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from jobs.common.io import write_table
from jobs.common.layout import RunLayout
from jobs.common.pipeline_config import PipelineConfig
from jobs.common.stage import Inputs, StageContext
from jobs.embed.cache import TMP_PREFIX
from jobs.embed.encoder import EncoderSpec, ModelNotFoundError, get_encoder, weights_fingerprint
from jobs.embed.main import quarantine_path, run
from jobs.embed.text import Reason, embed_items, item_key, render_views, text_hash
from schemas.catalog import CATALOG
from schemas.catalog import C as CAT
from schemas.convert import to_spark
from schemas.embeddings import EMBEDDINGS
from schemas.embeddings import C as E
from schemas.quarantine import QUARANTINE
from schemas.quarantine import C as Q

pytestmark = pytest.mark.spark

N_ITEMS = 80
CHANGED = [str(i) for i in range(40, 44)]  # 5% of the items get a new title in snapshot 2
# Short sequences keep the suite fast; the equivalence at full length is in test_embed_encoder.
OVERRIDES = {"embed": {"max_seq_length": 32}}


def load_items(path: Path, n: int) -> list[dict]:
    with open(path, encoding="utf-8") as fh:
        items = [json.loads(line) for _, line in zip(range(n), fh)]
    for item in items:
        item.update(price=None, attributes=None, updated_at=None, text_hash="ingest-hash")
    # Bad input on purpose: no title (falls back), no text at all (quarantined), category only,
    # and a duplicate listing whose text is identical to another item's.
    items[0]["title"] = None
    items[1].update(title="  ", description="", brand=None, category_path=None)
    items[2].update(title=None, description=None, brand=None)
    items[4].update({k: items[5][k] for k in ("title", "description", "brand", "category_path")})
    items[3]["category_path"] = None  # the category view renders empty: the main text's vector alone
    return items


def make_ctx(
    spark, base: Path, name: str, items: list[dict], *, cache: str, overrides=None, previous: str | None = None
) -> StageContext:
    layout = RunLayout(base / name)
    write_table(spark.createDataFrame(items, to_spark(CATALOG)), layout.catalog, CATALOG, num_files=1)
    return StageContext(
        spark=spark,
        layout=layout,
        config=PipelineConfig.load(overrides=overrides or OVERRIDES),
        inputs=Inputs("", ""),
        snapshot_id=name,
        cache_dir=base / cache,
        previous_version=base / previous if previous else None,
    )


def read_output(ctx: StageContext) -> pd.DataFrame:
    return ctx.spark.read.schema(to_spark(EMBEDDINGS)).parquet(str(ctx.layout.text_embeddings)).toPandas()


@pytest.fixture(scope="module")
def runs(spark, sample_catalog, tmp_path_factory):
    base = tmp_path_factory.mktemp("embed")
    items = load_items(sample_catalog, N_ITEMS)
    changed = [dict(item) for item in items]
    for item in changed:
        if item[CAT.item_id] in CHANGED:
            item["title"] = f"Refurbished {item['title']}"
    out = {"items": items, "changed_items": changed, "base": base}
    # The changed snapshot merges the cache's files at its end (cold and changed runs add 3 or more).
    compacting = {"embed": {**OVERRIDES["embed"], "cache_compact_files": 2}}
    plan = [
        ("cold", items, "cache", None, None),
        ("warm", items, "cache", None, None),
        ("changed", changed, "cache", compacting, "cold"),
        ("compacted", items, "cache", None, None),
        ("cold_again", items, "cache2", None, None),
    ]
    for name, catalog, cache, overrides, previous in plan:
        ctx = make_ctx(spark, base, name, catalog, cache=cache, overrides=overrides, previous=previous)
        if name == "changed":
            # What a run killed after Spark wrote its cache files but before publishing them leaves.
            stale = (
                ctx.cache_dir
                / "embeddings"
                / f"encoder={out['cold'][1].metrics['encoder_fingerprint']}"
                / f"{TMP_PREFIX}dead"
            )
            stale.mkdir(parents=True)
            (stale / "part-00000.snappy.parquet").write_bytes(b"truncated garbage")
            out["stale_dir"] = stale
        started = time.perf_counter()
        result = run(ctx)
        out[name] = (ctx, result, read_output(ctx), time.perf_counter() - started)
    # The main text alone (no views): every vector comes from the warm cache.
    ctx = make_ctx(
        spark,
        base,
        "text_only",
        items,
        cache="cache",
        overrides={"embed": {**OVERRIDES["embed"], "views": []}},
    )
    out["text_only"] = (ctx, run(ctx), read_output(ctx), None)
    return out


def test_rows_in_equal_rows_out_plus_quarantined(runs):
    ctx, result, output, _ = runs["cold"]
    assert result.counts == {"items_in": N_ITEMS, "items_out": N_ITEMS - 1, "quarantined": 1}
    assert len(output) == result.counts["items_out"] and output[E.item_id].is_unique
    quarantined = ctx.spark.read.schema(to_spark(QUARANTINE)).parquet(str(quarantine_path(ctx))).toPandas()
    assert len(quarantined) == 1
    row = quarantined.iloc[0]
    assert (row[Q.stage], row[Q.source], row[Q.reason]) == ("embed", "catalog", Reason.NO_TEXT.value)
    assert json.loads(row[Q.record])[CAT.item_id] == "1"
    assert set(output[E.item_id]) | {"1"} == {item[CAT.item_id] for item in runs["items"]}


def test_output_schema_order_and_vectors(runs):
    ctx, result, output, _ = runs["cold"]
    table = ctx.spark.read.parquet(str(ctx.layout.text_embeddings))
    assert [f.name for f in table.schema.fields] == EMBEDDINGS.names
    assert output[E.item_id].tolist() == sorted(output[E.item_id])
    vectors = np.stack(output[E.embedding].to_numpy())
    assert vectors.shape == (N_ITEMS - 1, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert set(output[E.space]) == {"text"}
    # the encoder plus the blended views: a codebook trained on these vectors is tied to both
    fingerprint = result.metrics["vector_fingerprint"]
    assert set(output[E.model_fingerprint]) == {fingerprint}
    assert fingerprint.startswith(result.metrics["encoder_fingerprint"] + "+views-")


def test_text_hash_is_the_hash_of_the_rendered_text(runs):
    ctx, _, output, _ = runs["cold"]
    by_id = {item[CAT.item_id]: item for item in runs["items"]}
    cfg = ctx.config.embed
    expected = [item_key(render_views(by_id[i], cfg), cfg) for i in output[E.item_id]]
    assert output[E.text_hash].tolist() == expected


def test_spark_vectors_equal_the_plain_python_encoder(runs):
    ctx, _, output, _ = runs["cold"]
    cfg = ctx.config.embed
    by_id = {item[CAT.item_id]: item for item in runs["items"]}
    items = [by_id[i] for i in output[E.item_id]]
    direct = embed_items(items, cfg, get_encoder(EncoderSpec.from_config(cfg)).encode)
    np.testing.assert_allclose(np.stack(output[E.embedding].to_numpy()), direct, atol=1e-5, rtol=0)


def test_views_blend_the_category_vector_and_can_be_turned_off(runs):
    ctx, _, blended, _ = runs["cold"]
    _, text_only, plain, _ = runs["text_only"]
    cfg = ctx.config.embed
    by_id = {item[CAT.item_id]: item for item in runs["items"]}
    main_texts = [render_views(by_id[i], cfg)[0] for i in plain[E.item_id]]
    direct = get_encoder(EncoderSpec.from_config(cfg)).encode(main_texts)
    np.testing.assert_allclose(np.stack(plain[E.embedding].to_numpy()), direct, atol=1e-5, rtol=0)
    assert plain[E.text_hash].tolist() == [text_hash(t) for t in main_texts]
    assert text_only.metrics["cache_misses"] == 0
    assert set(plain[E.model_fingerprint]) == {text_only.metrics["encoder_fingerprint"]}
    same = [np.array_equal(a, b) for a, b in zip(blended[E.embedding], plain[E.embedding])]
    # only items without a category (no view text; item 3 among them) keep their main-text vector
    no_view = [i for i in plain[E.item_id] if not render_views(by_id[i], cfg)[1]]
    assert "3" in no_view and len(no_view) < len(plain) // 2
    assert [i for i, s in zip(blended[E.item_id], same) if s] == no_view


def test_missing_fields_fall_back_and_duplicates_share_a_vector(runs):
    ctx, result, output, _ = runs["cold"]
    vectors = dict(zip(output[E.item_id], output[E.embedding]))
    assert {"0", "2"} <= set(vectors)  # no title / category only: still embedded
    assert result.metrics["text_fallbacks"] == 2
    np.testing.assert_array_equal(vectors["4"], vectors["5"])
    # identical texts (item 4 and 5, duplicate listings, a category path many items share) are embedded once
    usable = [item for item in runs["items"] if render_views(item, ctx.config.embed)[0]]
    texts = {t for item in usable for t in render_views(item, ctx.config.embed)} - {""}
    assert result.metrics["texts_embedded"] == len(texts)
    assert len({render_views(item, ctx.config.embed)[0] for item in usable}) < N_ITEMS - 1


def test_metrics_name_the_model_and_its_weights(runs):
    _, result, _, _ = runs["cold"]
    metrics = result.metrics
    assert metrics["model_id"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert metrics["model_weights_fingerprint"] == weights_fingerprint(Path(metrics["model_path"]))
    assert (metrics["device"], metrics["precision"], metrics["max_seq_length"]) == ("cpu", "fp32", 32)
    assert (metrics["cache_hits"], metrics["cache_misses"]) == (0, N_ITEMS - 1)


def test_rerun_reads_everything_from_the_cache_byte_identical(runs):
    _, _, cold_out, _ = runs["cold"]
    ctx, warm, warm_out, _ = runs["warm"]
    assert (warm.metrics["cache_hits"], warm.metrics["cache_misses"], warm.metrics["texts_embedded"]) == (
        N_ITEMS - 1,
        0,
        0,
    )
    pd.testing.assert_frame_equal(warm_out, cold_out)
    files = sorted(ctx.layout.text_embeddings.glob("*.parquet"))
    cold_files = sorted(runs["cold"][0].layout.text_embeddings.glob("*.parquet"))
    assert [f.read_bytes() for f in files] == [f.read_bytes() for f in cold_files]


def test_changed_items_are_the_only_misses(runs):
    _, _, cold_out, _ = runs["cold"]
    _, changed, changed_out, _ = runs["changed"]
    assert changed.metrics["cache_misses"] == len(CHANGED)
    assert changed.metrics["cache_hits"] == N_ITEMS - 1 - len(CHANGED)
    assert changed.metrics["texts_embedded"] == len(CHANGED)
    old = cold_out.set_index(E.item_id)
    new = changed_out.set_index(E.item_id)
    moved = [i for i in new.index if not np.array_equal(new.at[i, E.embedding], old.at[i, E.embedding])]
    assert sorted(moved) == sorted(CHANGED)
    assert (new.loc[CHANGED, E.text_hash] != old.loc[CHANGED, E.text_hash]).all()


def test_cache_files_are_only_added_and_a_killed_runs_leftovers_are_ignored(runs):
    cache_dir = Path(runs["cold"][1].outputs["cache"])
    files = sorted(p.name for p in cache_dir.glob("*.parquet"))
    # cold run added its files, the warm rerun none, the changed run more; names are content hashes
    assert len(files) >= 2 and all(len(Path(f).stem) == 16 for f in files)
    assert runs["stale_dir"].exists()  # too young to sweep, never read (the run above succeeded)


def test_same_inputs_with_a_cold_cache_give_identical_vectors(runs):
    _, _, first, _ = runs["cold"]
    _, again, second, _ = runs["cold_again"]
    assert again.metrics["cache_misses"] == N_ITEMS - 1
    pd.testing.assert_frame_equal(first, second)


def test_missing_model_fails_before_any_spark_work(spark, runs):
    ctx = make_ctx(
        spark,
        runs["base"],
        "bad_model",
        runs["items"][:3],
        cache="cache",
        overrides={"embed": {"model": "/nonexistent/minilm"}},
    )
    with pytest.raises(ModelNotFoundError, match="/nonexistent/minilm"):
        run(ctx)
    assert not ctx.layout.text_embeddings.exists()
    assert not quarantine_path(ctx).exists()


def test_a_text_cached_twice_keeps_one_vector_per_item_from_the_first_sorting_file(spark, runs):
    """Two runs racing on the same texts can both add a vector for one hash: each item still gets one
    row, and the vector of the entry file whose name sorts first, whatever the listing order."""
    import shutil

    import pyarrow as pa
    import pyarrow.parquet as pq

    from schemas.embeddings import EMBEDDING_CACHE

    base = runs["base"]
    shutil.copytree(base / "cache2", base / "cache_raced")
    encoder_dir = next((base / "cache_raced" / "embeddings").glob("encoder=*"))
    item = runs["items"][10]
    raced_hash = text_hash(render_views(item, PipelineConfig.load(overrides=OVERRIDES).embed)[0])
    other = np.zeros(runs["cold"][2][E.embedding].iloc[0].shape, dtype=np.float32)
    other[0] = 1.0
    entry = pa.table({E.text_hash: [raced_hash], E.embedding: [other]}, schema=EMBEDDING_CACHE)
    pq.write_table(entry, encoder_dir / f"{'0' * 16}.parquet")

    text_only = {"embed": {**OVERRIDES["embed"], "views": []}}
    for name, overrides in (("raced_text_only", text_only), ("raced_views", OVERRIDES)):
        ctx = make_ctx(spark, base, name, runs["items"], cache="cache_raced", overrides=overrides)
        result = run(ctx)
        output = read_output(ctx).set_index(E.item_id)
        assert output.index.is_unique and len(output) == N_ITEMS - 1
        assert (result.metrics["cache_hits"], result.metrics["cache_misses"]) == (N_ITEMS - 1, 0)
        cold = runs["cold"][2].set_index(E.item_id)
        differs = [i for i in output.index if not np.array_equal(output.at[i, E.embedding], cold.at[i, E.embedding])]
        if name == "raced_text_only":
            np.testing.assert_array_equal(output.at[item[CAT.item_id], E.embedding], other)
        else:
            assert differs == [item[CAT.item_id]]


def test_unchanged_items_take_the_previous_versions_vectors(runs):
    _, warm, _, _ = runs["warm"]
    _, changed, _, _ = runs["changed"]
    assert warm.metrics["reused_from_previous_version"] == 0  # no previous version given
    assert changed.metrics["reused_from_previous_version"] == N_ITEMS - 1 - len(CHANGED)


def test_previous_vectors_are_reused_only_from_the_same_model_and_views(runs):
    """A doctored previous version shows the vectors really come from it, and only when it was made by
    this run's model and views (same vector fingerprint)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    base = runs["base"]
    _, cold, cold_out, _ = runs["cold"]
    marked = cold_out[E.item_id].iloc[7]
    unit = np.zeros(len(cold_out[E.embedding].iloc[0]), dtype=np.float32)
    unit[0] = 1.0
    doctored = cold_out.copy()
    doctored[E.embedding] = [unit if i == marked else v for i, v in zip(doctored[E.item_id], doctored[E.embedding])]
    for name, fingerprint, reused in (
        ("previous_same_model", cold.metrics["vector_fingerprint"], True),
        ("previous_other_model", "another-model", False),
    ):
        table = RunLayout(base / name).text_embeddings
        table.mkdir(parents=True)
        frame = doctored.assign(**{E.model_fingerprint: fingerprint})
        pq.write_table(pa.Table.from_pandas(frame, schema=EMBEDDINGS, preserve_index=False), table / "part-00000.parquet")
        ctx = make_ctx(runs["cold"][0].spark, base, f"{name}_run", runs["items"], cache="cache2", previous=name)
        result = run(ctx)
        output = read_output(ctx).set_index(E.item_id)
        assert result.metrics["reused_from_previous_version"] == (N_ITEMS - 1 if reused else 0)
        assert (result.metrics["cache_hits"], result.metrics["cache_misses"]) == (N_ITEMS - 1, 0)
        expected = unit if reused else cold_out.set_index(E.item_id).at[marked, E.embedding]
        np.testing.assert_array_equal(output.at[marked, E.embedding], expected)


def test_compaction_merges_the_runs_files_and_keeps_every_vector(runs):
    _, changed, _, _ = runs["changed"]
    _, compacted, compacted_out, _ = runs["compacted"]
    merged = changed.metrics["cache_compaction"]
    assert merged["files_merged"] >= 3 and merged["merged_into"] == 1
    assert changed.metrics["cache_files"] == 1
    # the next run reads the merged file alone: every vector still there, the output unchanged
    assert compacted.metrics["cache_files"] == 1 and compacted.metrics["cache_compaction"] == {}
    assert (compacted.metrics["cache_hits"], compacted.metrics["cache_misses"]) == (N_ITEMS - 1, 0)
    pd.testing.assert_frame_equal(compacted_out, runs["cold"][2])


def test_compaction_keeps_retired_files_for_readers_that_listed_them(spark, tmp_path):
    """The merge publishes one file and retires the small ones: a DataFrame that listed them before
    still reads them, later readers see only the merged file, and the retired files are deleted once
    their record is older than a run can take. A hash cached twice keeps the first-sorting file's vector."""
    import os

    import pyarrow as pa
    import pyarrow.parquet as pq

    from jobs.embed.cache import RECORD_PREFIX, STALE_TMP_SECONDS, EmbeddingCache, first_per_hash
    from schemas.embeddings import EMBEDDING_CACHE

    cache = EmbeddingCache(tmp_path, "encoder-fp")
    cache.dir.mkdir(parents=True)
    rng = np.random.default_rng(0)
    hashes = [["h0", "h1"], ["h2", "h1"], ["h3"], ["h4", "h5"]]  # h1 twice: two racing runs
    for index, names in enumerate(hashes):
        vectors = rng.standard_normal((len(names), 8)).astype(np.float32)
        table = pa.table({E.text_hash: names, E.embedding: list(vectors)}, schema=EMBEDDING_CACHE)
        pq.write_table(table, cache.dir / f"{index:016d}.parquet")
    small = cache.files()
    before = cache.read(spark)
    expected = {r[E.text_hash]: r[E.embedding] for r in first_per_hash(before).collect()}

    assert cache.compact(spark, min_files=5, file_bytes=1 << 30) == {}  # fewer small files than that
    info = cache.compact(spark, min_files=4, file_bytes=1 << 30)
    assert (info["files_merged"], info["merged_into"]) == (4, 1)
    live = cache.files()
    assert len(live) == 1 and live[0] not in small and len(live[0].stem) == 16
    after = cache.read(spark).collect()
    assert sorted(r[E.text_hash] for r in after) == sorted(expected)
    assert all(r[E.embedding] == expected[r[E.text_hash]] for r in after)
    assert before.count() == 7  # listed before the merge: still readable

    assert cache.sweep_stale() == 0 and all(f.exists() for f in small)
    record = next(cache.dir.glob(f"{RECORD_PREFIX}*.json"))
    aged = record.stat().st_mtime - STALE_TMP_SECONDS - 60
    os.utime(record, (aged, aged))
    assert cache.sweep_stale() == 1
    assert sorted(cache.dir.glob("*.parquet")) == live and not record.exists()
    assert sorted(r[E.text_hash] for r in cache.read(spark).collect()) == sorted(expected)

"""Benchmark: the sft stage on synthetic logs of 250k / 500k / 1M interactions over 100k items (2 cores).

Target (issue 6): the full corpus from 1M interactions in <= 5 minutes, cost growing linearly with the
log. The baseline in the same process is the plain Spark pass any per-user job pays: read the log,
group it per user with ``collect_list`` and write the result; the table reports the stage's time as a
ratio of it. Inputs are curated tables (CATALOG, INTERACTIONS with timestamps, queries and sessions,
SIDS) generated here with numpy; switch to ``sidpipe.synthetic.generate`` once it lands.

    .venv/bin/python benchmarks/sft_corpus.py [--sizes 250000,500000,1000000] [--items 100000]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from jobs.common.layout import RunLayout  # noqa: E402
from jobs.common.pipeline_config import PipelineConfig  # noqa: E402
from jobs.common.stage import Inputs, StageContext  # noqa: E402
from schemas.catalog import CATALOG  # noqa: E402
from schemas.catalog import C as CAT  # noqa: E402
from schemas.interactions import INTERACTIONS  # noqa: E402
from schemas.interactions import C as INT  # noqa: E402
from schemas.sids import SIDS  # noqa: E402
from schemas.sids import C as S  # noqa: E402

WORDS = np.array("heavy duty steel clear tape adhesive glove nitrile screw anchor drill bit blade saw wire cable clamp valve "
                 "pump filter sensor gauge meter lamp battery switch relay fuse plug socket tube hose fitting seal ring "
                 "bolt nut washer spring magnet label marker brush sponge bucket cart shelf rack bin tray scale lens".split())


def _table(columns: dict, schema: pa.Schema, n: int) -> pa.Table:
    """Columns given, nulls for the schema's other (nullable) fields: robust to added optional columns."""
    return pa.table({f.name: columns[f.name] if f.name in columns else pa.nulls(n, f.type) for f in schema}, schema=schema)


def generate(run_dir: Path, *, n_items: int, n_interactions: int, seed: int = 0) -> RunLayout:
    rng = np.random.default_rng(seed)
    layout = RunLayout(run_dir)
    n_cats, n_brands = 400, 2000
    cat_of = rng.integers(0, n_cats, n_items)
    brand_of = rng.integers(0, n_brands, n_items)
    words = WORDS[rng.integers(0, len(WORDS), (n_items, 4))]
    ids = np.arange(n_items).astype(str)
    titles = [f"Brand{b} {' '.join(w)} model {i}" for i, b, w in zip(range(n_items), brand_of, words)]
    catalog = _table({
        CAT.item_id: ids, CAT.title: titles, CAT.description: [f"{t}. Industrial grade." for t in titles],
        CAT.brand: [f"Brand{b}" for b in brand_of],
        CAT.category_path: [["Industrial", f"Group {c // 20}", f"Category {c}"] for c in cat_of],
        CAT.price: np.round(rng.lognormal(3.0, 1.0, n_items), 2), CAT.attributes: pa.nulls(n_items, CATALOG.field(CAT.attributes).type),
        CAT.updated_at: pa.nulls(n_items, pa.timestamp("us", tz="UTC")), CAT.text_hash: ids,
    }, CATALOG, n_items)
    # SIDs: level 1 follows the category, level 2 the brand, level 3 makes them unique.
    a, b = cat_of % 256, brand_of % 256
    order = np.lexsort((np.arange(n_items), b, a))
    c = np.zeros(n_items, dtype=np.int64)
    key = a[order] * 256 + b[order]
    starts = np.r_[0, np.flatnonzero(np.diff(key)) + 1]
    c[order] = np.arange(n_items) - np.repeat(starts, np.diff(np.r_[starts, n_items]))
    sids = _table({
        S.item_id: ids, S.codes: [[int(x), int(y), int(z)] for x, y, z in zip(a, b, c)],
        S.sid: [[int(x), int(y), int(z)] for x, y, z in zip(a, b, c)],
        S.sid_tokens: [f"<a_{x}><b_{y}><c_{z}>" for x, y, z in zip(a, b, c)],
        S.item_token: pa.nulls(n_items, pa.string()), S.resolution: pa.nulls(n_items, pa.string()),
        S.codebook_id: ["bench-codebook"] * n_items,
    }, SIDS, n_items)
    # Users: 12 events on average (>= 2), favourite categories, Zipf-like popularity within a category.
    n_users = max(1, n_interactions // 12)
    lengths = rng.integers(2, 23, n_users)
    lengths = np.maximum(2, np.round(lengths * n_interactions / lengths.sum()).astype(int))
    user = np.repeat(np.arange(n_users), lengths)
    n = len(user)
    by_cat = np.argsort(cat_of, kind="stable")
    cat_start = np.searchsorted(cat_of[by_cat], np.arange(n_cats))
    cat_size = np.bincount(cat_of, minlength=n_cats)
    fav = rng.integers(0, n_cats, (n_users, 3))
    cats = np.where(rng.random(n) < 0.8, fav[user, rng.integers(0, 3, n)], rng.integers(0, n_cats, n))
    rank = np.minimum((rng.pareto(1.2, n) * 3).astype(int), cat_size[cats] - 1)
    items = by_cat[cat_start[cats] + np.maximum(rank, 0)]
    seq = np.arange(n) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    start = rng.integers(0, 150 * 86400, n_users)
    gaps = rng.integers(3600, 5 * 86400, n)
    elapsed = np.cumsum(gaps) - np.repeat(np.cumsum(gaps)[np.cumsum(lengths) - lengths] - gaps[np.cumsum(lengths) - lengths], lengths)
    ts = (1_700_000_000 + start[user] + elapsed) * 1_000_000  # increasing with seq_index, as the curated log promises
    queries = np.where(rng.random(n) < 0.3, np.char.add("category ", cats.astype(str)), None)
    interactions = _table({
        INT.user_id: user.astype(str), INT.item_id: ids[items], INT.event_type: ["purchase"] * n,
        INT.timestamp: pa.array(ts, pa.timestamp("us", tz="UTC")), INT.query: pa.array(queries, pa.string()),
        INT.session_id: np.char.add(np.char.add(user.astype(str), "-"), (seq // 4).astype(str)), INT.seq_index: seq,
    }, INTERACTIONS, n)
    for path, table in ((layout.catalog, catalog), (layout.sids, sids), (layout.interactions, interactions)):
        path.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path / "part-00000.parquet")
    glossary = {"format": 1, "prefix_levels": [1], "prefixes": {
        f"<a_{k}>": {"level": 1, "item_count": int((a == k).sum()), "category_path": [f"Category {k}"], "top_terms": ["steel", "tape"],
                     "example_titles": [titles[int(np.flatnonzero(a == k)[0])]]} for k in np.unique(a)}}
    layout.sid_artifacts.mkdir(parents=True, exist_ok=True)
    (layout.sid_artifacts / "glossary.json").write_text(json.dumps(glossary))
    return layout


def baseline(spark, layout: RunLayout, out: Path) -> float:
    """Plain Spark: read the log, collect each user's events, write them."""
    from pyspark.sql import functions as F

    t = time.perf_counter()
    log = spark.read.parquet(str(layout.interactions))
    log.groupBy(INT.user_id).agg(F.array_sort(F.collect_list(F.struct(INT.seq_index, INT.item_id, INT.timestamp))).alias("e")) \
        .write.mode("overwrite").parquet(str(out))
    return time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="250000,500000,1000000")
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--hf", action="store_true", help="also write the HF DatasetDict (default: on)", default=True)
    args = parser.parse_args()
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    from jobs.common.spark import SparkConfig, get_session
    from jobs.sft.main import run

    spark = get_session(SparkConfig(master="local[2]"))
    config = PipelineConfig.load()
    rows = []
    work = Path(tempfile.mkdtemp(prefix="sft-bench-"))
    try:
        for size in [int(s) for s in args.sizes.split(",")]:
            layout = generate(work / f"run{size}", n_items=args.items, n_interactions=size)
            base = baseline(spark, layout, work / f"baseline{size}")
            ctx = StageContext(spark=spark, layout=layout, config=config, inputs=Inputs("", ""), snapshot_id="bench",
                               cache_dir=work / "_cache")
            t = time.perf_counter()
            result = run(ctx)
            wall = time.perf_counter() - t
            records = sum(result.counts[f"records_{s}"] for s in ("train", "validation", "test"))
            rows.append({"interactions": size, "items": args.items, "seconds": round(wall, 1), "records": records,
                         "records_per_s": round(records / wall), "us_per_interaction": round(wall / size * 1e6, 1),
                         "baseline_seconds": round(base, 1), "ratio_to_baseline": round(wall / base, 1),
                         "split_mode": result.metrics["split_mode"]})
            print(rows[-1], flush=True)
            shutil.rmtree(layout.run_dir)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\n{'interactions':>12} {'seconds':>8} {'records':>9} {'rec/s':>7} {'us/inter':>9} {'baseline s':>10} {'ratio':>6}")
    for r in rows:
        print(f"{r['interactions']:>12} {r['seconds']:>8} {r['records']:>9} {r['records_per_s']:>7} {r['us_per_interaction']:>9} "
              f"{r['baseline_seconds']:>10} {r['ratio_to_baseline']:>6}")
    if len(rows) > 1:
        growth = rows[-1]["seconds"] / rows[0]["seconds"]
        print(f"time x{growth:.2f} for log x{rows[-1]['interactions'] / rows[0]['interactions']:.1f}")
    out = REPO / "benchmarks" / "results" / "sft_corpus.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"cores": os.cpu_count(), "load_avg_at_end": os.getloadavg(), "rows": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

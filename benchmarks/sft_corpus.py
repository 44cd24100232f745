"""Benchmark: the sft stage on synthetic logs of 100k / 250k / 1M interactions over 100k items (2 cores).

Target (issue 6): the full corpus from 1M interactions in <= 5 minutes, cost growing linearly with the
log. The baseline in the same process is the plain Spark pass any per-user job pays: read the log,
group it per user with ``collect_list`` and write the result; the table reports the stage's time as a
ratio of it. Inputs are curated tables (CATALOG, INTERACTIONS with timestamps, queries and sessions,
SIDS): ``sidpipe.synthetic`` logs through the real ingest stage, with stand-in SIDs.

    .venv/bin/python benchmarks/sft_corpus.py [--sizes 100000,250000,1000000] [--items 100000]
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

import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from jobs.common.layout import RunLayout
from jobs.common.pipeline_config import PipelineConfig
from jobs.common.stage import Inputs, StageContext
from schemas.catalog import C as CAT
from schemas.interactions import C as INT
from schemas.sids import SIDS
from schemas.sids import C as S
from sidpipe import synthetic


def prepare(spark, config: PipelineConfig, run_dir: Path, *, n_items: int, n_interactions: int, seed: int = 0) -> tuple[RunLayout, float]:
    """The sft stage's inputs: ``sidpipe.synthetic`` raw tables through the real ingest stage, plus SIDs.

    SIDs stand in for the tokenizer (not measured here): level 1 follows (leaf category, brand), levels
    2-3 number the items inside it, so prefixes carry meaning and every SID is unique. Returns the
    layout and the ingest seconds (reported, not counted in the sft time).
    """
    from jobs.ingest.main import run as ingest

    layout = RunLayout(run_dir)
    cat, inter = synthetic.generate(run_dir / "raw", n_items=n_items, n_users=max(1, n_interactions // 12),
                                    n_interactions=n_interactions, seed=seed)
    ctx = StageContext(spark=spark, layout=layout, config=config, inputs=Inputs(str(cat), str(inter), "parquet"),
                       snapshot_id="bench", cache_dir=run_dir / "_cache")
    t = time.perf_counter()
    ingest(ctx)
    ingest_seconds = time.perf_counter() - t

    catalog = pq.read_table(layout.catalog, columns=[CAT.item_id, CAT.title, CAT.brand, CAT.category_path]).to_pandas()
    catalog["_leaf"] = catalog[CAT.category_path].map(lambda p: p[-1])
    catalog = catalog.sort_values(["_leaf", CAT.brand, CAT.item_id], kind="stable").reset_index(drop=True)
    group = catalog.groupby(["_leaf", CAT.brand], sort=True).ngroup().to_numpy()
    a = group % 256
    within = catalog.groupby(a).cumcount().to_numpy()
    if within.max() >= 256 * 256:
        raise ValueError("too many items per level-1 code for 3-level benchmark SIDs")
    codes = [[int(x), int(y), int(z)] for x, y, z in zip(a, within // 256, within % 256)]
    n = len(catalog)
    sids = pa.table({
        S.item_id: catalog[CAT.item_id].to_numpy(), S.codes: codes, S.sid: codes,
        S.sid_tokens: [f"<a_{x}><b_{y}><c_{z}>" for x, y, z in codes],
        S.item_token: pa.nulls(n, pa.string()), S.resolution: pa.nulls(n, pa.string()),
        S.codebook_id: ["bench-codebook"] * n, S.text_hash: pa.nulls(n, pa.string()),
    }, schema=SIDS)
    layout.sids.mkdir(parents=True, exist_ok=True)
    pq.write_table(sids, layout.sids / "part-00000.parquet")
    first = catalog.assign(_a=a).groupby("_a").head(1).set_index("_a")
    glossary = {"format": 1, "prefix_levels": [1], "prefixes": {
        f"<a_{k}>": {"level": 1, "item_count": int((a == k).sum()), "category_path": list(first.loc[k, CAT.category_path]),
                     "top_terms": first.loc[k, CAT.title].lower().split()[:3], "example_titles": [first.loc[k, CAT.title]]}
        for k in sorted(set(a.tolist()))}}
    layout.sid_artifacts.mkdir(parents=True, exist_ok=True)
    (layout.sid_artifacts / "glossary.json").write_text(json.dumps(glossary))
    return layout, ingest_seconds


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
    parser.add_argument("--sizes", default="100000,250000,1000000")
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
            layout, ingest_seconds = prepare(spark, config, work / f"run{size}", n_items=args.items, n_interactions=size)
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
                         "split_mode": result.metrics["split_mode"], "ingest_seconds": round(ingest_seconds, 1),
                         "steps": result.metrics.get("seconds", {})})
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

"""``jobs.common.io.write_table`` (pyarrow writers in ``mapInArrow``: the same bytes from any JVM) against
Spark's own ``DataFrame.write.parquet`` of the same DataFrame, in one SparkSession.

Tables: the embeddings contract (item ids, hashes and a 384-d float vector per item) and the
interactions contract (narrow rows, many of them). Each is cached in Spark first so both writers start
from the same materialised rows; each write is timed best-of-``--repeat``, alternating the writers.

Run: ``.venv/bin/python benchmarks/write_table.py [--items 100000] [--events 2000000]``; prints a table and
writes ``benchmarks/results/write_table.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
RESULTS = REPO / "benchmarks" / "results" / "write_table.json"

from jobs.common.io import write_table  # noqa: E402
from jobs.common.spark import SparkConfig, get_session  # noqa: E402
from schemas.convert import to_spark  # noqa: E402
from schemas.embeddings import EMBEDDINGS  # noqa: E402
from schemas.interactions import INTERACTIONS  # noqa: E402


def embeddings_frame(spark, n: int, dim: int = 384):
    return spark.range(n).selectExpr(
        "format_string('item%07d', id) as item_id",
        "'fused' as space",
        "sha2(cast(id as string), 256) as text_hash",
        "'fp-0123456789' as model_fingerprint",
        f"transform(sequence(1, {dim}), k -> cast(sin(id * 7919 + k) as float)) as embedding",
    )


def interactions_frame(spark, n: int):
    return spark.range(n).selectExpr(
        "format_string('user%06d', id % 50000) as user_id",
        "format_string('item%07d', (id * 7919) % 100000) as item_id",
        "if(id % 10 = 0, 'purchase', 'view') as event_type",
        "timestamp_seconds(1700000000 + id) as timestamp",
        "if(id % 20 = 0, 'a search query', null) as query",
        "format_string('s%07d', id div 8) as session_id",
        "id as seq_index",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=2_000_000)
    parser.add_argument("--files", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    spark = get_session(SparkConfig(master="local[2]", shuffle_partitions=4, driver_memory="4g"))
    cases = [("embeddings", EMBEDDINGS, embeddings_frame(spark, args.items)),
             ("interactions", INTERACTIONS, interactions_frame(spark, args.events))]
    out = tempfile.mkdtemp(prefix="sidpipe-bench-write-")
    rows = []
    try:
        for name, schema, frame in cases:
            names = [f.name for f in to_spark(schema).fields]
            frame = frame.select([frame[c].cast(to_spark(schema)[c].dataType) for c in names])
            frame = frame.repartition(args.files).cache()
            n = frame.count()
            best = {"write_table": float("inf"), "spark_parquet": float("inf")}
            sizes = {}
            for _ in range(args.repeat):
                for writer in best:
                    target = Path(out) / f"{name}-{writer}"
                    started = time.perf_counter()
                    if writer == "write_table":
                        write_table(frame, target, schema)
                    else:
                        frame.write.mode("overwrite").parquet(str(target))
                    best[writer] = min(best[writer], time.perf_counter() - started)
                    sizes[writer] = sum(p.stat().st_size for p in target.rglob("*.parquet"))
                    shutil.rmtree(target)
            frame.unpersist()
            rows.append({"table": name, "rows": n, "files": args.files,
                         "write_table_s": round(best["write_table"], 2), "spark_parquet_s": round(best["spark_parquet"], 2),
                         "write_table_rows_per_s": round(n / best["write_table"]),
                         "speed_vs_spark": round(best["spark_parquet"] / best["write_table"], 2),
                         "bytes_vs_spark": round(sizes["write_table"] / sizes["spark_parquet"], 3)})
    finally:
        shutil.rmtree(out, ignore_errors=True)
        spark.stop()

    header = ["table", "rows", "write_table_s", "spark_parquet_s", "write_table_rows_per_s", "speed_vs_spark", "bytes_vs_spark"]
    print(" | ".join(header))
    for row in rows:
        print(" | ".join(str(row[h]) for h in header))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
                                   "args": vars(args), "results": rows}, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()

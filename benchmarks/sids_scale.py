"""The tokenization stages at catalog scale: codebook, sids and check as Spark stages on N items.

There is no large real catalog in the repository, so item i >= 4,344 is a copy of sample item
``i % 4344`` (same title and category, so the glossary stays readable) whose vector is the sample
vector plus noise (``codebook_scale.scaled_embeddings``: half the median nearest-neighbour distance)
and whose ``text_hash`` is its own (a distinct item, not an identical-text duplicate).

It writes the catalog and the embeddings table of a run directory with pyarrow, then runs the real
stage functions (``jobs.codebook.main.run``, ``jobs.sids.main.run``, ``jobs.check.main.run``) in one
SparkSession, and, in the same process, the plain library calls they wrap: ``Codebook.encode`` over
all vectors in one call, and faiss ``ResidualQuantizer.compute_codes`` (3 x 8 bits) on the same
vectors. Reported: seconds per stage, items/s, the sids stage against the bare ``Codebook.encode``
(the stage also resolves collisions, renders tokens, writes the table and the trie, glossary and
token artifacts), and the driver's peak RSS (what is collected to the driver).

    .venv/bin/python benchmarks/sids_scale.py [--items 100000 1000000] [--files 8] [--max-train-items N]

Needs the sample's text vectors (``sid_quality.load_embeddings``: computed once and cached).
Prints a table and writes benchmarks/results/sids_scale.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)

from codebook_scale import scaled_embeddings
from embed_throughput import load_items
from sid_quality import CATALOG as SAMPLE_CATALOG
from sid_quality import load_embeddings

RESULTS = REPO / "benchmarks" / "results" / "sids_scale.json"


def write_inputs(layout, vectors: np.ndarray, base_items: list[dict], *, files: int, space_fingerprint: str) -> None:
    """The run's ``catalog`` and ``embeddings`` tables (CATALOG / EMBEDDINGS), ``files`` Parquet files each."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from jobs.common.io import part_file
    from jobs.embed.text import text_hash
    from schemas.catalog import CATALOG
    from schemas.catalog import C as CAT
    from schemas.embeddings import EMBEDDINGS
    from schemas.embeddings import C as E

    n, base = len(vectors), len(base_items)
    ids = [base_items[i][CAT.item_id] if i < base else f"{base_items[i % base][CAT.item_id]}~{i // base}" for i in range(n)]
    for path in (layout.catalog, layout.embeddings):
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
    bounds = np.linspace(0, n, files + 1).astype(int)
    for f, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:])):
        rows = [dict(base_items[i % base], **{CAT.item_id: ids[i], CAT.text_hash: text_hash(ids[i])}) for i in range(lo, hi)]
        pq.write_table(pa.Table.from_pylist(rows, schema=CATALOG), layout.catalog / part_file(f))
        embedding = pa.FixedSizeListArray.from_arrays(pa.array(vectors[lo:hi].ravel()), vectors.shape[1]).cast(
            EMBEDDINGS.field(E.embedding).type
        )
        table = pa.table(
            {
                E.item_id: ids[lo:hi],
                E.embedding: embedding,
                E.space: ["text"] * (hi - lo),
                E.text_hash: [text_hash(i) for i in ids[lo:hi]],
                E.model_fingerprint: [space_fingerprint] * (hi - lo),
            },
            schema=EMBEDDINGS,
        )
        pq.write_table(table, layout.embeddings / part_file(f))


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_size(spark, base: Path, n: int, vectors: np.ndarray, items: list[dict], files: int, overrides: dict) -> dict:
    import faiss

    from jobs.check.main import run as run_check
    from jobs.codebook.main import run as run_codebook
    from jobs.common.layout import RunLayout
    from jobs.common.pipeline_config import PipelineConfig
    from jobs.common.stage import GateFailed, Inputs, StageContext
    from jobs.sids.main import run as run_sids
    from tokenizer.codebook import Codebook

    layout = RunLayout(base / f"n{n}")
    write_inputs(layout, vectors, items, files=files, space_fingerprint="bench")
    ctx = StageContext(
        spark=spark,
        layout=layout,
        config=PipelineConfig.load(overrides=overrides),
        inputs=Inputs("", ""),
        snapshot_id=f"scale-{n}",
        cache_dir=base / "cache",
        previous_version=None,
    )
    row = {"items": n}
    for name, fn in (("codebook", run_codebook), ("sids", run_sids), ("check", run_check)):
        started = time.perf_counter()
        try:
            result = fn(ctx)
        except GateFailed as exc:  # the check stage stopping a run is a result too (jittered copies can crowd)
            row[f"{name}_seconds"] = time.perf_counter() - started
            row[f"{name}_gate_failed"] = str(exc)
            print(f"  {n:>9,} items  {name:<9} gate failed: {exc}", flush=True)
            break
        row[f"{name}_seconds"] = time.perf_counter() - started
        row[f"{name}_metrics"] = {k: v for k, v in result.metrics.items() if isinstance(v, (int, float, str, type(None)))}
        row["driver_peak_rss_mib_after_" + name] = peak_rss_mib()
        print(f"  {n:>9,} items  {name:<9} {row[f'{name}_seconds']:7.1f} s", flush=True)

    codebook = Codebook.load(layout.codebook)
    started = time.perf_counter()
    codebook.encode(vectors)
    row["bare_encode_seconds"] = time.perf_counter() - started
    rq = faiss.ResidualQuantizer(vectors.shape[1], 3, 8)
    rq.train(vectors[: min(n, 100_000)])
    started = time.perf_counter()
    rq.compute_codes(vectors)
    row["faiss_compute_codes_seconds"] = time.perf_counter() - started
    row["sids_items_per_s"] = n / row["sids_seconds"]
    row["ratio_sids_stage_over_bare_encode"] = row["bare_encode_seconds"] / row["sids_seconds"]
    row["raw_collision_rate"] = row.get("sids_metrics", {}).get("raw_collision_rate")
    return row


def print_table(rows: list[dict]) -> None:
    header = ("items", "codebook", "sids stage", "sids items/s", "bare encode", "faiss codes", "stage / bare", "check", "raw coll.", "driver RSS")
    print(" | ".join(header))
    for r in rows:
        print(" | ".join([
            f"{r['items']:,}",
            f"{r['codebook_seconds']:.1f} s",
            f"{r['sids_seconds']:.1f} s",
            f"{r['sids_items_per_s']:,.0f}",
            f"{r['bare_encode_seconds']:.1f} s",
            f"{r['faiss_compute_codes_seconds']:.1f} s",
            f"{r['ratio_sids_stage_over_bare_encode']:.2f}x",
            f"{r['check_seconds']:.1f} s" + (" (gate failed)" if "check_gate_failed" in r else "") if "check_seconds" in r else "-",
            f"{r['raw_collision_rate']:.2%}" if r["raw_collision_rate"] is not None else "-",
            f"{max(v for k, v in r.items() if k.startswith('driver_peak')):,.0f} MiB",
        ]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--files", type=int, default=8, help="Parquet files per input table")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-train-items", type=int, default=None,
                        help="codebook.max_train_items (default: the config's 200,000)")
    parser.add_argument("--embeddings-dir", type=Path, default=Path("/tmp"), help="where the sample vectors are cached")
    args = parser.parse_args(argv)

    from jobs.common.pipeline_config import PipelineConfig
    from jobs.common.spark import get_session

    from jobs.embed.config import EmbedConfig

    items = load_items(sys.maxsize)  # every sample item; write_inputs gives each copy its own text_hash
    base_vectors = load_embeddings([json.loads(line) for line in SAMPLE_CATALOG.open()], EmbedConfig(), args.embeddings_dir)
    spark = get_session(PipelineConfig.load().spark)
    base = Path(tempfile.mkdtemp(prefix="sids_scale_"))
    rows = []
    try:
        for n in args.items:
            overrides = {"codebook": {"max_train_items": args.max_train_items}} if args.max_train_items else {}
            rows.append(run_size(spark, base, n, scaled_embeddings(base_vectors, n, args.seed), items, args.files, overrides))
    finally:
        shutil.rmtree(base, ignore_errors=True)
        spark.stop()
    print_table(rows)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"machine": {"cpus": os.cpu_count(), "platform": platform.platform()}, "rows": rows}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""SID check stage on the bundled sample: the Spark stage against the same metrics computed by plain
pandas + numpy + faiss on in-memory arrays, in the same process.

Needs a run directory holding the sample's ``catalog`` and ``embeddings`` (any earlier ``sidpipe run``
or the embed/fuse benchmarks leave one); the benchmark copies them, trains the codebook and assigns
SIDs with the real ``codebook`` and ``sids`` stages, then times:

* check stage: ``jobs.check.main.run`` (every metric, as Spark jobs on the Parquet)
* plain: the headline metrics (collision rates, per-level usage, identical-text floor, category NMI,
  top-10 neighbour preservation) from pandas/numpy/faiss on the collected tables
* sids gate: the great-expectations suite on the SID table (``gate_stage("sids")``)

Run: ``.venv/bin/python benchmarks/check_sids.py --from-run <run dir with catalog + embeddings>``.
Prints a table and writes benchmarks/results/check_sids.json.
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
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
RESULTS = REPO / "benchmarks" / "results" / "check_sids.json"


def plain_metrics(sids, catalog, embeddings, k: int) -> dict:
    """The same headline metrics, single process, the plain-library way."""
    import faiss
    import numpy as np

    from jobs.check import metrics as M

    raw = sids["codes"].map(tuple)
    resolved = sids["sid"].map(tuple)
    out = {}
    for name, keys in (("raw", raw), ("resolved", resolved)):
        sizes = keys.value_counts()
        out[f"collision_rate_{name}"] = float(sizes[sizes > 1].sum() / len(keys))
    level1 = sids["codes"].map(lambda c: c[0])
    out["utilisation_l1_used"] = int(level1.nunique())
    merged = (
        sids[["item_id"]]
        .assign(c1=level1)
        .merge(catalog[["item_id", "text_hash", "category_path"]], on="item_id")
    )
    th = merged["text_hash"].value_counts()
    out["identical_text_floor"] = float(th[th > 1].sum() / len(merged))
    cat = merged["category_path"].map(lambda p: p[1] if p is not None and len(p) > 1 and p[1] else None)
    keep = cat.notna()
    out["category_nmi_l1"] = M.normalized_mutual_information(list(merged["c1"][keep]), list(cat[keep]))
    emb = embeddings.merge(sids[["item_id"]].assign(c1=level1), on="item_id")
    x = np.ascontiguousarray(np.stack(emb["embedding"].to_numpy()), dtype="float32")
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x)
    _, nn = index.search(x, k + 1)
    codes = emb["c1"].to_numpy()
    shares = [np.mean([codes[j] == codes[i] for j in row if j != i][:k]) for i, row in enumerate(nn)]
    out["nn_preservation"] = float(np.mean(shares))
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--from-run", required=True, type=Path, help="run dir with catalog/ and embeddings/")
    parser.add_argument(
        "--keep", type=Path, default=None, help="keep the benchmark run here (for the report)"
    )
    args = parser.parse_args()

    import pandas as pd

    from jobs.check.gates import gate_stage
    from jobs.check.main import run as check_run
    from jobs.check.report import write_report
    from jobs.codebook.main import run as codebook_run
    from jobs.common.layout import RunLayout
    from jobs.common.pipeline_config import PipelineConfig
    from jobs.common.spark import SparkConfig, get_session
    from jobs.common.stage import Inputs, StageContext
    from jobs.sids.main import run as sids_run

    root = args.keep or Path(tempfile.mkdtemp(prefix="check_bench_"))
    run_dir = root / "run"
    if run_dir.exists():
        shutil.rmtree(run_dir)
    layout = RunLayout(run_dir)
    source = RunLayout(args.from_run)
    for name in ("catalog", "embeddings"):
        shutil.copytree(getattr(source, name), getattr(layout, name))
    config = PipelineConfig.load(overrides={"check": {"max_largest_bucket_share": 1.0}})
    spark = get_session(SparkConfig(master="local[2]", shuffle_partitions=4, driver_memory="4g"))
    ctx = StageContext(
        spark=spark,
        layout=layout,
        config=config,
        inputs=Inputs("", ""),
        snapshot_id="bench",
        cache_dir=root / "cache",
    )
    results = {"codebook": codebook_run(ctx), "sids": sids_run(ctx)}

    t0 = time.perf_counter()
    check = check_run(ctx)
    check_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    check_run(ctx)  # warm: Python workers and JIT already up
    check_warm_s = time.perf_counter() - t0
    results["check"] = check

    t0 = time.perf_counter()
    sids = pd.read_parquet(layout.sids)
    catalog = pd.read_parquet(layout.catalog)
    embeddings = pd.read_parquet(layout.embeddings, columns=["item_id", "embedding"])
    plain = plain_metrics(sids, catalog, embeddings, config.check.nn_k)
    plain_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    gate = gate_stage("sids", ctx, results["sids"])
    gate_s = time.perf_counter() - t0
    write_report(ctx, results)

    m = check.metrics
    agree = {
        key: (m[key], plain[key])
        for key in (
            "collision_rate_raw",
            "collision_rate_resolved",
            "identical_text_floor",
            "category_nmi_l1",
            "nn_preservation",
        )
    }
    rows = [
        ("check stage (Spark, cold)", check_s, check_s / plain_s),
        ("check stage (Spark, warm)", check_warm_s, check_warm_s / plain_s),
        ("plain pandas+numpy+faiss", plain_s, 1.0),
        ("sids GE gate (Spark)", gate_s, gate_s / plain_s),
    ]
    print(f"{'what':32} {'seconds':>9} {'x plain':>8}")
    for name, secs, ratio in rows:
        print(f"{name:32} {secs:9.2f} {ratio:8.2f}")
    print("\nmetric: spark vs plain")
    for key, (a, b) in agree.items():
        print(f"  {key:26} {a:.6f} {b:.6f}")
    print(
        "\nsample metrics:", json.dumps({k: v for k, v in m.items() if not k.startswith("_")}, sort_keys=True)
    )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "machine": {
                    "cpus": os.cpu_count(),
                    "python": platform.python_version(),
                    "load_avg": os.getloadavg(),
                },
                "items": m["items"],
                "timings_s": {name: secs for name, secs, _ in rows},
                "ratios_vs_plain": {name: ratio for name, _, ratio in rows},
                "spark_vs_plain_metrics": agree,
                "check_metrics": {k: v for k, v in m.items() if not k.startswith("_")},
                "sids_gate": gate,
                "plain_utilisation_l1_used": plain["utilisation_l1_used"],
            },
            indent=2,
            sort_keys=True,
            default=str,
        )
    )
    print(f"\nwrote {RESULTS}; report in {layout.report}")


if __name__ == "__main__":
    main()

"""Cost of publishing a version, against the plain library calls it replaces, in one process.

Sections (each prints a table row; all go to benchmarks/results/publish_overhead.json):

* publish: ``sidpipe.publish.publish_version`` (validate markers, atomic rename, content fingerprints,
  SID churn against a parent, manifest, ``latest`` pointer) on a staged run the size of the full
  sample (4,344 items: catalog, SIDs, 384-d embeddings), against ``shutil.copytree`` of the same dir
  (what "copy the outputs to the release folder" costs) and against a bare ``os.rename``.
* fingerprint: ``data_fingerprints`` of that run against ``hashlib.sha256`` over the same bytes.
* churn: ``sid_churn`` (pyarrow joins) against the same numbers computed with ``pandas.merge``, on
  the sample's size and on a synthetic 1,000,000-item catalog. Target: churn <= pandas.

Run: ``.venv/bin/python benchmarks/publish_overhead.py [--items 4344] [--big-items 1000000]``.
"""

from __future__ import annotations

import argparse
import hashlib
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
RESULTS = REPO / "benchmarks" / "results" / "publish_overhead.json"

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from jobs.common.layout import RunLayout
from sidpipe.publish import DatasetPaths, data_fingerprints, publish_version, sid_churn


def timed(fn, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def write_run(run_dir: Path, n: int, *, seed: int, moved: float = 0.0) -> None:
    """A staged run: catalog (item_id, text_hash), SIDs (3 levels + collision digit), 384-d embeddings."""
    rng = np.random.default_rng(seed)
    layout = RunLayout(run_dir)
    ids = np.array([str(i) for i in range(n)], dtype=object)
    base = np.random.default_rng(0)
    codes = base.integers(0, 256, size=(n, 3)).astype(np.int32)
    text = np.array([f"h{i:08x}" for i in range(n)], dtype=object)
    if moved:
        changed = rng.random(n) < moved
        text[changed] = [f"x{i:08x}" for i in np.flatnonzero(changed)]
        codes[changed] = rng.integers(0, 256, size=(int(changed.sum()), 3))
    sid = np.concatenate([codes, np.arange(n, dtype=np.int32)[:, None] % 4], axis=1)
    tables = {
        layout.catalog: pa.table({"item_id": ids, "text_hash": text}),
        layout.sids: pa.table({"item_id": ids, "sid": pa.array(list(sid), pa.list_(pa.int32()))}),
        layout.embeddings: pa.table(
            {"item_id": ids, "vector": pa.array(list(rng.standard_normal((n, 384)).astype(np.float32)))}
        ),
    }
    for path, table in tables.items():
        path.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path / "part-00000.parquet")
    layout.stage_markers.mkdir(parents=True, exist_ok=True)
    layout.marker("ingest").write_text(json.dumps({"counts": {"items_out": n}}))


def churn_pandas(old_dir: Path, new_dir: Path) -> dict:

    def side(d: Path):
        layout = RunLayout(d)
        s = pq.read_table(layout.sids).to_pandas()
        s["sid_key"] = s["sid"].map(lambda a: "-".join(map(str, a)))
        return s[["item_id", "sid_key"]].merge(
            pq.read_table(layout.catalog).to_pandas(), on="item_id", how="left"
        )

    old, new = side(old_dir), side(new_dir)
    both = old.merge(new, on="item_id", suffixes=("_old", "_new"))
    same_text = both["text_hash_old"] == both["text_hash_new"]
    same_sid = both["sid_key_old"] == both["sid_key_new"]
    return {
        "unchanged_text_sid_changed": int((same_text & ~same_sid).sum()),
        "added": int((~new.item_id.isin(old.item_id)).sum()),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=4344)
    parser.add_argument("--big-items", type=int, default=1_000_000)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # publish vs copytree vs rename
        parent = tmp / "parent"
        write_run(parent, args.items, seed=1)
        times = {"publish_version": [], "copytree": [], "rename": []}
        for i in range(3):
            paths = DatasetPaths(tmp / f"root{i}", "sidpipe")
            write_run(paths.staging_dir("v"), args.items, seed=2, moved=0.05)
            started = time.perf_counter()
            publish_version(
                paths, "v", stages=["ingest"], manifest_fields={"parent_version": "p"}, parent_dir=parent
            )
            times["publish_version"].append(time.perf_counter() - started)
            src = tmp / f"copy_src{i}"
            write_run(src, args.items, seed=2)
            started = time.perf_counter()
            shutil.copytree(src, tmp / f"copy_dst{i}")
            times["copytree"].append(time.perf_counter() - started)
            started = time.perf_counter()
            os.rename(src, tmp / f"renamed{i}")
            times["rename"].append(time.perf_counter() - started)
        best = {k: min(v) for k, v in times.items()}
        size = sum(f.stat().st_size for f in parent.rglob("*") if f.is_file())
        rows.append(
            {
                "section": "publish",
                "items": args.items,
                "bytes": size,
                "publish_version_s": round(best["publish_version"], 4),
                "copytree_s": round(best["copytree"], 4),
                "rename_s": round(best["rename"], 6),
                "ratio_publish_vs_copytree": round(best["publish_version"] / best["copytree"], 2),
            }
        )
        # fingerprints vs sha256 over the same bytes
        files = sorted(f for f in parent.rglob("*.parquet"))
        fp = timed(lambda: data_fingerprints(parent))
        raw = timed(lambda: [hashlib.sha256(f.read_bytes()).hexdigest() for f in files])
        rows.append({"section": "fingerprint", "items": args.items, "data_fingerprints_s": round(fp, 4),
                     "sha256_s": round(raw, 4), "ratio": round(fp / raw, 2)})  # fmt: skip
        # churn vs pandas, at the sample's size and at a large synthetic size
        for n in (args.items, args.big_items):
            old, new = tmp / f"old{n}", tmp / f"new{n}"
            write_run(old, n, seed=1)
            write_run(new, n, seed=2, moved=0.05)
            ours = sid_churn(old, new)
            theirs = churn_pandas(old, new)
            assert ours["unchanged_text_sid_changed"] == theirs["unchanged_text_sid_changed"]
            t_ours = timed(lambda: sid_churn(old, new), repeat=2)  # noqa: B023
            t_pd = timed(lambda: churn_pandas(old, new), repeat=2)  # noqa: B023
            rows.append({"section": "churn", "items": n, "sid_churn_s": round(t_ours, 3), "pandas_merge_s": round(t_pd, 3),
                         "ratio": round(t_ours / t_pd, 2)})  # fmt: skip
    for row in rows:
        print(" | ".join(f"{k}={v}" for k, v in row.items()))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {"machine": {"cpus": os.cpu_count(), "python": platform.python_version()}, "rows": rows}, indent=2
        )
        + "\n"
    )
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()

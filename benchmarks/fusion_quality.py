"""How much each item space agrees with held-out co-interactions and with text semantics.

Runs the real fuse stage on the full bundled sample (4,344 items, 58,492 interactions) over the embed
stage's own vectors (``jobs.embed.text.embed_items`` with the configured ``embed`` section: MiniLM over
the text template blended with the category view; cached like ``sid_quality.py``), then prints one row
per space (text, collaborative, concat, fused) and writes the same numbers to
benchmarks/results/fusion_quality.json. Ratios are against the text space and against the concat
baseline, measured in the same process on the same held-out pairs. For the text and fused spaces it
also trains the configured codebook and reports how well SID level 1 follows the 2nd category level
(NMI and the share of the category's information), the number the check stage reports on a run.

    .venv/bin/python benchmarks/fusion_quality.py [--work-dir DIR] [--set fuse.key=value ...]
        [--set 'embed.views=[{"template": ["{category_path}"], "weight": 1.5}]']
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
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


def load_sample(embed_cfg) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Catalog and interactions of the bundled sample in the curated schemas (log order = seq_index)."""
    from jobs.embed.text import item_key, render_views

    catalog = pd.read_json(SAMPLE / "catalog.jsonl", lines=True, dtype={K.item_id: str})
    catalog[K.text_hash] = [item_key(render_views(r, embed_cfg), embed_cfg) for r in catalog.to_dict("records")]
    inter = pd.read_json(SAMPLE / "interactions.jsonl", lines=True, dtype={I.user_id: str, I.item_id: str})
    inter[I.seq_index] = inter.groupby(I.user_id, sort=False).cumcount().astype("int64")
    return catalog, inter


def stage_embeddings(embed_cfg, cache_dir: Path) -> np.ndarray:
    """The embed stage's vectors of the sample (plain Python twin of the stage, cached per config)."""
    from sid_quality import CATALOG, load_embeddings

    rows = [json.loads(line) for line in CATALOG.open()]
    return load_embeddings(rows, embed_cfg, cache_dir)


def sid_category_coherence(vectors: np.ndarray, catalog: pd.DataFrame, config) -> dict:
    """Level-1 NMI, category information share and raw SID collision rate of the configured codebook
    trained on ``vectors``."""
    from jobs.check.metrics import labels_information
    from tokenizer.metrics import collision_stats
    from tokenizer.train import fit

    cb = fit(vectors, config.seed, method=config.codebook.method, **config.codebook.fit_settings())
    codes = cb.encode(vectors)
    level1 = codes[:, 0]
    paths = catalog[K.category_path].tolist()
    keep = [i for i, p in enumerate(paths) if isinstance(p, list | np.ndarray) and len(p) > 1]
    info = labels_information(level1[keep].tolist(), [paths[i][1] for i in keep])
    return {"nmi_level1": round(info["nmi"], 4), "category_info_share_level1": round(info["info_share"], 4),
            "raw_sid_collision_rate": round(collision_stats(codes)["collision_rate"], 5)}


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
                        E.text_hash: catalog[K.text_hash], E.model_fingerprint: "embed-stage-vectors"})
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
    parser.add_argument("--embeddings-dir", default="/tmp", help="cache of the embed stage's vectors")
    parser.add_argument("--no-write", action="store_true", help="print only; leave benchmarks/results alone")
    args = parser.parse_args(argv)

    work = Path(args.work_dir)
    layout = RunLayout(work / "run")
    config = PipelineConfig.load(overrides=parse_overrides(args.set))
    spark = get_session(SparkConfig(master="local[2]", shuffle_partitions=4, driver_memory="4g"))

    t0 = time.perf_counter()
    catalog, inter = load_sample(config.embed)
    text = stage_embeddings(config.embed, Path(args.embeddings_dir))
    embed_s = time.perf_counter() - t0
    write_inputs(spark, layout, catalog, inter, text)

    from jobs.fuse.main import run

    ctx = StageContext(spark=spark, layout=layout, config=config, inputs=Inputs("", ""), snapshot_id="bench",
                       cache_dir=work / "cache")
    t0 = time.perf_counter()
    result = run(ctx)
    stage_s = time.perf_counter() - t0
    spaces = result.metrics["spaces"]
    fused = pd.read_parquet(layout.embeddings, columns=[E.item_id, E.embedding])
    fused = fused.set_index(E.item_id).loc[catalog[K.item_id]]
    sids = {"text": sid_category_coherence(text, catalog, config),
            config.fuse.space: sid_category_coherence(np.stack(fused[E.embedding].to_numpy()).astype(np.float32), catalog, config)}
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

    for name, m in sids.items():
        print(f"SID level 1 on the {name} space ({config.codebook.method} {config.codebook.levels}x{config.codebook.codebook_size}): "
              f"NMI with category {m['nmi_level1']:.3f}, category info {m['category_info_share_level1']:.1%}, "
              f"raw SID collisions {m['raw_sid_collision_rate']:.2%}")

    payload = {
        "benchmark": "fusion_quality",
        "date": time.strftime("%Y-%m-%d"),
        "machine": {"cpus": os.cpu_count()},
        "data": "samples/amazon_scientific (full), the embed stage's vectors",
        "embed": config.embed.to_dict(),
        "sid_level1_category": sids,
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

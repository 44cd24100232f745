"""Embedding throughput: the embed stage against bare ``SentenceTransformer.encode``, same texts, same process.

Sections (each prints a table row; all go to benchmarks/results/embed_throughput.json):

* cpu: items/s of bare ``encode`` (torch's default threads, batch 32), of the plain-Python fast path,
  and of the whole Spark stage (``jobs.embed.main.run`` on a cold cache, model already loaded in the
  Python workers, as in any job after its first task). Target: stage / bare >= 0.9.
* incremental: the stage on a new snapshot with 5% of the items changed, reusing the cache and the
  first full run as its previous version (as a rerun of the pipeline does), against the full cold run
  on the same items, best of 3 reruns and of 2 full runs. Target: <= 10% of the full time.
* gpu (only where CUDA exists): bare ``encode`` fp16 vs the fast path (pre-tokenised, length-sorted,
  pinned + async copies, tokenisation in a background thread) vs the forward pass alone.
  Target: fast path >= 5x bare encode.

Run: ``.venv/bin/python benchmarks/embed_throughput.py [--items 4344] [--incremental-items 4344]`` (about 20 min on 2
cores). The CPU ratio is measured on the whole sample by default: on 1,000 items the stage's fixed Spark
cost (rendering, quarantine, the output join and write: 3-6 s) is ~10% of the run.
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
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

SAMPLE = REPO / "samples" / "amazon_scientific" / "catalog.jsonl"
RESULTS = REPO / "benchmarks" / "results" / "embed_throughput.json"


def load_items(n: int) -> list[dict]:
    with open(SAMPLE, encoding="utf-8") as fh:
        items = [json.loads(line) for _, line in zip(range(n), fh)]
    for item in items:
        item.update(price=None, attributes=None, updated_at=None, text_hash="bench")
    return items


def changed_copy(items: list[dict], fraction: float, prefix: str = "Refurbished") -> tuple[list[dict], int]:
    """Items with ``fraction`` of them (every k-th) given a new title, ``prefix`` + the old one."""
    step = max(1, round(1 / fraction))
    out, changed = [], 0
    for i, item in enumerate(items):
        item = dict(item)
        if i % step == 0:
            item["title"] = f"{prefix} {item.get('title') or ''}"
            changed += 1
        out.append(item)
    return out, changed


def timed(fn):
    started = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - started


def stage_run(spark, base: Path, name: str, items: list[dict], cache: str, overrides: dict, previous: str | None = None):
    from jobs.common.io import write_table
    from jobs.common.layout import RunLayout
    from jobs.common.pipeline_config import PipelineConfig
    from jobs.common.stage import Inputs, StageContext
    from jobs.embed.main import run
    from schemas.catalog import CATALOG
    from schemas.convert import to_spark

    layout = RunLayout(base / name)
    write_table(spark.createDataFrame(items, to_spark(CATALOG)), layout.catalog, CATALOG, num_files=1)
    ctx = StageContext(
        spark=spark,
        layout=layout,
        config=PipelineConfig.load(overrides=overrides),
        inputs=Inputs("", ""),
        snapshot_id=name,
        cache_dir=base / cache,
        previous_version=base / previous if previous else None,
    )
    return timed(lambda: run(ctx))


def cpu_section(spark, base: Path, n_items: int, overrides: dict, repeats: int) -> dict:
    """Bare encode, fast path and Spark stage, alternated ``repeats`` times; the best time of each
    counts (a shared machine's noise only ever slows a run down)."""
    import numpy as np
    import torch
    from sentence_transformers import SentenceTransformer

    from jobs.common.pipeline_config import PipelineConfig
    from jobs.embed.encoder import EncoderSpec, get_encoder
    from jobs.embed.text import render_views

    cfg = PipelineConfig.load(overrides=overrides).embed
    items = load_items(n_items)
    # What the stage has to embed: each item's main text, plus each distinct view text (the category
    # paths many items share), the way a plain script would call the library.
    views = [render_views(item, cfg) for item in items]
    texts = [v[0] for v in views if v[0]] + sorted({t for v in views if v[0] for t in v[1:] if t})
    spec = EncoderSpec.from_config(cfg)

    bare_model = SentenceTransformer(spec.model_path, device="cpu", local_files_only=True)
    bare_model.max_seq_length = cfg.max_seq_length
    bare_model.encode(texts[:16], batch_size=32)
    encoder = get_encoder(spec)
    encoder.encode(texts[:16])
    # Load the model into the Python workers first (a real job pays this once per executor core).
    stage_run(spark, base, "warmup", load_items(40)[20:], "warmup_cache", overrides)

    bare_times, fast_times, stage_times = [], [], []
    for round_ in range(repeats):
        bare, seconds = timed(lambda: bare_model.encode(texts, batch_size=32, normalize_embeddings=True))
        bare_times.append(seconds)
        fast, seconds = timed(lambda: encoder.encode(texts))
        fast_times.append(seconds)
        result, seconds = stage_run(spark, base, f"cold{round_}", items, f"cache{round_}", overrides)
        if not stage_times or seconds < min(stage_times):
            best_result = result  # report the step timings of the round that counts
        stage_times.append(seconds)
    result = best_result
    items_out = result.counts["items_out"]
    bare_s, fast_s, stage_s = min(bare_times), min(fast_times), min(stage_times)
    return {
        "items": items_out,
        "texts": len(texts),
        "repeats": repeats,
        "torch_threads_driver": torch.get_num_threads(),
        "max_seq_length": cfg.max_seq_length,
        "bare_encode_seconds_all": bare_times,
        "fast_path_seconds_all": fast_times,
        "stage_seconds_all": stage_times,
        # items/s: catalog items whose vectors the call produced (bare and fast path encode ``texts``)
        "bare_encode_items_per_s": items_out / bare_s,
        "fast_path_items_per_s": items_out / fast_s,
        "fast_path_max_abs_diff_vs_bare": float(np.abs(fast - bare).max()),
        "stage_seconds": stage_s,
        "stage_items_per_s": items_out / stage_s,
        "stage_encode_items_per_s": result.metrics["encode_items_per_second"],
        "stage_step_seconds": result.metrics["step_seconds"],
        "ratio_stage_over_bare": bare_s / stage_s,
        "ratio_fast_path_over_bare": bare_s / fast_s,
        "target_ratio_stage_over_bare": 0.9,
    }


# One new title prefix per rerun, so every rerun embeds the changed items' texts afresh.
RERUN_PREFIXES = ("Refurbished", "Renewed", "Open-box", "Used", "Restored")


def incremental_section(spark, base: Path, n_items: int, fraction: float, overrides: dict, repeats: int) -> dict:
    """``repeats`` full runs (each on a fresh cache) and ``repeats + 1`` reruns (each changing the same
    items' titles anew); the best of each counts, as in the CPU section. All runs find the model
    already loaded in the Python workers: a cold run would also count the model load, which a rerun
    in a new job pays just the same."""
    stage_run(spark, base, "inc_warmup", load_items(40)[20:], "inc_warmup_cache", overrides)
    items = load_items(n_items)
    full_runs = [stage_run(spark, base, f"inc_full{i}", items, f"inc_cache{i}", overrides) for i in range(repeats)]
    reruns = []
    for prefix in RERUN_PREFIXES[: repeats + 1]:
        changed_items, n_changed = changed_copy(items, fraction, prefix)
        # A rerun on a new snapshot: the cache and the previous version are those of the first full run.
        reruns.append(stage_run(spark, base, f"inc_{prefix}", changed_items, "inc_cache0", overrides, previous="inc_full0"))
    full, full_s = min(full_runs, key=lambda r: r[1])
    rerun, rerun_s = min(reruns, key=lambda r: r[1])
    return {
        "items": full.counts["items_out"],
        "changed_items": n_changed,
        "full_seconds": full_s,
        "full_seconds_all": [round(s, 2) for _, s in full_runs],
        "incremental_seconds": rerun_s,
        "incremental_seconds_all": [round(s, 2) for _, s in reruns],
        "cache_hits": rerun.metrics["cache_hits"],
        "cache_misses": rerun.metrics["cache_misses"],
        "ratio_incremental_over_full": rerun_s / full_s,
        "target_ratio": 0.10,
    }


def gpu_section(n_items: int) -> dict | None:
    import numpy as np
    import torch

    if not torch.cuda.is_available():
        return None
    from sentence_transformers import SentenceTransformer

    from jobs.embed.config import EmbedConfig
    from jobs.embed.encoder import EncoderSpec, get_encoder, pad_batch, token_budget_batches
    from jobs.embed.text import render_text

    cfg = EmbedConfig(device="cuda")
    base_texts = [t for t in (render_text(item, cfg) for item in load_items(10**9)) if t]
    texts = (base_texts * (n_items // len(base_texts) + 1))[:n_items]
    spec = EncoderSpec.from_config(cfg)

    def sync_timed(fn):
        torch.cuda.synchronize()
        value, seconds = timed(fn)
        torch.cuda.synchronize()
        return value, seconds

    bare_model = SentenceTransformer(spec.model_path, device="cuda", local_files_only=True).half()
    bare_model.max_seq_length = cfg.max_seq_length
    bare_model.encode(texts[:2048], batch_size=256)
    bare_rates = {}
    for batch in (32, 256):
        bare, seconds = sync_timed(
            lambda b=batch: bare_model.encode(texts, batch_size=b, normalize_embeddings=True)
        )
        bare_rates[batch] = len(texts) / seconds

    encoder = get_encoder(spec)
    encoder.encode(texts[:4096])
    fast, fast_s = sync_timed(lambda: encoder.encode(texts))

    # Upper bound: the forward pass alone on pre-tokenised, padded, device-resident batches.
    plan = encoder._plan
    ids = plan.tokenizer(base_texts, truncation=True, max_length=encoder.max_length)["input_ids"]
    ids.sort(key=len, reverse=True)
    batches = []
    for sl in token_budget_batches([len(x) for x in ids], spec.batch_size * encoder.max_length):
        input_ids, mask = pad_batch(ids[sl], plan.pad_id)
        batches.append((torch.from_numpy(input_ids).cuda(), torch.from_numpy(mask).cuda()))
    reps = max(1, n_items // len(ids))

    def forward_only():
        with torch.inference_mode():
            for _ in range(reps):
                for input_ids, mask in batches:
                    plan.auto_model(
                        input_ids=input_ids, attention_mask=mask, token_type_ids=torch.zeros_like(input_ids)
                    )

    forward_only()
    _, forward_s = sync_timed(forward_only)
    best_bare = max(bare_rates.values())
    return {
        "device": torch.cuda.get_device_name(0),
        "items": len(texts),
        "batch_size": spec.batch_size,
        "bare_encode_items_per_s_batch32": bare_rates[32],
        "bare_encode_items_per_s_batch256": bare_rates[256],
        "fast_path_items_per_s": len(texts) / fast_s,
        "forward_only_items_per_s": reps * len(ids) / forward_s,
        "fast_path_max_abs_diff_vs_bare_fp16": float(np.abs(fast - bare).max()),
        "ratio_fast_path_over_best_bare": (len(texts) / fast_s) / best_bare,
        "target_ratio": 5.0,
    }


def print_table(results: dict) -> None:
    rows = []
    cpu, inc, gpu = results.get("cpu"), results.get("incremental"), results.get("gpu")
    if cpu:
        rows += [
            (
                "cpu",
                f"bare encode, {cpu['items']} items, best of {cpu['repeats']}",
                f"{cpu['bare_encode_items_per_s']:.1f} items/s",
                "",
            ),
            (
                "cpu",
                "fast path (plain Python)",
                f"{cpu['fast_path_items_per_s']:.1f} items/s",
                f"x{cpu['ratio_fast_path_over_bare']:.2f}",
            ),
            (
                "cpu",
                "Spark stage (cold cache)",
                f"{cpu['stage_items_per_s']:.1f} items/s",
                f"x{cpu['ratio_stage_over_bare']:.2f} (target >= 0.9)",
            ),
        ]
    if inc:
        rows += [
            ("incremental", f"full run, {inc['items']} items, best of {len(inc['full_seconds_all'])}",
             f"{inc['full_seconds']:.1f} s", ""),
            (
                "incremental",
                f"rerun, {inc['changed_items']} changed, best of {len(inc['incremental_seconds_all'])}",
                f"{inc['incremental_seconds']:.1f} s",
                f"{inc['ratio_incremental_over_full']:.1%} of full (target <= 10%)",
            ),
        ]
    if gpu:
        rows += [
            (
                "gpu",
                "bare encode fp16, batch 32",
                f"{gpu['bare_encode_items_per_s_batch32']:.0f} items/s",
                "",
            ),
            (
                "gpu",
                "bare encode fp16, batch 256",
                f"{gpu['bare_encode_items_per_s_batch256']:.0f} items/s",
                "",
            ),
            (
                "gpu",
                "fast path fp16",
                f"{gpu['fast_path_items_per_s']:.0f} items/s",
                f"x{gpu['ratio_fast_path_over_best_bare']:.1f} (target >= 5)",
            ),
            ("gpu", "forward pass only", f"{gpu['forward_only_items_per_s']:.0f} items/s", "upper bound"),
        ]
    elif "gpu" in results:
        rows.append(("gpu", "skipped: no CUDA device", "", ""))
    widths = [max(len(str(r[i])) for r in rows + [("section", "what", "speed", "ratio")]) for i in range(4)]
    for row in [("section", "what", "speed", "ratio")] + rows:
        print("  ".join(str(cell).ljust(w) for cell, w in zip(row, widths)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=4344, help="items for the CPU ratio (default: the whole sample)")
    parser.add_argument("--incremental-items", type=int, default=4344, help="items for the incremental rerun")
    parser.add_argument(
        "--repeats", type=int, default=2,
        help="alternated CPU rounds, and incremental full runs (reruns: one more); the best of each counts"
    )
    parser.add_argument("--changed", type=float, default=0.05, help="fraction of items changed in the rerun")
    parser.add_argument(
        "--gpu-items", type=int, default=50000, help="texts for the GPU section (sample repeated)"
    )
    parser.add_argument("--sections", default="cpu,incremental,gpu")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    sections = set(args.sections.split(","))

    from jobs.common.pipeline_config import PipelineConfig
    from jobs.common.spark import get_session

    overrides = {"embed": {"device": "cpu"}}
    results: dict = {
        "benchmark": "embed_throughput",
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    base = Path(tempfile.mkdtemp(prefix="embed_bench_"))
    try:
        if sections & {"cpu", "incremental"}:
            spark = get_session(PipelineConfig.load().spark)
            results["spark_default_parallelism"] = spark.sparkContext.defaultParallelism
            if "cpu" in sections:
                results["cpu"] = cpu_section(spark, base, args.items, overrides, args.repeats)
            if "incremental" in sections:
                results["incremental"] = incremental_section(
                    spark, base, args.incremental_items, args.changed, overrides, args.repeats
                )
        if "gpu" in sections:
            results["gpu"] = gpu_section(args.gpu_items)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print_table(results)
    if not args.no_write:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2, sort_keys=True))
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Codebook training and assignment at catalog scale: the sample's 4,344 real vectors, then 25k and
100k items around them, on CPU (and on CUDA with ``--device cuda`` for the RQ-VAE).

There is no real 100k-item catalog in the repository, so larger sets keep the sample's geometry: each
extra item is a sample vector plus Gaussian noise whose norm is half the sample's median
nearest-neighbour distance, renormalised (new items near real ones, none identical). Per size and
method it reports the training time and its ratio to faiss's ``ResidualQuantizer.train`` at the same
size in the same process (the plain library call), assignment throughput (``Codebook.encode``, the
function the sids stage's pandas UDF calls per batch) against faiss's ``compute_codes``, raw
collisions and level-1 utilisation.

    .venv/bin/python benchmarks/codebook_scale.py [--sizes 4344 25000 100000] [--methods rq_kmeans rqvae]
        [--device cpu|cuda] [--rqvae-max-items 25000]

Prints a table and writes benchmarks/results/codebook_scale.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from sid_quality import CATALOG, load_embeddings

from jobs.codebook.config import CodebookConfig
from jobs.embed.config import EmbedConfig
from tokenizer.metrics import collision_stats, level_usage
from tokenizer.train import fit

RESULTS = REPO / "benchmarks" / "results" / "codebook_scale.json"


def scaled_embeddings(base: np.ndarray, n: int, seed: int) -> np.ndarray:
    """``base`` followed by ``n - len(base)`` jittered copies of its rows (see the module docstring)."""
    import faiss

    if n <= len(base):
        return base[:n]
    index = faiss.IndexFlatL2(base.shape[1])
    index.add(base)
    dist, _ = index.search(base, 2)
    nn = float(np.median(np.sqrt(np.maximum(dist[:, 1], 0))))
    rng = np.random.default_rng(seed)
    src = base[rng.integers(0, len(base), n - len(base))]
    noise = rng.standard_normal(src.shape).astype(np.float32)
    noise *= 0.5 * nn / np.linalg.norm(noise, axis=1, keepdims=True)
    extra = src + noise
    extra /= np.linalg.norm(extra, axis=1, keepdims=True)
    return np.concatenate([base, extra]).astype(np.float32)


def faiss_baseline(x: np.ndarray, levels: int, bits: int) -> tuple[float, float]:
    """(train seconds, items/s of compute_codes) of faiss's ResidualQuantizer on ``x``."""
    import faiss

    rq = faiss.ResidualQuantizer(x.shape[1], levels, bits)
    t = time.perf_counter()
    rq.train(x)
    train_s = time.perf_counter() - t
    t = time.perf_counter()
    rq.compute_codes(x)
    return train_s, len(x) / (time.perf_counter() - t)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[4344, 25000, 100000])
    ap.add_argument("--methods", nargs="+", default=["rq_kmeans", "rqvae"], choices=["rq_kmeans", "rqvae"])
    ap.add_argument("--device", default="cpu", help="RQ-VAE device (cpu, cuda); RQ-KMeans runs on faiss-cpu")
    ap.add_argument("--rqvae-max-items", type=int, default=25000,
                    help="skip the RQ-VAE above this size (hours on 2 CPU cores at 100k); raise it on a GPU")
    ap.add_argument("--embeddings-dir", type=Path, default=Path("/tmp"))
    ap.add_argument("--seed", type=int, default=17)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)

    rows = [json.loads(line) for line in CATALOG.open()]
    base = load_embeddings(rows, EmbedConfig(), args.embeddings_dir)
    defaults = CodebookConfig()
    results = []
    for n in args.sizes:
        x = scaled_embeddings(base, n, args.seed)
        faiss_train_s, faiss_codes_per_s = faiss_baseline(x, defaults.levels, int(np.log2(defaults.codebook_size)))
        for method in args.methods:
            if method == "rqvae" and n > args.rqvae_max_items:
                continue
            cfg = defaults.model_copy(update={"method": method, "device": args.device if method == "rqvae" else "cpu"})
            t = time.perf_counter()
            cb = fit(x, args.seed, method=method, **cfg.fit_settings())
            train_s = time.perf_counter() - t
            t = time.perf_counter()
            codes = cb.encode(x)
            encode_s = time.perf_counter() - t
            coll = collision_stats(codes)
            usage = level_usage(codes, cb.codebook_size)
            results.append({
                "items": n,
                "method": method,
                "device": cfg.device,
                "train_seconds": round(train_s, 2),
                "faiss_rq_train_seconds": round(faiss_train_s, 2),
                "train_ratio_vs_faiss": round(train_s / faiss_train_s, 2),
                "encode_items_per_s": round(n / encode_s),
                "faiss_compute_codes_items_per_s": round(faiss_codes_per_s),
                "encode_ratio_vs_faiss": round(n / encode_s / faiss_codes_per_s, 2),
                "raw_collision_rate": coll["collision_rate"],
                "level1_used": usage[0]["used"],
                "perplexity": [round(u["perplexity"], 1) for u in usage],
            })
            print(json.dumps(results[-1]), flush=True)

    payload = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform()}, "config": defaults.model_dump(),
               "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2) + "\n")
    head = (f"{'items':>7} {'method':10} {'device':6} {'train s':>8} {'faiss RQ s':>10} {'ratio':>6} "
            f"{'encode/s':>9} {'faiss/s':>9} {'ratio':>6} {'raw coll':>8} {'L1 used':>7} {'perplexity':>20}")
    print(head)
    print("-" * len(head))
    for r in results:
        print(f"{r['items']:7d} {r['method']:10} {r['device']:6} {r['train_seconds']:8.1f} {r['faiss_rq_train_seconds']:10.1f} "
              f"{r['train_ratio_vs_faiss']:6.2f} {r['encode_items_per_s']:9d} {r['faiss_compute_codes_items_per_s']:9d} "
              f"{r['encode_ratio_vs_faiss']:6.2f} {r['raw_collision_rate']:8.2%} {r['level1_used']:7d} {r['perplexity']!s:>20}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

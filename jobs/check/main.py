"""Stage "check": SID quality metrics computed as Spark jobs on the run's Parquet, then the SID gates.

Metrics: full-SID collision rate raw (``codes``) and resolved (``sid``), prefix collision rate per
level, per-level utilisation / dead codes / perplexity / Gini, largest bucket and bucket-size
histogram, identical-text floor, category NMI of level 1, nearest-neighbour preservation, and SID
churn against the previous published version. Details (histograms, code counts) go to
``checks/check/sid_metrics.json`` for the report; scalars go into the StageResult. Thresholds in
the ``check`` config section turn metrics into a :class:`GateFailed`.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

from jobs.check import metrics as M
from jobs.check import transform as T
from jobs.check.gates import evaluate_sid_gates
from jobs.check.shape import codebook_shape
from jobs.common.io import atomic_write_text, read_table
from jobs.common.layout import RunLayout
from jobs.common.stage import GateFailed, StageContext, StageResult, stage_main
from schemas.catalog import CATALOG
from schemas.embeddings import EMBEDDINGS
from schemas.sids import SIDS

log = logging.getLogger("sidpipe.check")

DETAIL_FILE = "sid_metrics.json"


def detail_path(layout: RunLayout) -> Path:
    return layout.checks / "check" / DETAIL_FILE


def compute_sid_metrics(ctx: StageContext) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    """(scalar metrics, details for the report, notes)."""
    spark, layout = ctx.spark, ctx.layout
    notes: list[str] = []
    sids = read_table(spark, layout.sids, SIDS)
    catalog = read_table(spark, layout.catalog, CATALOG) if layout.catalog.exists() else None

    keys = T.sid_bucket_keys(sids)
    if catalog is not None:
        keys = keys.unionByName(T.text_hash_keys(sids, catalog))
    histograms: dict[str, dict[int, int]] = {}
    for row in T.bucket_size_histogram(keys).collect():
        histograms.setdefault(row[T.KEY_NAME], {})[int(row[T.BUCKET_SIZE])] = int(row[T.BUCKETS])
    resolved = M.bucket_metrics(histograms.get(T.RESOLVED_KEY, {}))
    n_items = resolved["items"]
    if n_items == 0:
        raise GateFailed(f"check: the SID table at {layout.sids} is empty (items = 0, threshold >= 1)")
    observed_levels = sum(1 for name in histograms if name.startswith("prefix_"))
    levels, sizes, shape_source = codebook_shape(ctx, observed_levels)
    sizes = sizes + [sizes[-1]] * (observed_levels - len(sizes))
    raw = M.bucket_metrics(histograms.get(T.prefix_key_name(observed_levels), {}))

    metrics: dict[str, Any] = {"items": n_items, "num_levels": levels, "codebook_size": sizes[0]}
    for suffix, values in (("raw", raw), ("resolved", resolved)):
        for key in ("collision_rate", "duplicate_rate", "largest_bucket", "largest_bucket_share", "distinct"):
            metrics[f"{key}_{suffix}"] = values[key]
    for level in range(1, observed_levels + 1):
        metrics[f"prefix_collision_rate_l{level}"] = M.bucket_metrics(histograms[T.prefix_key_name(level)])[
            "collision_rate"
        ]

    code_counts: dict[int, dict[int, int]] = {}
    for row in T.level_code_counts(sids).collect():
        code_counts.setdefault(int(row[T.LEVEL]), {})[int(row[T.CODE])] = int(row[T.ITEMS])
    for level in range(1, observed_levels + 1):
        usage = M.level_usage_metrics(
            code_counts.get(level, {}), sizes[level - 1] if level <= len(sizes) else None
        )
        for key in ("used_codes", "dead_codes", "utilisation", "perplexity", "gini"):
            metrics[f"{key}_l{level}"] = usage[key]
    if shape_source == "unknown":
        notes.append(
            "codebook size unknown (no codebook.json, no config): utilisation is relative to the largest code seen"
        )

    if catalog is not None:
        text = M.bucket_metrics(histograms.get(T.TEXT_KEY, {}))
        metrics["identical_text_floor"] = text["collision_rate"]
        metrics["identical_text_items"] = text["colliding_items"]
        sums = T.category_entropy_sums(sids, catalog)
        info = M.category_information(sums["n"], sums["sum_x"], sums["sum_y"], sums["sum_xy"])
        metrics["category_nmi_l1"] = info["nmi"]
        metrics["category_nmi_ceiling_l1"] = info["nmi_ceiling"]
        metrics["category_info_share_l1"] = info["info_share"]
        metrics["category_items"] = sums["n"]
    else:
        notes.append(f"no catalog at {layout.catalog}: identical-text floor and category NMI skipped")

    metrics.update(_nn_preservation(ctx, sids, code_counts.get(1, {}), notes))
    metrics.update(_churn(ctx, sids, catalog, notes))

    details = {
        "shape": {"num_levels": levels, "codebook_size": sizes, "source": shape_source},
        "bucket_size_histograms": {
            name: {str(k): v for k, v in sorted(h.items())} for name, h in sorted(histograms.items())
        },
        "level_code_counts": {
            str(lv): {str(c): n for c, n in sorted(cc.items())} for lv, cc in sorted(code_counts.items())
        },
        "metrics": metrics,
    }
    return metrics, details, notes


def _nn_preservation(
    ctx: StageContext, sids, level1_counts: dict[int, int], notes: list[str]
) -> dict[str, Any]:
    cfg, layout = ctx.config.check, ctx.layout
    if not cfg.nn_enabled:
        return {}
    source = next((p for p in (layout.embeddings, layout.text_embeddings) if p.exists()), None)
    if source is None:
        notes.append("no embeddings in this run: nearest-neighbour preservation skipped")
        return {}
    embeddings = read_table(ctx.spark, source, EMBEDDINGS)
    queries = T.sample_queries(embeddings, max_queries=cfg.nn_max_queries, seed=ctx.seed).collect()
    if len(queries) < 2:
        return {}
    import numpy as np

    ids = [row[0] for row in queries]
    vectors = np.asarray([row[1] for row in queries], dtype="float32")
    neighbours = T.nearest_neighbours(embeddings, ids, vectors, k=cfg.nn_k)
    share = T.neighbour_code_agreement(neighbours, sids)
    return {
        "nn_preservation": share,
        "nn_random_baseline": M.same_code_baseline(level1_counts),
        "nn_queries": len(ids),
        "nn_k": cfg.nn_k,
    }


def _churn(ctx: StageContext, sids, catalog, notes: list[str]) -> dict[str, Any]:
    if ctx.previous_version is None:
        return {}
    previous = ctx.previous_layout
    if not previous.sids.exists():
        notes.append(f"previous version {ctx.previous_version} has no sids table: churn skipped")
        return {}
    before = read_table(ctx.spark, previous.sids, SIDS)
    catalog_before = read_table(ctx.spark, previous.catalog, CATALOG) if previous.catalog.exists() else None
    if catalog is None or catalog_before is None:
        notes.append("churn counts every item present in both versions as unchanged (a catalog is missing)")
    counts = T.sid_churn_counts(sids, before, catalog, catalog_before)
    return {
        "churn": counts["changed"] / counts["unchanged"] if counts["unchanged"] else 0.0,
        "churn_unchanged_items": counts["unchanged"],
        "churn_changed_items": counts["changed"],
        "churn_new_items": counts["new"],
        "churn_removed_items": counts["removed"],
    }


def run(ctx: StageContext) -> StageResult:
    metrics, details, notes = compute_sid_metrics(ctx)
    failures = evaluate_sid_gates(metrics, ctx.config.check)
    details["gate_failures"] = failures
    path = detail_path(ctx.layout)
    atomic_write_text(path, json.dumps(details, indent=2, sort_keys=True))
    if failures:
        raise GateFailed("SID quality gate failed: " + "; ".join(failures))
    return StageResult(
        counts={"items": metrics["items"]},
        metrics=metrics,
        outputs={"sid_metrics": str(path)},
        notes=notes,
    )


if __name__ == "__main__":
    sys.exit(stage_main("check", run))

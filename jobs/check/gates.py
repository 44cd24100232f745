"""The gate the runner calls after every stage: GE suites on the stage's output plus config thresholds.

``gate_stage`` validates the tables a stage just wrote with the great-expectations suites in
``schemas/expectations`` (on Spark DataFrames), keeps GE's result JSON under
``layout.checks/<stage>/``, and raises :class:`GateFailed` naming the failing expectation or metric,
its value and the threshold. Nothing downstream runs and nothing is published after a failure.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from jobs.check.config import CheckConfig
from jobs.common.io import read_table
from jobs.common.stage import GateFailed, StageContext, StageResult

log = logging.getLogger("sidpipe.check")

# (metric in the check stage's StageResult.metrics, "max" | "min", CheckConfig field holding the threshold)
SID_GATES: list[tuple[str, str, str]] = [
    ("collision_rate_raw", "max", "max_raw_collision_rate"),
    ("collision_rate_resolved", "max", "max_resolved_collision_rate"),
    ("utilisation_l1", "min", "min_level1_utilisation"),
    ("largest_bucket_share_raw", "max", "max_largest_bucket_share"),
    ("category_nmi_l1", "min", "min_category_nmi"),
    ("nn_preservation", "min", "min_nn_preservation"),
    ("churn", "max", "max_churn"),
]


def threshold_failures(
    metrics: dict[str, Any], rules: list[tuple[str, str, str]], cfg: CheckConfig
) -> list[str]:
    """Messages ``metric = value > field = threshold`` for every violated rule. Rules whose threshold
    is None or whose metric was not computed (e.g. churn without a previous version) are skipped."""
    failures = []
    for metric, kind, field in rules:
        threshold = getattr(cfg, field)
        value = metrics.get(metric)
        if threshold is None or value is None:
            continue
        if kind == "max" and value > threshold:
            failures.append(f"{metric} = {value:.6g} > {field} = {threshold:g}")
        elif kind == "min" and value < threshold:
            failures.append(f"{metric} = {value:.6g} < {field} = {threshold:g}")
    return failures


def evaluate_sid_gates(metrics: dict[str, Any], cfg: CheckConfig) -> list[str]:
    return threshold_failures(metrics, SID_GATES, cfg)


def _validate(ctx: StageContext, stage: str, view, suite) -> tuple[dict[str, Any], list[str]]:
    from schemas.expectations import validate_dataframe

    outcome = validate_dataframe(
        view,
        suite,
        partial_unexpected_count=ctx.config.check.partial_unexpected_count,
        out_dir=ctx.layout.checks / stage,
        local_max_rows=ctx.config.check.validate_locally_max_rows,
    )
    log.info(
        "gate %s: suite %s %s (%d expectations, %s engine)",
        stage,
        suite.name,
        "passed" if outcome.success else "FAILED",
        outcome.evaluated,
        outcome.engine,
    )
    return {suite.name: outcome.summary()}, ([outcome.describe_failures()] if not outcome.success else [])


def _gate_ingest(ctx: StageContext, result: StageResult):
    from pyspark.sql import functions as F

    from schemas.catalog import CATALOG
    from schemas.expectations import catalog as catalog_suite
    from schemas.expectations import interactions as interactions_suite
    from schemas.interactions import INTERACTIONS
    from schemas.quarantine import QUARANTINE
    from schemas.quarantine import C as Q

    cfg, layout = ctx.config.check, ctx.layout
    catalog = read_table(ctx.spark, layout.catalog, CATALOG)
    interactions = read_table(ctx.spark, layout.interactions, INTERACTIONS)
    summary, failures = _validate(
        ctx,
        "ingest",
        catalog_suite.prepare(catalog),
        catalog_suite.build_suite(min_rows=cfg.min_catalog_items, min_text_share=cfg.min_text_share),
    )
    more, more_failures = _validate(
        ctx,
        "ingest",
        interactions_suite.prepare(interactions, catalog),
        interactions_suite.build_suite(min_rows=cfg.min_interactions, check_catalog=True),
    )
    summary.update(more)
    failures += more_failures
    if layout.quarantine.exists():
        quarantined = (
            read_table(ctx.spark, layout.quarantine, QUARANTINE).where(F.col(Q.stage) == "ingest").count()
        )
        kept = catalog.count() + interactions.count()
        share = quarantined / (quarantined + kept) if quarantined + kept else 0.0
        summary["quarantine_share"] = share
        failures += threshold_failures(
            {"quarantine_share": share}, [("quarantine_share", "max", "max_quarantine_share")], cfg
        )
    return summary, failures


def _embedding_gate(ctx: StageContext, stage: str, tables: list[tuple[str, Any]]):
    from schemas.embeddings import EMBEDDINGS
    from schemas.expectations import embeddings as embeddings_suite

    cfg = ctx.config.check
    summary: dict[str, Any] = {}
    failures: list[str] = []
    for name, path in tables:
        if not path.exists() and name != tables[0][0]:
            continue  # optional extra table (collaborative space) not produced in this configuration
        view = embeddings_suite.prepare(read_table(ctx.spark, path, EMBEDDINGS))
        suite = embeddings_suite.build_suite(
            name=name, unit_norm=cfg.require_unit_norm, norm_tolerance=cfg.embedding_norm_tolerance
        )
        more, more_failures = _validate(ctx, stage, view, suite)
        summary.update(more)
        failures += more_failures
    return summary, failures


def _gate_embed(ctx: StageContext, result: StageResult):
    return _embedding_gate(ctx, "embed", [("text_embeddings", ctx.layout.text_embeddings)])


def _gate_fuse(ctx: StageContext, result: StageResult):
    layout = ctx.layout
    return _embedding_gate(
        ctx, "fuse", [("embeddings", layout.embeddings), ("collab_embeddings", layout.collab_embeddings)]
    )


def _gate_sids(ctx: StageContext, result: StageResult):
    from jobs.check.shape import codebook_shape
    from schemas.catalog import CATALOG
    from schemas.expectations import sids as sids_suite
    from schemas.sids import SIDS

    cfg, layout = ctx.config.check, ctx.layout
    levels, sizes, _ = codebook_shape(ctx)
    known_sizes = [s for s in sizes if s]
    expected_rows = None
    if cfg.require_sid_per_catalog_item and layout.catalog.exists():
        expected_rows = read_table(ctx.spark, layout.catalog, CATALOG).count()
    suite = sids_suite.build_suite(
        num_levels=levels,
        codebook_size=max(known_sizes) if known_sizes else None,
        expected_rows=expected_rows,
    )
    return _validate(ctx, "sids", sids_suite.prepare(read_table(ctx.spark, layout.sids, SIDS)), suite)


def _gate_check(ctx: StageContext, result: StageResult):
    failures = evaluate_sid_gates(result.metrics, ctx.config.check)
    evaluated = [
        m for m, _, field in SID_GATES if getattr(ctx.config.check, field) is not None and m in result.metrics
    ]
    return {"sid_gates": {"evaluated": evaluated, "failed": failures}}, failures


def _gate_sft(ctx: StageContext, result: StageResult):
    from jobs.check.transform import sft_record_issues
    from schemas.expectations import sft as sft_suite
    from schemas.sft import SFT_RECORDS
    from schemas.sids import SIDS

    layout = ctx.layout
    sft = read_table(ctx.spark, layout.sft, SFT_RECORDS)
    issues = (
        sft_record_issues(sft, read_table(ctx.spark, layout.sids, SIDS)) if layout.sids.exists() else None
    )
    return _validate(ctx, "sft", sft_suite.prepare(sft, issues), sft_suite.build_suite(min_rows=1))


GATES: dict[str, Callable[[StageContext, StageResult], tuple[dict[str, Any], list[str]]]] = {
    "ingest": _gate_ingest,
    "embed": _gate_embed,
    "fuse": _gate_fuse,
    "sids": _gate_sids,
    "check": _gate_check,
    "sft": _gate_sft,
}


def gate_stage(stage: str, ctx: StageContext, result: StageResult) -> dict:
    """Run the gate of ``stage`` (after it wrote its outputs); return its summary for the manifest.

    Raises GateFailed listing every failing expectation / threshold. Stages without a gate return {}.
    """
    gate = GATES.get(stage)
    if gate is None:
        return {}
    summary, failures = gate(ctx, result)
    if failures:
        raise GateFailed(f"gate after stage {stage!r} failed: " + " | ".join(failures))
    return summary

"""Configuration of the check stage: every quality-gate threshold lives here.

A threshold of ``None`` disables that gate (the metric is still computed and reported).
"""

from __future__ import annotations

from pydantic import Field

from jobs.common.config import StageConfig


class CheckConfig(StageConfig):
    # --- SID gates (stage "check") -------------------------------------------------------------
    # Share of items whose raw quantizer codes equal another item's. A safety net against collapse,
    # not a quality target: plain RQ on the sample sits near 0.2-0.3 (see ANCHORS.md).
    max_raw_collision_rate: float | None = Field(default=0.5, ge=0.0, le=1.0)
    # After resolution the SID must be injective: any shared SID is a broken table.
    max_resolved_collision_rate: float | None = Field(default=0.0, ge=0.0, le=1.0)
    # Share of level-1 codes used at least once (CollisionGenRec's RQ-VAE uses 32/256 = 0.125).
    min_level1_utilisation: float | None = Field(default=0.1, ge=0.0, le=1.0)
    # Largest bucket of items sharing one raw full code, as a share of all items.
    max_largest_bucket_share: float | None = Field(default=0.05, ge=0.0, le=1.0)
    min_category_nmi: float | None = Field(default=None, ge=0.0, le=1.0)
    min_nn_preservation: float | None = Field(default=None, ge=0.0, le=1.0)
    # Share of unchanged items (same item_id and text_hash) whose SID changed since the previous version.
    max_churn: float | None = Field(default=0.1, ge=0.0, le=1.0)

    # --- codebook shape, when the codebook artifact does not say --------------------------------
    codebook_size: int | None = Field(default=None, ge=1)
    num_levels: int | None = Field(default=None, ge=1)

    # --- nearest-neighbour preservation ---------------------------------------------------------
    nn_enabled: bool = True
    nn_k: int = Field(default=10, ge=1, le=1000)
    # Query items are a deterministic hash sample of at most this many items; every item is a
    # candidate neighbour (searched partition by partition), so the driver holds only the queries.
    nn_max_queries: int = Field(default=5000, ge=1)

    # --- great-expectations suites (gates after ingest, embed, fuse, sids, sft) ------------------
    min_catalog_items: int = Field(default=1, ge=0)
    min_interactions: int = Field(default=1, ge=0)
    # Share of catalog items that must have non-empty title or description.
    min_text_share: float = Field(default=1.0, ge=0.0, le=1.0)
    max_quarantine_share: float | None = Field(default=0.5, ge=0.0, le=1.0)
    # One SID row per catalog item (rows in = rows out); turn off when a stage quarantines items.
    require_sid_per_catalog_item: bool = True
    require_unit_norm: bool = True
    embedding_norm_tolerance: float = Field(default=1e-3, gt=0.0, lt=1.0)
    # Views of at most this many rows are collected and validated by GE's pandas engine (the Spark
    # engine's per-expectation jobs cost seconds even on tiny tables); larger ones stay in Spark.
    # 0 = always Spark.
    validate_locally_max_rows: int = Field(default=100_000, ge=0)
    # Examples of failing values kept per expectation in the validation JSON.
    partial_unexpected_count: int = Field(default=20, ge=0, le=1000)

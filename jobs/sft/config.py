"""Configuration of the sft stage (the ``sft:`` section): tasks, mixture, caps, splits."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from jobs.common.config import StageConfig

TASK_NAMES = (
    "next_item",
    "next_item_from_text",
    "sid_to_item",
    "item_to_sid",
    "search",
    "constrained_rec",
    "diverse_rec",
    "preference_summary",
    "bundle",
    "sid_semantics",
    "listwise_rank",
    "multi_turn_fulfillment",
    "trending_rec",
)

# Training records per user and target for the user-level tasks; the sequential task gets the most.
_DEFAULT_PER_USER = {"next_item": 5, "next_item_from_text": 2}


class TaskConfig(StageConfig):
    enabled: bool = True
    # Mixture weight: the share of this task's *training* records kept (deterministic, by record id).
    weight: float = Field(default=1.0, gt=0.0, le=1.0)
    # Cap on records per split for this task (None: no cap); kept records are the lowest record ids.
    max_records: int | None = Field(default=None, ge=1)
    # User-level tasks: training records per user (the most recent eligible targets).
    per_user: int = Field(default=1, ge=1)


def _default_tasks() -> dict[str, TaskConfig]:
    return {name: TaskConfig(per_user=_DEFAULT_PER_USER.get(name, 1)) for name in TASK_NAMES}


class SftConfig(StageConfig):
    tasks: dict[str, TaskConfig] = Field(default_factory=_default_tasks)
    # auto: a global temporal cutoff when every interaction has a timestamp, leave-one-out otherwise.
    split_mode: Literal["auto", "leave_one_out", "temporal"] = "auto"
    # Temporal mode: the last fractions of the log's time range (by event count) go to validation / test.
    temporal_valid_fraction: float = Field(default=0.1, gt=0.0, lt=0.5)
    temporal_test_fraction: float = Field(default=0.1, gt=0.0, lt=0.5)
    # Evaluation targets per user and split (temporal mode: the earliest held-out events).
    eval_targets_per_user: int = Field(default=1, ge=1)
    # Item- and prefix-level tasks (grounding, search from derived queries, bundle, sid_semantics) have no
    # user: this fraction of their keys goes to validation and the same to test (hashed, stable).
    item_eval_fraction: float = Field(default=0.02, ge=0.0, lt=0.5)
    max_history: int = Field(default=10, ge=1)
    min_history: int = Field(default=1, ge=1)
    # listwise_rank: negatives per list, and the share of them drawn from the true item's SID prefix.
    num_negatives: int = Field(default=9, ge=1, le=99)
    same_prefix_fraction: float = Field(default=0.5, ge=0.0, le=1.0)
    # Candidate pools (per level-1 SID prefix, per category, global) broadcast to the record builders.
    pool_size: int = Field(default=24, ge=4, le=500)
    global_pool_size: int = Field(default=512, ge=16, le=100_000)
    # bundle: pairs within this many positions of each other in a user's training history.
    bundle_window: int = Field(default=3, ge=1)
    bundle_min_count: int = Field(default=2, ge=1)
    bundle_max_items: int = Field(default=5, ge=1)
    diverse_max_items: int = Field(default=5, ge=2)
    diverse_min_categories: int = Field(default=2, ge=2)
    constrained_max_items: int = Field(default=5, ge=1)
    search_max_items: int = Field(default=10, ge=1)
    # multi_turn_fulfillment: results shown per catalog observation; session length when the log has no sessions.
    dialogue_results: int = Field(default=6, ge=2, le=50)
    session_window: int = Field(default=3, ge=1)
    trend_window_days: float = Field(default=7.0, gt=0.0)
    trend_top_k: int = Field(default=5, ge=1)
    # Upper price bounds of the price bands (currency units); null prices have no band.
    price_bands: tuple[float, ...] = (10.0, 25.0, 50.0, 100.0)
    dedup: bool = True
    # Run sft_builder.validate.find_leaks on the written corpus; a leak fails the stage (GateFailed).
    check_leaks: bool = True
    write_hf_dataset: bool = True
    # Spark partitions of the per-user record building (0: the session's shuffle partitions).
    build_partitions: int = Field(default=0, ge=0)

    @field_validator("tasks", mode="before")
    @classmethod
    def _merge_task_defaults(cls, value):
        """A YAML section may name only the tasks it changes; the rest keep their defaults."""
        if value is None:
            return _default_tasks()
        unknown = sorted(set(value) - set(TASK_NAMES))
        if unknown:
            raise ValueError(f"unknown task(s) {unknown}; known: {list(TASK_NAMES)}")
        merged = {}
        for name in TASK_NAMES:
            base = {"per_user": _DEFAULT_PER_USER.get(name, 1)}
            given = value.get(name)
            if isinstance(given, TaskConfig):
                merged[name] = given
            else:
                merged[name] = {**base, **(given or {})}
        return merged

    @field_validator("price_bands")
    @classmethod
    def _ascending(cls, value):
        if list(value) != sorted(set(value)) or any(v <= 0 for v in value):
            raise ValueError("price_bands must be positive and strictly ascending")
        return value

    @model_validator(mode="after")
    def _check(self):
        if self.temporal_valid_fraction + self.temporal_test_fraction >= 0.9:
            raise ValueError("temporal_valid_fraction + temporal_test_fraction must leave training data (< 0.9)")
        return self

    def enabled_tasks(self) -> list[str]:
        return [name for name in TASK_NAMES if self.tasks[name].enabled]

"""The contract every pipeline stage implements.

A stage is ``run(ctx: StageContext) -> StageResult``: it reads its inputs from ``ctx.layout`` (and
``ctx.inputs`` for ingest), writes its outputs there, and returns counts and metrics for the
manifest. ``sidpipe run`` calls the stages in order inside one SparkSession; Airflow calls the same
function through each job's ``main.py`` under ``spark-submit`` (see :func:`stage_main`).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from jobs.common.layout import RunLayout
from jobs.common.logs import configure_logging

log = logging.getLogger("sidpipe")


class GateFailed(RuntimeError):
    """A quality gate failed: the message names the metric, its value and the threshold."""


@dataclass(frozen=True)
class Inputs:
    catalog: str
    interactions: str
    format: str = "auto"  # auto | parquet | jsonl | csv | lcrec


@dataclass
class StageContext:
    spark: Any  # pyspark.sql.SparkSession
    layout: RunLayout
    config: Any  # jobs.common.pipeline_config.PipelineConfig
    inputs: Inputs
    snapshot_id: str
    cache_dir: Path  # survives across runs and versions (embedding cache)
    previous_version: Path | None = None  # last published version dir, for frozen codebook and churn

    @property
    def seed(self) -> int:
        return self.config.seed

    @property
    def previous_layout(self) -> RunLayout | None:
        """Where the previous published version keeps each stage's output, or None without one."""
        return RunLayout(Path(self.previous_version)) if self.previous_version is not None else None


@dataclass
class StageResult:
    counts: dict[str, int] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"counts": self.counts, "metrics": self.metrics, "outputs": self.outputs, "notes": self.notes}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "StageResult":
        return cls(**{k: data.get(k) or type(getattr(cls(), k))() for k in ("counts", "metrics", "outputs", "notes")})


StageFn = Callable[[StageContext], StageResult]


def add_common_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run-dir", required=True, help="staging directory of this run")
    parser.add_argument("--config", default=None, help="YAML config (defaults: configs/default.yaml values)")
    parser.add_argument("--catalog", default=None, help="catalog input path (ingest)")
    parser.add_argument("--interactions", default=None, help="interaction log input path (ingest)")
    parser.add_argument("--format", default="auto", choices=["auto", "parquet", "jsonl", "csv", "lcrec"])
    parser.add_argument("--snapshot-id", default="sample")
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--previous-version", default=None)
    parser.add_argument("--master", default=None, help="Spark master (default from config: local[*])")


def context_from_args(args: argparse.Namespace) -> StageContext:
    from jobs.common.pipeline_config import PipelineConfig
    from jobs.common.spark import get_session

    config = PipelineConfig.load(args.config)
    spark = get_session(config.spark, master=args.master)
    run_dir = Path(args.run_dir)
    return StageContext(
        spark=spark,
        layout=RunLayout(run_dir),
        config=config,
        inputs=Inputs(args.catalog or "", args.interactions or "", args.format),
        snapshot_id=args.snapshot_id,
        cache_dir=Path(args.cache_dir) if args.cache_dir else run_dir.parent / "_cache",
        previous_version=Path(args.previous_version) if args.previous_version else None,
    )


def write_marker(ctx: StageContext, stage: str, result: StageResult) -> None:
    path = ctx.layout.marker(stage)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result.to_dict(), indent=2, sort_keys=True, default=str))
    os.replace(tmp, path)


def run_gate(stage: str, ctx: StageContext, result: StageResult) -> None:
    """Run the quality gate of ``stage`` on its output; raises GateFailed. Shared by every runner."""
    from jobs.check.gates import gate_stage

    findings = gate_stage(stage, ctx, result) or {}
    result.metrics["gate"] = {**(result.metrics.get("gate") or {}), **findings}


def stage_main(stage: str, fn: StageFn, argv: list[str] | None = None) -> int:
    """Entry point used by each ``jobs/<stage>/main.py`` under spark-submit or the CLI."""
    configure_logging()
    parser = argparse.ArgumentParser(prog=f"sidpipe-{stage}")
    add_common_args(parser)
    args = parser.parse_args(argv)
    ctx = context_from_args(args)
    try:
        result = fn(ctx)
        run_gate(stage, ctx, result)
    except GateFailed as exc:
        log.error("gate failed in stage %s: %s", stage, exc)
        return 3
    finally:
        ctx.spark.stop()
    # The same hash the in-process runner records, so either runner resumes the other's run.
    result.metrics["_config_hash"] = ctx.config.stage_hash(stage)
    write_marker(ctx, stage, result)
    print(json.dumps({"stage": stage, **result.to_dict()}, default=str, sort_keys=True))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit("run a stage through jobs/<stage>/main.py or `sidpipe run`")

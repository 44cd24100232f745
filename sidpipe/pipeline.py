"""Run the stages in order inside one SparkSession, then publish the staged run as a version.

A version id is a hash of what determines the data (snapshot id, input fingerprints, config hash,
code version), never of the parent or the clock: the same snapshot and config give the same id,
and an already published version is returned without redoing work. The run is staged under the
deterministic ``<root>/<dataset>/_staging/<version>/``; each stage writes a marker (its StageResult)
last, so a killed run resumes where it stopped. A per-version file lock keeps two runs of one
version apart; distinct versions run concurrently. Airflow drives the same functions task by task
(``dags/sidpipe_snapshot.py``): :func:`prepare_run` -> one spark-submit per stage -> :func:`publish_run`.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from jobs.common.config import hash_json
from jobs.common.io import atomic_write_text, fingerprint_path
from jobs.common.layout import RunLayout
from jobs.common.logs import configure_logging
from jobs.common.pipeline_config import REPO_ROOT, PipelineConfig, deep_merge
from jobs.common.spark import get_session
from jobs.common.stage import run_gate, GateFailed, Inputs, StageContext, StageResult, write_marker
from sidpipe.publish import (
    DatasetPaths,
    PublishError,
    file_lock,
    is_published,
    latest_version_dir,
    publish_version,
    read_manifest,
)

log = logging.getLogger("sidpipe")

# (stage name, "module:function"). Order is execution order; each stage's config section has its name.
STAGES: list[tuple[str, str]] = [
    ("ingest", "jobs.ingest.main:run"),
    ("embed", "jobs.embed.main:run"),
    ("fuse", "jobs.fuse.main:run"),
    ("codebook", "jobs.codebook.main:run"),
    ("sids", "jobs.sids.main:run"),
    ("check", "jobs.check.main:run"),
    ("sft", "jobs.sft.main:run"),
]

StageSpec = tuple[str, "str | Callable[[StageContext], StageResult]"]


# The packages whose code decides the data; their source is hashed into the version id.
CODE_PACKAGES = ("jobs", "schemas", "tokenizer", "sft_builder")


@lru_cache(maxsize=1)
def code_version() -> str:
    """``<package version>+<digest of the pipeline's source>``, computed once per process.

    A content digest rather than the git commit: it also holds for an installed wheel without .git,
    and a commit that touches only docs or tests does not invalidate published versions.
    ``SIDPIPE_CODE_VERSION`` overrides it (a deployment's release tag or image digest).
    """
    from sidpipe import __version__

    if os.environ.get("SIDPIPE_CODE_VERSION"):
        return os.environ["SIDPIPE_CODE_VERSION"]
    digest = hashlib.sha256()
    for package in CODE_PACKAGES:
        for path in sorted((REPO_ROOT / package).rglob("*.py")):
            digest.update(str(path.relative_to(REPO_ROOT)).encode() + b"\0" + path.read_bytes() + b"\0")
    return f"{__version__}+{digest.hexdigest()[:12]}"


def input_fingerprints(inputs: Inputs) -> dict[str, str]:
    return {
        "catalog": fingerprint_path(inputs.catalog),
        "interactions": fingerprint_path(inputs.interactions),
    }


def version_id(snapshot_id: str, fingerprints: dict[str, str], config_hash: str, code: str) -> str:
    """``<snapshot slug>-<12 hex>``: readable, filesystem-safe, and a pure function of its arguments."""
    digest = hash_json(
        {"snapshot_id": snapshot_id, "inputs": fingerprints, "config": config_hash, "code": code}
    )
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", snapshot_id).lstrip("._-")[:48] or "snapshot"
    return f"{slug}-{digest[:12]}"


def effective_config(config: PipelineConfig, *, force_retrain: bool = False) -> PipelineConfig:
    """``force_retrain`` is the config override ``codebook.force_retrain: true`` (so it changes the version)."""
    if not force_retrain:
        return config
    if "force_retrain" not in type(config.codebook).model_fields:
        log.warning("force_retrain requested but CodebookConfig has no force_retrain field yet: ignored")
        return config
    return PipelineConfig.from_mapping(deep_merge(config.to_dict(), {"codebook": {"force_retrain": True}}))


def resolve_stage(spec) -> Callable[[StageContext], StageResult]:
    if callable(spec):
        return spec
    module, func = spec.split(":")
    try:
        return getattr(importlib.import_module(module), func)
    except ModuleNotFoundError as exc:
        if exc.name == module:
            raise PublishError(f"stage {spec} is not available: module {module} does not exist") from None
        raise


# ------------------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class RunPlan:
    """Everything a run of one version needs, fixed before the first stage and saved beside staging."""

    root: Path
    dataset: str
    version: str
    snapshot_id: str
    inputs: Inputs
    config: PipelineConfig
    input_fingerprints: dict[str, str]
    code_version: str
    parent_version: str | None = None

    @property
    def paths(self) -> DatasetPaths:
        return DatasetPaths(self.root, self.dataset)

    @property
    def run_dir(self) -> Path:
        return self.paths.staging_dir(self.version)

    @property
    def final_dir(self) -> Path:
        return self.paths.version_dir(self.version)

    @property
    def previous_version(self) -> Path | None:
        return self.paths.version_dir(self.parent_version) if self.parent_version else None

    def manifest_fields(self) -> dict[str, Any]:
        return {
            "snapshot_id": self.snapshot_id,
            "inputs": {
                "catalog": self.inputs.catalog,
                "interactions": self.inputs.interactions,
                "format": self.inputs.format,
            },
            "input_fingerprints": self.input_fingerprints,
            "config": self.config.to_dict(),
            "config_hash": self.config.config_hash(),
            "code_version": self.code_version,
            "parent_version": self.parent_version,
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "root": str(self.root),
            "dataset": self.dataset,
            "version": self.version,
            **self.manifest_fields(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunPlan:
        return cls(
            root=Path(data["root"]),
            dataset=data["dataset"],
            version=data["version"],
            snapshot_id=data["snapshot_id"],
            inputs=Inputs(**data["inputs"]),
            config=PipelineConfig.from_mapping(data["config"]),
            input_fingerprints=data["input_fingerprints"],
            code_version=data["code_version"],
            parent_version=data.get("parent_version"),
        )


def plan_run(*, root: Path, inputs: Inputs, snapshot_id: str, config: PipelineConfig) -> RunPlan:
    """Compute the version; pin the parent (kept from an earlier attempt of this version if still published)."""
    if not snapshot_id or not str(snapshot_id).strip():
        raise ValueError("snapshot_id must be a non-empty string")
    fingerprints = input_fingerprints(inputs)
    code = code_version()
    version = version_id(snapshot_id, fingerprints, config.config_hash(), code)
    paths = DatasetPaths(Path(root), config.dataset)
    parent = None
    plan_file = paths.plan_file(version)
    if plan_file.is_file():
        pinned = json.loads(plan_file.read_text()).get("parent_version")
        if pinned and is_published(paths.version_dir(pinned)):
            parent = pinned
    if parent is None:
        found = latest_version_dir(paths.root, paths.dataset, exclude=version)
        parent = found.name if found else None
    return RunPlan(
        Path(root), config.dataset, version, snapshot_id, inputs, config, fingerprints, code, parent
    )


def save_plan(plan: RunPlan) -> Path:
    """Write the plan JSON and the resolved config YAML (what every spark-submit stage loads)."""
    atomic_write_text(
        plan.paths.config_file(plan.version), yaml.safe_dump(plan.config.to_dict(), sort_keys=True)
    )
    path = plan.paths.plan_file(plan.version)
    atomic_write_text(path, json.dumps(plan.to_dict(), indent=2, sort_keys=True) + "\n")
    return path


def load_plan(path: Path | str) -> RunPlan:
    return RunPlan.from_dict(json.loads(Path(path).read_text()))


def make_context(plan: RunPlan, spark) -> StageContext:
    return StageContext(
        spark=spark,
        layout=RunLayout(plan.run_dir),
        config=plan.config,
        inputs=plan.inputs,
        snapshot_id=plan.snapshot_id,
        cache_dir=plan.paths.cache_dir,
        previous_version=plan.previous_version,
    )


# -------------------------------------------------------------------------- gates, report, stages

def write_run_report(ctx: StageContext, results: dict[str, StageResult]) -> Path:
    from jobs.check.report import write_report

    return write_report(ctx, results)


def stage_complete(ctx: StageContext, stage: str) -> StageResult | None:
    """The saved result of ``stage`` if its marker exists and was made with the current stage config."""
    marker = ctx.layout.marker(stage)
    if not marker.is_file():
        return None
    saved = json.loads(marker.read_text())
    if saved.get("metrics", {}).get("_config_hash") != ctx.config.stage_hash(stage):
        return None
    return StageResult.from_dict(saved)


def run_stages(ctx: StageContext, stages: list[StageSpec] | None = None) -> dict[str, StageResult]:
    """Run each stage not already complete; gate it; write its marker last. GateFailed stops the run."""
    stages = stages or STAGES
    fns = {name: resolve_stage(spec) for name, spec in stages}  # fail before any work if one is missing
    results: dict[str, StageResult] = {}
    for name, _ in stages:
        saved = stage_complete(ctx, name)
        if saved is not None:
            log.info("stage %s already complete in %s: reusing", name, ctx.layout.run_dir)
            results[name] = saved
            continue
        log.info("stage %s: running", name)
        started = time.perf_counter()
        result = fns[name](ctx)
        try:
            run_gate(name, ctx, result)
        except GateFailed as exc:
            raise GateFailed(f"quality gate failed after stage {name!r}: {exc}") from exc
        result.metrics["_config_hash"] = ctx.config.stage_hash(name)
        result.metrics["_wall_seconds"] = round(time.perf_counter() - started, 3)
        write_marker(ctx, name, result)
        log.info("stage %s: done in %.1fs", name, result.metrics["_wall_seconds"])
        results[name] = result
    return results


# ------------------------------------------------------------------------------------- pipeline


@dataclass
class RunOutcome:
    version: str
    run_dir: Path  # the published version dir (or the staging dir if the run did not publish)
    results: dict[str, StageResult]
    published: Path | None
    parent_version: str | None = None
    reused: bool = False  # True when the version was already published and nothing ran
    manifest: dict[str, Any] = field(default_factory=dict)


def _published_outcome(plan: RunPlan, stage_names: list[str]) -> RunOutcome:
    # Completes the pointer if a crash came between manifest and `latest`.
    final = publish_version(
        plan.paths, plan.version, stages=stage_names, manifest_fields=plan.manifest_fields()
    )
    manifest = read_manifest(final)
    results = {k: StageResult.from_dict(v) for k, v in manifest.get("stages", {}).items()}
    return RunOutcome(plan.version, final, results, final, manifest.get("parent_version"), True, manifest)


def publish_run(plan: RunPlan, stage_names: list[str]) -> Path:
    """Validate and atomically publish a staged run (shared by :func:`run_pipeline` and the DAG)."""
    return publish_version(
        plan.paths,
        plan.version,
        stages=stage_names,
        manifest_fields=plan.manifest_fields(),
        parent_dir=plan.previous_version,
    )


def run_pipeline(
    *,
    root: Path,
    inputs: Inputs,
    snapshot_id: str,
    config: PipelineConfig,
    force_retrain: bool = False,
    master: str | None = None,
    stages: list[StageSpec] | None = None,
    lock_timeout: float | None = None,
) -> RunOutcome:
    """Run (or resume) the pipeline for one snapshot and publish it as a version under ``root``.

    ``lock_timeout``: seconds to wait for another run of the same version (None: wait until it ends).
    """
    stages = stages or STAGES
    names = [name for name, _ in stages]
    config = effective_config(config, force_retrain=force_retrain)
    root = Path(root)
    plan = plan_run(root=root, inputs=inputs, snapshot_id=snapshot_id, config=config)
    if is_published(plan.final_dir):
        log.info("version %s already published at %s: nothing to do", plan.version, plan.final_dir)
        return _published_outcome(plan, names)

    with file_lock(
        plan.paths.version_lock(plan.version), timeout=lock_timeout, what=f"version {plan.version}"
    ):
        if is_published(plan.final_dir):  # another run finished it while this one waited
            return _published_outcome(plan, names)
        plan = plan_run(
            root=root, inputs=inputs, snapshot_id=snapshot_id, config=config
        )  # parent may have moved
        if plan.final_dir.is_dir() and not plan.run_dir.exists():
            # Renamed but killed before its manifest: invisible; resume it from its markers.
            plan.run_dir.parent.mkdir(parents=True, exist_ok=True)
            plan.final_dir.rename(plan.run_dir)
        plan.run_dir.mkdir(parents=True, exist_ok=True)
        save_plan(plan)
        log.info(
            "run %s (snapshot %s, parent %s) staged in %s",
            plan.version,
            snapshot_id,
            plan.parent_version,
            plan.run_dir,
        )

        # Spark starts only when there is work for it: publishing a fully staged run needs none.
        ctx = make_context(plan, None)
        if any(stage_complete(ctx, name) is None for name in names):
            ctx.spark = get_session(config.spark, master=master)
        results = run_stages(ctx, stages)
        if ctx.spark is None:  # the report reads the staged tables with Spark
            ctx.spark = get_session(config.spark, master=master)
        write_run_report(ctx, results)
        final = publish_run(plan, names)
    manifest = read_manifest(final)
    return RunOutcome(plan.version, final, results, final, plan.parent_version, False, manifest)


# ----------------------------------------------------------------------------- Airflow task bodies


def prepare_run(
    *,
    root: str,
    catalog: str,
    interactions: str,
    input_format: str,
    snapshot_id: str,
    config_path: str | None,
    force_retrain: bool,
    stage_names: list[str],
) -> dict[str, Any]:
    """Body of the DAG's ``prepare`` task: plan the version, stage dir and resolved config (no Spark)."""
    config = effective_config(PipelineConfig.load(config_path or None), force_retrain=force_retrain)
    plan = plan_run(
        root=Path(root),
        inputs=Inputs(catalog, interactions, input_format),
        snapshot_id=snapshot_id,
        config=config,
    )
    published = is_published(plan.final_dir)
    if not published:
        with file_lock(plan.paths.version_lock(plan.version), what=f"version {plan.version}"):
            if plan.final_dir.is_dir() and not plan.run_dir.exists():
                plan.run_dir.parent.mkdir(parents=True, exist_ok=True)
                plan.final_dir.rename(plan.run_dir)
            plan.run_dir.mkdir(parents=True, exist_ok=True)
            save_plan(plan)
    done = [s for s in stage_names if RunLayout(plan.run_dir).marker(s).is_file()]
    return {
        "version": plan.version,
        "published": published,
        "run_dir": str(plan.run_dir),
        "final_dir": str(plan.final_dir),
        "plan_file": str(plan.paths.plan_file(plan.version)),
        "config_file": str(plan.paths.config_file(plan.version)),
        "cache_dir": str(plan.paths.cache_dir),
        "previous_version": str(plan.previous_version or ""),
        "parent_version": plan.parent_version or "",
        "stages_already_complete": done,
    }


def publish_prepared(plan_file: str, stage_names: list[str]) -> dict[str, Any]:
    """Body of the DAG's ``publish`` task: the staged markers must all be there, then publish atomically."""
    plan = load_plan(plan_file)
    with file_lock(plan.paths.version_lock(plan.version), what=f"version {plan.version}"):
        final = publish_run(plan, stage_names)
    manifest = read_manifest(final)
    return {"version": plan.version, "path": str(final), "codebook_id": manifest.get("codebook_id")}


def _main(argv: list[str] | None = None) -> int:
    """spark-submit entry of the DAG's ``report`` task: the run report over every staged stage result."""
    import argparse

    from sidpipe.publish import read_markers

    configure_logging()
    parser = argparse.ArgumentParser(prog="sidpipe-pipeline")
    commands = parser.add_subparsers(dest="command", required=True)
    report = commands.add_parser("report", help="write the run report of a staged run")
    report.add_argument("--plan-file", required=True)
    report.add_argument("--stages", required=True, help="comma-separated stage names, in order")
    args = parser.parse_args(argv)
    plan = load_plan(args.plan_file)
    names = [s for s in args.stages.split(",") if s]
    results = {name: StageResult.from_dict(m) for name, m in read_markers(plan.run_dir, names).items()}
    spark = get_session(plan.config.spark)
    try:
        path = write_run_report(make_context(plan, spark), results)
    finally:
        spark.stop()
    print(json.dumps({"version": plan.version, "report": str(path)}))
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(_main())

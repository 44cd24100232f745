"""Run the stages in order inside one SparkSession, then publish the staged run as a version.

Stages are resumable: each writes a marker (its StageResult) last, and a rerun of the same version
skips stages whose marker matches the stage's config hash. A killed run leaves only staging behind;
readers see a version only once its manifest exists.
"""

from __future__ import annotations

import importlib
import json
import logging
import subprocess
from dataclasses import dataclass
from pathlib import Path

from jobs.common.config import hash_json
from jobs.common.io import fingerprint_path
from jobs.common.layout import RunLayout
from jobs.common.pipeline_config import REPO_ROOT, PipelineConfig
from jobs.common.stage import Inputs, StageContext, StageResult, write_marker

log = logging.getLogger("sidpipe")

# (stage name, "module:function"). Order is execution order; each stage's config section has its name.
STAGES: list[tuple[str, str]] = [
    ("ingest", "jobs.ingest.main:run"),
]


def code_version() -> str:
    from sidpipe import __version__

    try:
        sha = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, timeout=5
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha = ""
    return f"{__version__}+{sha}" if sha else __version__


def input_fingerprints(inputs: Inputs) -> dict[str, str]:
    return {"catalog": fingerprint_path(inputs.catalog), "interactions": fingerprint_path(inputs.interactions)}


def resolve_stage(spec: str):
    module, func = spec.split(":")
    return getattr(importlib.import_module(module), func)


@dataclass
class RunOutcome:
    version: str
    run_dir: Path
    results: dict[str, StageResult]
    published: Path | None


def run_stages(ctx: StageContext, stages: list[tuple[str, str]] | None = None) -> dict[str, StageResult]:
    results: dict[str, StageResult] = {}
    for name, spec in stages or STAGES:
        marker = ctx.layout.marker(name)
        stage_hash = ctx.config.stage_hash(name)
        if marker.is_file():
            saved = json.loads(marker.read_text())
            if saved.get("metrics", {}).get("_config_hash") == stage_hash:
                log.info("stage %s already complete in %s: reusing", name, ctx.layout.run_dir)
                results[name] = StageResult.from_dict(saved)
                continue
        log.info("stage %s: running", name)
        result = resolve_stage(spec)(ctx)
        result.metrics["_config_hash"] = stage_hash
        write_marker(ctx, name, result)
        results[name] = result
    return results

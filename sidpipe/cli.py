"""The ``sidpipe`` command: run the pipeline, run one stage, list and diff published versions."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from jobs.common.logs import configure_logging
from jobs.common.pipeline_config import REPO_ROOT
from jobs.common.spark import stop_active_session

SAMPLE = REPO_ROOT / "samples" / "amazon_scientific"
STAGE_NAMES = ("ingest", "embed", "fuse", "codebook", "sids", "check", "sft")


def _cmd_run(args: argparse.Namespace) -> int:
    from jobs.common.config import ConfigError
    from jobs.common.pipeline_config import PipelineConfig
    from jobs.common.stage import GateFailed, Inputs
    from sidpipe.pipeline import run_pipeline

    try:
        config = PipelineConfig.load(args.config)
    except ConfigError as exc:
        print(f"sidpipe: {exc}", file=sys.stderr)
        return 2
    inputs = Inputs(str(args.catalog), str(args.interactions), args.format)
    try:
        outcome = run_pipeline(
            root=Path(args.root), inputs=inputs, snapshot_id=args.snapshot_id, config=config,
            force_retrain=args.force_retrain, master=args.master,
        )
    except GateFailed as exc:
        print(f"sidpipe: quality gate failed, nothing published: {exc}", file=sys.stderr)
        return 3
    print(render_summary(outcome))
    return 0


def render_summary(outcome) -> str:
    """A short human summary of a run: version, counts per stage, where the outputs are."""
    manifest = outcome.manifest or {}
    lines = [
        "",
        f"sidpipe: version {outcome.version}" + (" (already published, nothing ran)" if outcome.reused else ""),
        f"  snapshot {manifest.get('snapshot_id')}, parent {outcome.parent_version or '-'}, codebook {manifest.get('codebook_id')}",
    ]
    for stage, section in (manifest.get("stages") or {}).items():
        counts = section.get("counts") or {}
        shown = ", ".join(f"{k}={v}" for k, v in list(counts.items())[:8])
        lines.append(f"  {stage:<9} {shown}")
    path = Path(outcome.published or outcome.run_dir)
    lines += [
        f"  outputs:  {path}",
        f"  report:   {path / 'report'}",
        f"  dataset:  {path / 'hf_dataset'}  (sidpipe.load({str(path.parent.parent)!r}))",
    ]
    return "\n".join(lines)


def _cmd_stage(args: argparse.Namespace) -> int:
    from jobs.common.stage import stage_main
    from sidpipe.pipeline import STAGES, resolve_stage

    spec = dict(STAGES)[args.name]
    return stage_main(args.name, resolve_stage(spec), args.stage_args)


def _cmd_versions(args: argparse.Namespace) -> int:
    from sidpipe.publish import list_versions

    rows = list_versions(args.root, args.dataset)
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
        return 0
    if not rows:
        print(f"no published versions of {args.dataset} under {args.root}")
        return 0
    keys = ("ingest.items_out", "sft.records", "check.raw_collision_rate")
    print(f"{'version':<34} {'latest':<6} {'snapshot':<12} {'codebook':<18} " + " ".join(f"{k:<24}" for k in keys))
    for r in rows:
        values = [r["counts"].get(k, r["metrics"].get(k, "")) for k in keys]
        print(f"{r['version']:<34} {'*' if r['latest'] else '':<6} {str(r['snapshot_id']):<12} {str(r['codebook_id'])[:18]:<18} "
              + " ".join(f"{str(v):<24}" for v in values))
    return 0


def _cmd_diff(args: argparse.Namespace) -> int:
    from sidpipe.publish import diff_versions

    print(json.dumps(diff_versions(args.root, args.dataset, args.v1, args.v2), indent=2, default=str))
    return 0


def _cmd_synth(args: argparse.Namespace) -> int:
    from sidpipe.synthetic import generate

    cat, inter = generate(args.out, n_items=args.items, n_users=args.users, n_interactions=args.interactions,
                          seed=args.seed, timestamps=not args.no_timestamps, queries=not args.no_queries)
    print(f"wrote {cat} and {inter}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sidpipe", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the whole pipeline and publish a version (default: the bundled sample)")
    run.add_argument("--catalog", default=str(SAMPLE / "catalog.jsonl"))
    run.add_argument("--interactions", default=str(SAMPLE / "interactions.jsonl"))
    run.add_argument("--format", default="auto", choices=["auto", "parquet", "jsonl", "csv", "lcrec"])
    run.add_argument("--root", default=os.environ.get("SIDPIPE_ROOT", "out"), help="publishing root (default ./out)")
    run.add_argument("--snapshot-id", default="amazon-scientific")
    run.add_argument("--config", default=None, help="YAML config (default configs/default.yaml)")
    run.add_argument("--master", default=None, help="Spark master, e.g. local[*] or spark://host:7077")
    run.add_argument("--force-retrain", action="store_true", help="train a new codebook even if one can be reused")
    run.set_defaults(fn=_cmd_run)

    stage = sub.add_parser("stage", help="run one stage on a run dir (what Airflow submits)")
    stage.add_argument("name", choices=STAGE_NAMES)
    stage.add_argument("stage_args", nargs=argparse.REMAINDER, help="--run-dir ... (see jobs/common/stage.py)")
    stage.set_defaults(fn=_cmd_stage)

    versions = sub.add_parser("versions", help="list published versions with key metrics")
    versions.add_argument("root")
    versions.add_argument("--dataset", default="sidpipe")
    versions.add_argument("--json", action="store_true")
    versions.set_defaults(fn=_cmd_versions)

    diff = sub.add_parser("diff", help="what changed between two versions (counts, SID churn, codebook)")
    diff.add_argument("v1")
    diff.add_argument("v2")
    diff.add_argument("--root", default=os.environ.get("SIDPIPE_ROOT", "out"))
    diff.add_argument("--dataset", default="sidpipe")
    diff.set_defaults(fn=_cmd_diff)

    synth = sub.add_parser("synth", help="write a synthetic catalog + log (Parquet) of any size")
    synth.add_argument("out")
    synth.add_argument("--items", type=int, default=10_000)
    synth.add_argument("--users", type=int, default=5_000)
    synth.add_argument("--interactions", type=int, default=100_000)
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--no-timestamps", action="store_true")
    synth.add_argument("--no-queries", action="store_true")
    synth.set_defaults(fn=_cmd_synth)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # -v also lets the libraries' INFO through
    configure_logging(
        logging.INFO if args.verbose or args.command == "run" else logging.WARNING,
        library_level=logging.INFO if args.verbose else logging.WARNING,
    )
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        return args.fn(args)
    finally:
        stop_active_session()


if __name__ == "__main__":
    sys.exit(main())

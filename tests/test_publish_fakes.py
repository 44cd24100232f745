"""Helpers for the publishing tests: snapshot slices of the bundled sample, and tiny stage functions.

The stage functions here exist ONLY to exercise the publishing machinery (staging, markers, locks,
rename, manifest, pointer, churn): they write small real tables with pyarrow, deterministically,
and follow the stage contract. Tests of the real stages live with those stages and in
``test_rerun_real.py``. No tests in this module.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from jobs.common.layout import RunLayout
from jobs.common.stage import GateFailed, StageContext, StageResult
from schemas.catalog import C as CAT
from schemas.interactions import C as INT
from schemas.sids import C as S

SAMPLE_DIR = Path(__file__).resolve().parent.parent / "samples" / "amazon_scientific"

# ----------------------------------------------------------------------------- snapshot slices


def _read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def write_snapshot(
    dst: Path,
    *,
    n_items: int,
    changed: float = 0.0,
    added: float = 0.0,
    removed: float = 0.0,
) -> tuple[Path, Path, dict[str, list[str]]]:
    """Write a catalog + interaction slice of the sample: the first ``n_items`` items, then the churn.

    ``changed``/``removed`` pick items spread over the slice (every k-th), ``added`` takes the next
    items of the sample. Interactions keep only events on items of this snapshot, in log order.
    Returns (catalog path, interactions path, {"changed": ids, "added": ids, "removed": ids}).
    """
    items = _read_jsonl(SAMPLE_DIR / "catalog.jsonl")
    base = items[:n_items]
    n_changed, n_added, n_removed = round(n_items * changed), round(n_items * added), round(n_items * removed)
    removed_ids = [base[i][CAT.item_id] for i in range(1, n_items, max(1, n_items // max(n_removed, 1)))][
        :n_removed
    ]
    keep = [dict(it) for it in base if it[CAT.item_id] not in set(removed_ids)]
    changed_ids = []
    step = max(1, len(keep) // max(n_changed, 1))
    for i in range(0, len(keep), step):
        if len(changed_ids) == n_changed:
            break
        keep[i][CAT.title] = f"{keep[i].get(CAT.title) or ''} (new edition)"
        changed_ids.append(keep[i][CAT.item_id])
    new_items = items[n_items : n_items + n_added]
    catalog = keep + new_items
    ids = {it[CAT.item_id] for it in catalog}
    interactions = [r for r in _read_jsonl(SAMPLE_DIR / "interactions.jsonl") if r[INT.item_id] in ids]
    dst.mkdir(parents=True, exist_ok=True)
    cat_path, int_path = dst / "catalog.jsonl", dst / "interactions.jsonl"
    cat_path.write_text("".join(json.dumps(it, sort_keys=True) + "\n" for it in catalog))
    int_path.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in interactions))
    churn = {"changed": changed_ids, "added": [it[CAT.item_id] for it in new_items], "removed": removed_ids}
    return cat_path, int_path, churn


def small_pipeline_overrides() -> dict:
    """Config overrides that keep the real stages small on a ~100-item slice (only fields that exist)."""
    from jobs.codebook.config import CodebookConfig

    overrides: dict = {"spark": {"master": "local[2]", "shuffle_partitions": 2}}
    if {"codebook_size", "levels"} <= set(CodebookConfig.model_fields):
        overrides["codebook"] = {"codebook_size": 8, "levels": 3}
    # 100 items need far fewer contrastive steps than a catalog (the fusion's value is tested in
    # tests/jobs/test_fuse_stage.py at its default settings).
    overrides["fuse"] = {"train_steps": 60}
    return overrides


# --------------------------------------------------------------------- fake stages (machinery only)

CALLS: dict[str, int] = {}
FAIL_AT: set[str] = set()  # stage names that raise (a crash injected mid-run)
SLOW: dict[str, float] = {}  # stage name -> seconds to sleep (to overlap concurrent runs / be killed)
STARTED_FLAG: dict[str, Path] = {}  # stage name -> file touched when the stage starts
_lock = threading.Lock()


class InjectedCrash(RuntimeError):
    pass


def _enter(ctx: StageContext, name: str) -> None:
    with _lock:
        CALLS[name] = CALLS.get(name, 0) + 1
    if name in STARTED_FLAG:
        STARTED_FLAG[name].touch()
    if name in SLOW:
        time.sleep(SLOW[name])
    if name in FAIL_AT:
        raise InjectedCrash(f"injected crash in stage {name}")


def _write(table: pa.Table, path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path / "part-00000.parquet")


def _text_hash(item: dict) -> str:
    text = json.dumps([item.get(CAT.title), item.get(CAT.description), item.get(CAT.brand)])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def fake_ingest(ctx: StageContext) -> StageResult:
    _enter(ctx, "ingest")
    items = sorted(_read_jsonl(Path(ctx.inputs.catalog)), key=lambda it: it[CAT.item_id])
    table = pa.table(
        {
            CAT.item_id: [it[CAT.item_id] for it in items],
            CAT.title: [it.get(CAT.title) for it in items],
            CAT.text_hash: [_text_hash(it) for it in items],
        }
    )
    _write(table, ctx.layout.catalog)
    return StageResult(counts={"items_out": table.num_rows}, outputs={"catalog": str(ctx.layout.catalog)})


def fake_codebook(ctx: StageContext) -> StageResult:
    _enter(ctx, "codebook")
    codebook_id = "cb-frozen-1"
    if ctx.previous_version is not None:
        prev = json.loads((RunLayout(ctx.previous_version).codebook / "codebook.json").read_text())
        codebook_id = prev["codebook_id"]
    ctx.layout.codebook.mkdir(parents=True, exist_ok=True)
    (ctx.layout.codebook / "codebook.json").write_text(json.dumps({"codebook_id": codebook_id}))
    return StageResult(
        metrics={"codebook_id": codebook_id, "decision": "reuse" if ctx.previous_version else "train"}
    )


def fake_sids(ctx: StageContext) -> StageResult:
    """Content SIDs (text hash -> 2 digits) + a collision digit; kept from the parent for unchanged text."""
    _enter(ctx, "sids")
    catalog = pq.read_table(str(ctx.layout.catalog)).to_pylist()
    kept: dict[str, list[int]] = {}
    used: set[tuple[int, ...]] = set()
    if ctx.previous_version is not None:
        parent = RunLayout(ctx.previous_version)
        old_cat = {r[CAT.item_id]: r[CAT.text_hash] for r in pq.read_table(str(parent.catalog)).to_pylist()}
        for row in pq.read_table(str(parent.sids)).to_pylist():
            used.add(tuple(row[S.sid]))  # retired SIDs stay used: never handed to another item
            kept[row[S.item_id]] = (row[S.sid], old_cat.get(row[S.item_id]))
    sids = []
    for row in catalog:
        prev = kept.get(row[CAT.item_id])
        if prev is not None and prev[1] == row[CAT.text_hash]:
            sids.append(prev[0])
            continue
        h = int(row[CAT.text_hash], 16)
        base, digit = [h % 16, (h >> 8) % 16], 0
        while tuple(base + [digit]) in used:
            digit += 1
        used.add(tuple(base + [digit]))
        sids.append(base + [digit])
    table = pa.table(
        {S.item_id: [r[CAT.item_id] for r in catalog], S.sid: pa.array(sids, pa.list_(pa.int32()))}
    )
    _write(table, ctx.layout.sids)
    return StageResult(counts={"sids": table.num_rows}, outputs={"sids": str(ctx.layout.sids)})


def fake_sft(ctx: StageContext) -> StageResult:
    _enter(ctx, "sft")
    from datasets import Dataset, DatasetDict

    sids = pq.read_table(str(ctx.layout.sids)).to_pylist()
    rows = [{"item_id": r[S.item_id], "output": "".join(f"<{d}>" for d in r[S.sid])} for r in sids]
    DatasetDict({"train": Dataset.from_list(rows[::2]), "test": Dataset.from_list(rows[1::2])}).save_to_disk(
        str(ctx.layout.hf_dataset)
    )
    return StageResult(counts={"records": len(rows)})


def fake_check_failing(ctx: StageContext) -> StageResult:
    _enter(ctx, "check")
    raise GateFailed("sids.collision_rate 0.4 > max 0.1")


FAKE_STAGES = [
    ("ingest", fake_ingest),
    ("codebook", fake_codebook),
    ("sids", fake_sids),
    ("sft", fake_sft),
]
FAKE_STAGE_NAMES = [name for name, _ in FAKE_STAGES]


def reset() -> None:
    CALLS.clear()
    FAIL_AT.clear()
    SLOW.clear()
    STARTED_FLAG.clear()
    GATED.clear()


# ------------------------------------------------------------ gate / report stand-ins (machinery only)

GATED: list[str] = []


def recording_gate_modules() -> dict[str, object]:
    """Modules standing in for jobs.check.gates / jobs.check.report while the fakes run.

    The real gates check the real stages' outputs, which these fake stages do not write; here only
    the pipeline's wiring is under test (every stage gated once, findings recorded, report written).
    """
    import types

    def gate_stage(stage, ctx, result):
        GATED.append(stage)
        return {"passed": True, "checked": stage}

    def write_report(ctx, results):
        path = ctx.layout.report / "report.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(sorted(results)))
        return path

    gates, report = types.ModuleType("jobs.check.gates"), types.ModuleType("jobs.check.report")
    gates.gate_stage, report.write_report = gate_stage, write_report
    return {"jobs.check.gates": gates, "jobs.check.report": report}

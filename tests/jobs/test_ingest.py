"""Ingest: every format, normalisation, dedup, ordering, and exact quarantine accounting on dirty data."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs.common.io import read_table
from jobs.ingest.main import run as run_ingest
from jobs.ingest.readers import InputError
from jobs.ingest.records import Reason
from schemas.catalog import CATALOG
from schemas.catalog import C as CAT
from schemas.interactions import INTERACTIONS
from schemas.interactions import C as INT
from schemas.quarantine import QUARANTINE
from schemas.quarantine import C as Q

N_ITEMS = 200


def _load_slice(sample_catalog: Path, sample_interactions: Path, n_items: int = N_ITEMS):
    items = [json.loads(line) for line in sample_catalog.read_text().splitlines()[:n_items]]
    keep = {item["item_id"] for item in items}
    inters = [r for r in map(json.loads, sample_interactions.read_text().splitlines()) if r["item_id"] in keep]
    return items, inters


def _write_jsonl(rows, path: Path) -> Path:
    with open(path, "wb") as fh:
        for row in rows:
            fh.write((row if isinstance(row, bytes) else json.dumps(row).encode()) + b"\n")
    return path


@pytest.fixture(scope="module")
def clean_slice(sample_catalog, sample_interactions):
    return _load_slice(sample_catalog, sample_interactions)


def _dirty_copy(items, inters, tmp: Path):
    """The clean slice plus planted faults; returns paths and the expected quarantine counts per reason."""
    expected = {"catalog": Counter(), "interactions": Counter()}
    cat_rows: list = [dict(i) for i in items]

    def plant(source, reason, rows, target):
        target.extend(rows)
        expected[source][str(reason)] += len(rows)

    plant("catalog", Reason.MISSING_ITEM_ID, [{"title": "no id"}, {"item_id": None, "title": "null id"}, {"item_id": "  ", "title": "blank"}], cat_rows)
    plant("catalog", Reason.NO_USABLE_TEXT, [{"item_id": "nt1", "title": "  ", "brand": "Acme"}, {"item_id": "nt2", "description": "<br/>&nbsp;"}], cat_rows)
    plant("catalog", Reason.WRONG_TYPE, [{"item_id": "wt1", "title": "x", "price": "cheap"}, {"item_id": "wt2", "title": "y", "category_path": 5}, {"item_id": "wt3", "title": ["a"]}], cat_rows)
    plant("catalog", Reason.UNPARSABLE_TIMESTAMP, [{"item_id": "ts1", "title": "z", "updated_at": "yesterday"}], cat_rows)
    plant("catalog", Reason.MALFORMED_RECORD, [b'{"item_id": "m1", "title": ', b'["not", "an", "object"]'], cat_rows)
    # Three duplicated ids: the newer copy wins, the older one is quarantined.
    for item in items[:3]:
        newer = dict(item, title=item["title"] + " (v2)", updated_at="2026-01-02T00:00:00Z")
        older = dict(item, updated_at="2025-01-01T00:00:00Z")
        cat_rows.remove(item)
        cat_rows.extend([older, newer])
        expected["catalog"][str(Reason.DUPLICATE_ITEM_ID)] += 1
    # Invalid UTF-8 inside an otherwise valid row: repaired, not quarantined.
    cat_rows.append(b'{"item_id": "utf", "title": "Caf\xe9 \xff mug"}')

    inter_rows: list = [dict(r) for r in inters]
    plant("interactions", Reason.MISSING_USER_ID, [{"item_id": items[5]["item_id"]}, {"user_id": "", "item_id": items[5]["item_id"]}], inter_rows)
    plant("interactions", Reason.MISSING_ITEM_ID, [{"user_id": "u1"}], inter_rows)
    plant("interactions", Reason.UNKNOWN_ITEM, [{"user_id": "u1", "item_id": f"ghost{i}"} for i in range(4)] + [{"user_id": "u2", "item_id": "nt1"}], inter_rows)
    plant("interactions", Reason.UNPARSABLE_TIMESTAMP, [{"user_id": "u3", "item_id": items[6]["item_id"], "timestamp": "13/45/2020"}], inter_rows)
    plant("interactions", Reason.MALFORMED_RECORD, [b"not json at all"], inter_rows)

    cat_path = _write_jsonl(cat_rows, tmp / "catalog.jsonl")
    inter_path = _write_jsonl(inter_rows, tmp / "interactions.jsonl")
    return cat_path, inter_path, len(cat_rows), len(inter_rows), expected


def _quarantine_counts(spark, ctx):
    rows = read_table(spark, ctx.layout.quarantine / "ingest", QUARANTINE).groupBy(Q.source, Q.reason).count().collect()
    out = {"catalog": Counter(), "interactions": Counter()}
    for r in rows:
        out[r[Q.source]][r[Q.reason]] = r["count"]
    return out


def test_dirty_sample_exact_quarantine_counts_and_no_row_lost(spark, make_context, clean_slice, tmp_path):
    items, inters = clean_slice
    cat_path, inter_path, n_cat, n_inter, expected = _dirty_copy(items, inters, tmp_path)
    ctx = make_context(cat_path, inter_path)
    result = run_ingest(ctx)

    got = _quarantine_counts(spark, ctx)
    assert got == expected
    catalog = read_table(spark, ctx.layout.catalog, CATALOG)
    interactions = read_table(spark, ctx.layout.interactions, INTERACTIONS)
    assert result.counts["catalog_rows_in"] == n_cat
    assert result.counts["interaction_rows_in"] == n_inter
    assert catalog.count() + sum(got["catalog"].values()) == n_cat
    assert interactions.count() + sum(got["interactions"].values()) == n_inter
    assert result.metrics["quarantine_reasons"]["catalog"] == dict(expected["catalog"])

    by_id = {r[CAT.item_id]: r for r in catalog.collect()}
    assert len(by_id) == catalog.count(), "item ids must be unique after ingest"
    for item in items[:3]:  # newest duplicate kept
        assert by_id[item["item_id"]][CAT.title].endswith("(v2)")
    assert by_id["utf"][CAT.title] == "Caf mug"  # undecodable bytes dropped, text kept


def test_sample_slice_is_clean_and_ordered(spark, make_context, clean_slice, tmp_path):
    items, inters = clean_slice
    ctx = make_context(_write_jsonl(items, tmp_path / "c.jsonl"), _write_jsonl(inters, tmp_path / "i.jsonl"))
    result = run_ingest(ctx)
    assert result.counts["items_out"] == len(items)
    assert result.counts["interactions_out"] == len(inters)
    assert result.metrics["ordering"] == "log order"

    # Without timestamps the sequence index is the order of the log, per user.
    expected = {}
    for row in inters:
        expected.setdefault(row["user_id"], []).append(row["item_id"])
    got = {}
    for r in read_table(spark, ctx.layout.interactions, INTERACTIONS).orderBy(INT.user_id, INT.seq_index).collect():
        got.setdefault(r[INT.user_id], []).append((r[INT.seq_index], r[INT.item_id]))
    for user, seq in got.items():
        assert [s for s, _ in seq] == list(range(len(seq)))
        assert [i for _, i in seq] == expected[user]

    # Category names with ", " inside survive as one level.
    paths = {tuple(r[CAT.category_path] or ()) for r in read_table(spark, ctx.layout.catalog, CATALOG).collect()}
    assert any("Tapes, Adhesives & Sealants" in p for p in paths)


def test_timestamps_order_the_history(spark, make_context, tmp_path):
    cat = _write_jsonl([{"item_id": str(i), "title": f"item {i}"} for i in range(3)], tmp_path / "c.jsonl")
    inter = _write_jsonl(
        [
            {"user_id": "u", "item_id": "0", "timestamp": "2024-03-01T00:00:00Z"},
            {"user_id": "u", "item_id": "1", "timestamp": 1704067200},  # 2024-01-01, epoch seconds
            {"user_id": "u", "item_id": "2", "timestamp": 1706745600000},  # 2024-02-01, epoch ms
        ],
        tmp_path / "i.jsonl",
    )
    ctx = make_context(cat, inter)
    assert run_ingest(ctx).metrics["ordering"] == "timestamp"
    rows = read_table(spark, ctx.layout.interactions, INTERACTIONS).orderBy(INT.seq_index).collect()
    assert [r[INT.item_id] for r in rows] == ["1", "2", "0"]


def _as_parquet(items, inters, tmp: Path):
    from schemas.catalog import RAW_CATALOG
    from schemas.interactions import RAW_INTERACTIONS

    cat = pa.Table.from_pylist([{k: v for k, v in i.items()} for i in items], schema=RAW_CATALOG)
    inter = pa.Table.from_pylist(inters, schema=RAW_INTERACTIONS)
    pq.write_table(cat, tmp / "catalog.parquet")
    pq.write_table(inter, tmp / "interactions.parquet")
    return tmp / "catalog.parquet", tmp / "interactions.parquet"


def _as_csv(items, inters, tmp: Path):
    with open(tmp / "catalog.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["item_id", "title", "description", "brand", "category_path"])
        w.writeheader()
        for i in items:
            w.writerow({**{k: i.get(k) for k in w.fieldnames}, "category_path": " > ".join(i.get("category_path") or [])})
    with open(tmp / "interactions.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["user_id", "item_id", "event_type"])
        w.writeheader()
        w.writerows(inters)
    return tmp / "catalog.csv", tmp / "interactions.csv"


def _as_lcrec(items, inters, tmp: Path):
    item_json = {i["item_id"]: {"title": i.get("title", ""), "description": i.get("description", ""), "brand": i.get("brand", ""),
                                "categories": ",".join(i.get("category_path") or [])} for i in items}
    users: dict = {}
    for r in inters:
        users.setdefault(r["user_id"], []).append(int(r["item_id"]))
    (tmp / "S.item.json").write_text(json.dumps(item_json))
    (tmp / "S.inter.json").write_text(json.dumps(users))
    return tmp / "S.item.json", tmp / "S.inter.json"


SMALL = 60


def _small_slice(clean_slice):
    return clean_slice[0][:SMALL], [r for r in clean_slice[1] if int(r["item_id"]) < SMALL]


@pytest.fixture(scope="module")
def jsonl_reference(spark, make_context, clean_slice, tmp_path_factory):
    """Curated tables of a small slice ingested from JSONL: what every other format must reproduce."""
    items, inters = _small_slice(clean_slice)
    tmp = tmp_path_factory.mktemp("ref")
    ref = make_context(_write_jsonl(items, tmp / "c.jsonl"), _write_jsonl(inters, tmp / "i.jsonl"))
    run_ingest(ref)
    return ref


CURATED_COLUMNS = [CAT.item_id, CAT.title, CAT.brand, CAT.description, CAT.category_path, CAT.text_hash]
HISTORY_COLUMNS = [INT.user_id, INT.item_id, INT.seq_index]


def _rows(spark, path, schema, cols):
    return [tuple(r) for r in read_table(spark, path, schema).select(cols).orderBy(*cols[:1]).collect()]


@pytest.mark.parametrize("writer", [_as_parquet, _as_csv, _as_lcrec], ids=["parquet", "csv", "lcrec"])
def test_every_format_gives_the_same_curated_tables(spark, make_context, clean_slice, jsonl_reference, tmp_path, writer):
    items, inters = _small_slice(clean_slice)
    cat_path, inter_path = writer(items, inters, tmp_path)
    ctx = make_context(cat_path, inter_path, overrides={"ingest": {"category_separator": "lcrec"}} if writer is _as_lcrec else None)
    run_ingest(ctx)
    ref = jsonl_reference.layout
    assert _rows(spark, ctx.layout.catalog, CATALOG, CURATED_COLUMNS) == _rows(spark, ref.catalog, CATALOG, CURATED_COLUMNS)
    got = sorted(_rows(spark, ctx.layout.interactions, INTERACTIONS, HISTORY_COLUMNS))
    assert got == sorted(_rows(spark, ref.interactions, INTERACTIONS, HISTORY_COLUMNS))
    assert len(got) == len(inters)


def test_ingest_is_byte_identical_on_rerun(make_context, clean_slice, tmp_path):
    items, inters = clean_slice
    cat, inter = _write_jsonl(items, tmp_path / "c.jsonl"), _write_jsonl(inters, tmp_path / "i.jsonl")
    first, second = make_context(cat, inter), make_context(cat, inter)
    run_ingest(first)
    run_ingest(second)
    for table in ("catalog", "interactions", "quarantine/ingest"):
        a = sorted(p.relative_to(first.layout.run_dir / table) for p in (first.layout.run_dir / table).rglob("*") if p.is_file())
        b = sorted(p.relative_to(second.layout.run_dir / table) for p in (second.layout.run_dir / table).rglob("*") if p.is_file())
        assert a == b and a, table
        for rel in a:
            assert (first.layout.run_dir / table / rel).read_bytes() == (second.layout.run_dir / table / rel).read_bytes()


def test_missing_input_fails_before_spark_work(make_context, tmp_path):
    ctx = make_context(tmp_path / "nope.jsonl", tmp_path / "nope2.jsonl")
    with pytest.raises(InputError, match="input not found"):
        run_ingest(ctx)
    (tmp_path / "weird.bin").write_text("x")
    with pytest.raises(InputError, match="cannot tell the format"):
        run_ingest(make_context(tmp_path / "weird.bin", tmp_path / "weird.bin"))

"""Inputs of the sft stage built from a slice of the bundled sample: real catalog text and real user
sequences, SIDs with made-up codes (level 1 from the item's category, level 2 from its brand, level 3
a counter, so prefixes group like a real codebook), a glossary over them, and planted bad rows."""

from __future__ import annotations

import hashlib
import json
from collections import Counter, defaultdict
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs.common.layout import RunLayout
from jobs.common.pipeline_config import PipelineConfig
from jobs.common.stage import Inputs, StageContext
from schemas.catalog import CATALOG
from schemas.catalog import C as CAT
from schemas.interactions import INTERACTIONS
from schemas.interactions import C as INT
from schemas.sids import SIDS
from schemas.sids import C as S

N_USERS = 150
CODEBOOK = "cb-test-0001"
UNKNOWN_ITEM = "unknown-item-1"
ORPHAN_SID_ITEM = "orphan-sid-item"


def _h(text: str, mod: int) -> int:
    return int(hashlib.sha256(text.encode()).hexdigest(), 16) % mod


def load_slice(sample_catalog: Path, sample_interactions: Path, n_users: int = N_USERS):
    users: dict[str, list[str]] = defaultdict(list)
    with open(sample_interactions) as fh:
        for line in fh:
            row = json.loads(line)
            if len(users) >= n_users and row["user_id"] not in users:
                break
            users[row["user_id"]].append(row["item_id"])
    wanted = {i for items in users.values() for i in items}
    catalog = {}
    with open(sample_catalog) as fh:
        for line in fh:
            row = json.loads(line)
            if row["item_id"] in wanted:
                catalog[row["item_id"]] = row
    return catalog, dict(users)


def make_sids(catalog: dict[str, dict]) -> list[dict]:
    counters: Counter = Counter()
    rows = []
    for item_id in sorted(catalog, key=int):
        item = catalog[item_id]
        leaf = (item.get("category_path") or ["none"])[-1]
        a, b = _h(leaf, 16), _h(item.get("brand") or "none", 8)
        c = counters[(a, b)]
        counters[(a, b)] += 1
        rows.append({S.item_id: item_id, S.codes: [a, b, c], S.sid: [a, b, c], S.sid_tokens: f"<a_{a}><b_{b}><c_{c}>",
                     S.item_token: None, S.resolution: None, S.codebook_id: CODEBOOK})
    return rows


def make_glossary(catalog: dict[str, dict], sid_rows: list[dict]) -> dict:
    by_prefix: dict[str, list[dict]] = defaultdict(list)
    for row in sid_rows:
        by_prefix[row[S.sid_tokens].split(">")[0] + ">"].append(catalog[row[S.item_id]])
    level1 = {}
    for prefix, items in sorted(by_prefix.items()):
        cats = Counter((it.get("category_path") or [""])[-1] for it in items)
        words = Counter(w for it in items for w in it["title"].lower().split() if w.isalpha() and len(w) > 3)
        level1[prefix] = {"level": 1, "item_count": len(items), "category_path": [cats.most_common(1)[0][0]],
                          "top_terms": [w for w, _ in words.most_common(5)], "example_titles": [it["title"][:40] for it in items[:2]]}
    return {"format": 1, "items": len(sid_rows), "prefix_levels": [1], "prefixes": level1}


def write_run(run_dir: Path, catalog: dict, users: dict, *, timestamps: bool = False, queries: bool = False, plant_bad: bool = True) -> RunLayout:
    layout = RunLayout(run_dir)
    catalog = {k: dict(v) for k, v in catalog.items()}
    users = {u: list(v) for u, v in users.items()}
    sid_rows = make_sids(catalog)
    if plant_bad:
        ids = sorted(catalog, key=int)
        catalog[ids[0]]["title"] = "   "  # empty title
        sid_rows = [r for r in sid_rows if r[S.item_id] != ids[1]]  # item without a SID
        sid_rows.append({**sid_rows[-1], S.item_id: ORPHAN_SID_ITEM, S.sid_tokens: "<a_99><b_99><c_99>"})  # SID without item
        twin = next(r for r in sid_rows if r[S.item_id] == ids[3])
        for r in sid_rows:
            if r[S.item_id] == ids[2]:
                r[S.sid_tokens] = twin[S.sid_tokens]  # two items, one SID: ambiguous
        first_user = sorted(users, key=int)[0]
        users[first_user].append(UNKNOWN_ITEM)  # SID missing from the table: item not in catalog either
        users[first_user].append(users[first_user][-2])  # a repeat
        users["single-user"] = [ids[10]]  # one interaction
    base = datetime(2024, 1, 1, tzinfo=timezone.utc)
    cat_rows = []
    for item_id in sorted(catalog, key=int):
        item = catalog[item_id]
        cat_rows.append({CAT.item_id: item_id, CAT.title: item["title"], CAT.description: item.get("description"),
                         CAT.brand: item.get("brand"), CAT.category_path: item.get("category_path"),
                         CAT.price: float(5 + _h(item_id, 150)), CAT.attributes: None, CAT.updated_at: None,
                         CAT.text_hash: hashlib.sha256(item["title"].encode()).hexdigest()[:16]})
    int_rows = []
    for user, items in sorted(users.items()):
        start = _h(user, 60)
        for seq, item_id in enumerate(items):
            int_rows.append({INT.user_id: user, INT.item_id: item_id, INT.event_type: "review",
                             INT.timestamp: base + timedelta(days=start + 3 * seq) if timestamps else None,
                             INT.query: (catalog.get(item_id, {}).get("category_path") or ["misc"])[-1].lower() if queries and seq % 2 == 0 else None,
                             INT.session_id: f"{user}-s{seq // 3}" if queries else None, INT.seq_index: seq})
    for path, rows, schema in ((layout.catalog, cat_rows, CATALOG), (layout.interactions, int_rows, INTERACTIONS), (layout.sids, sid_rows, SIDS)):
        path.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(rows, schema=schema), path / "part-00000.parquet")
    layout.sid_artifacts.mkdir(parents=True, exist_ok=True)
    (layout.sid_artifacts / "glossary.json").write_text(json.dumps(make_glossary(catalog, [r for r in sid_rows if r[S.item_id] in catalog])))
    return layout


def stage_context(spark, layout: RunLayout, overrides: dict | None = None, seed: int = 17) -> StageContext:
    config = PipelineConfig.load(overrides={"seed": seed, "sft": overrides or {}})
    return StageContext(spark=spark, layout=layout, config=config, inputs=Inputs("", ""), snapshot_id="test",
                        cache_dir=layout.run_dir / "_cache")


@pytest.fixture(scope="session")
def sample_slice(sample_catalog, sample_interactions):
    return load_slice(sample_catalog, sample_interactions)


@pytest.fixture(scope="session")
def loo_run(spark, sample_slice, tmp_path_factory):
    """The stage run once on the leave-one-out slice (no timestamps, no queries, bad rows planted)."""
    from jobs.sft.main import run

    layout = write_run(tmp_path_factory.mktemp("sft_loo"), *sample_slice)
    result = run(stage_context(spark, layout))
    return layout, result
